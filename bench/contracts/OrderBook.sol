// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A straightforward on-chain limit order book for one market: the Solidity reference
/// that `blixt stress -w orderbook-sol` runs on any EVM node (anvil, Blixt's EVM
/// path), to compare with Blixt's exchange precompile (`-w orders`).
///
/// What it does, in the usual way of on-chain books:
/// * internal balances: `deposit(BASE, amount)` takes ETH as msg.value (like WETH on
///   Blixt's exchange); `deposit(QUOTE, amount)` credits a devnet quote token freely
///   (like Blixt's devnet faucet for USDC), so no ERC-20 transfer rides on the flow;
/// * price levels per side in a sorted doubly linked list (best first; a new level
///   is inserted by walking from the best price), each level a FIFO queue of orders
///   (doubly linked, so a cancel unlinks in O(1));
/// * a limit buy/sell holds what it may spend, matches the opposite side at the
///   makers' prices (price-time priority), then rests the remainder (GTC) or
///   releases it (IOC);
/// * cancel by order id or by the owner's client order id.
/// Units as Blixt's exchange: quantity in base units (a whole number of lots),
/// price in quote units per lot on the tick grid, notional = price * quantity / lot.
/// No fees, no self-trade prevention (a self-match just moves the owner's own money).
contract OrderBook {
    uint256 public constant QUOTE = 0; // asset ids as on Blixt's devnet: 0 = USDC
    uint256 public constant BASE = 1; //                                  1 = WETH (ETH)
    uint8 public constant BUY = 0;
    uint8 public constant SELL = 1;
    uint8 public constant GTC = 0;
    uint8 public constant IOC = 1;

    uint256 public immutable lotSize;
    uint256 public immutable tickSize;

    struct Order {
        address owner; // slot 1: owner, side, price
        uint8 side;
        uint64 price;
        uint128 remaining; // slot 2: remaining, queue links
        uint64 prev;
        uint64 next;
    }

    struct Level {
        uint64 head; // first order in time priority
        uint64 tail;
        uint64 better; // neighbouring price levels of the same side
        uint64 worse;
    }

    uint64 public nextOrderId = 1;
    uint64[2] public best; // best bid (highest), best ask (lowest); 0 = empty side
    mapping(uint256 => Order) public orders;
    mapping(uint256 => Level)[2] public levels; // side => price => level
    mapping(address => mapping(uint256 => uint256)) public balanceOf; // available, not held
    mapping(address => mapping(uint256 => uint256)) public orderIdOf; // owner => client id => order id

    event Deposited(address indexed account, uint256 indexed asset, uint256 amount);
    event OrderPlaced(uint256 indexed orderId, address indexed owner, uint8 side, uint256 price, uint256 quantity, uint256 clientOrderId);
    event Fill(uint256 indexed makerOrderId, uint256 indexed takerOrderId, address indexed maker, uint256 price, uint256 quantity);
    event OrderCancelled(uint256 indexed orderId, address indexed owner, uint256 remaining);

    error InvalidOrder(string reason);
    error InsufficientBalance(uint256 asset, uint256 needed, uint256 available);
    error UnknownOrder();

    constructor(uint256 lotSize_, uint256 tickSize_) {
        lotSize = lotSize_;
        tickSize = tickSize_;
    }

    // -- money ----------------------------------------------------------------

    function deposit(uint256 asset, uint256 amount) external payable {
        if (asset == BASE) {
            if (msg.value != amount) revert InvalidOrder("msg.value must equal amount");
        } else if (asset != QUOTE || msg.value != 0) {
            revert InvalidOrder("unknown asset or value sent");
        }
        balanceOf[msg.sender][asset] += amount;
        emit Deposited(msg.sender, asset, amount);
    }

    function withdraw(uint256 asset, uint256 amount) external {
        _debit(msg.sender, asset, amount);
        if (asset == BASE) {
            (bool ok, ) = msg.sender.call{value: amount}("");
            require(ok, "ETH transfer failed");
        }
    }

    // -- orders ---------------------------------------------------------------

    function placeLimit(uint8 side, uint256 price, uint256 quantity) external returns (uint256, uint256, uint256) {
        return _place(side, price, quantity, GTC, 0);
    }

    function placeOrder(uint8 side, uint256 price, uint256 quantity, uint8 timeInForce, uint256 clientOrderId)
        external
        returns (uint256 orderId, uint256 filled, uint256 remaining)
    {
        return _place(side, price, quantity, timeInForce, clientOrderId);
    }

    function cancelOrder(uint256 orderId) external returns (uint256 remaining) {
        return _cancel(orderId);
    }

    function cancelByClientId(uint256 clientOrderId) external returns (uint256 orderId, uint256 remaining) {
        orderId = orderIdOf[msg.sender][clientOrderId];
        if (orderId == 0) revert UnknownOrder();
        remaining = _cancel(orderId);
    }

    // -- views ----------------------------------------------------------------

    function bestBidAsk() external view returns (uint256 bid, uint256 ask) {
        return (best[BUY], best[SELL]);
    }

    function getOrder(uint256 orderId) external view returns (address owner, uint8 side, uint256 price, uint256 remaining) {
        Order storage o = orders[orderId];
        return (o.owner, o.side, o.price, o.remaining);
    }

    /// Quantity resting at each of the first `count` price levels of `side`, best first.
    function depth(uint8 side, uint256 count) external view returns (uint256[] memory prices, uint256[] memory quantities) {
        prices = new uint256[](count);
        quantities = new uint256[](count);
        uint256 price = best[side];
        uint256 n;
        while (price != 0 && n < count) {
            Level storage level = levels[side][price];
            uint256 total;
            for (uint256 id = level.head; id != 0; id = orders[id].next) total += orders[id].remaining;
            prices[n] = price;
            quantities[n] = total;
            n++;
            price = level.worse;
        }
        assembly {
            mstore(prices, n)
            mstore(quantities, n)
        }
    }

    // -- internals ------------------------------------------------------------

    function _place(uint8 side, uint256 price, uint256 quantity, uint8 timeInForce, uint256 clientOrderId)
        internal
        returns (uint256 orderId, uint256 filled, uint256 remaining)
    {
        if (side > SELL || timeInForce > IOC) revert InvalidOrder("side or time in force");
        if (price == 0 || price % tickSize != 0 || price > type(uint64).max) revert InvalidOrder("price off the tick grid");
        if (quantity == 0 || quantity % lotSize != 0 || quantity > type(uint128).max) revert InvalidOrder("quantity off the lot grid");
        if (clientOrderId != 0) {
            uint256 previous = orderIdOf[msg.sender][clientOrderId];
            // A stale entry (its order filled) may be reused; a live one may not.
            if (previous != 0 && orders[previous].owner != address(0)) revert InvalidOrder("duplicate client order id");
        }
        // Hold what the order may spend at its own limit price.
        if (side == BUY) _debit(msg.sender, QUOTE, price * quantity / lotSize);
        else _debit(msg.sender, BASE, quantity);

        orderId = nextOrderId++;
        emit OrderPlaced(orderId, msg.sender, side, price, quantity, clientOrderId);
        remaining = _match(orderId, side, price, quantity);
        filled = quantity - remaining;
        if (remaining == 0) return (orderId, filled, 0);
        if (timeInForce == IOC) {
            _release(msg.sender, side, price, remaining);
            emit OrderCancelled(orderId, msg.sender, remaining);
            return (orderId, filled, 0);
        }
        _rest(orderId, side, uint64(price), uint128(remaining));
        if (clientOrderId != 0) orderIdOf[msg.sender][clientOrderId] = orderId;
    }

    /// Fill `quantity` of taker order `orderId` against the opposite side at the
    /// makers' prices while they are within `price`; returns what is left.
    function _match(uint256 orderId, uint8 side, uint256 price, uint256 quantity) internal returns (uint256 remaining) {
        remaining = quantity;
        uint8 opposite = 1 - side;
        uint256 makerPrice = best[opposite];
        while (remaining != 0 && makerPrice != 0 && (side == BUY ? makerPrice <= price : makerPrice >= price)) {
            uint256 makerId = levels[opposite][makerPrice].head;
            Order storage maker = orders[makerId];
            uint256 fill = remaining < maker.remaining ? remaining : maker.remaining;
            _settle(side, price, makerPrice, maker.owner, fill);
            emit Fill(makerId, orderId, maker.owner, makerPrice, fill);
            remaining -= fill;
            if (fill == maker.remaining) {
                _unlink(opposite, makerPrice, maker);
                delete orders[makerId];
                makerPrice = best[opposite];
            } else {
                maker.remaining = uint128(maker.remaining - fill);
            }
        }
    }

    /// Money of one fill at the maker's price: the taker held at its own limit price
    /// (a buyer gets the difference back), the maker held at the maker price.
    function _settle(uint8 side, uint256 price, uint256 makerPrice, address maker, uint256 fill) internal {
        uint256 notional = makerPrice * fill / lotSize;
        if (side == BUY) {
            balanceOf[msg.sender][BASE] += fill;
            uint256 refund = price * fill / lotSize - notional;
            if (refund != 0) balanceOf[msg.sender][QUOTE] += refund;
            balanceOf[maker][QUOTE] += notional;
        } else {
            balanceOf[msg.sender][QUOTE] += notional;
            balanceOf[maker][BASE] += fill;
        }
    }

    function _rest(uint256 orderId, uint8 side, uint64 price, uint128 quantity) internal {
        mapping(uint256 => Level) storage book = levels[side];
        Level storage level = book[price];
        if (level.head == 0) {
            // New price level: walk from the best price to the first worse one.
            uint64 better = 0;
            uint64 worse = best[side];
            while (worse != 0 && (side == BUY ? worse > price : worse < price)) {
                better = worse;
                worse = book[worse].worse;
            }
            level.better = better;
            level.worse = worse;
            if (better == 0) best[side] = price;
            else book[better].worse = price;
            if (worse != 0) book[worse].better = price;
            level.head = uint64(orderId);
        } else {
            orders[level.tail].next = uint64(orderId);
        }
        orders[orderId] = Order(msg.sender, side, price, quantity, level.tail, 0);
        level.tail = uint64(orderId);
    }

    function _cancel(uint256 orderId) internal returns (uint256 remaining) {
        Order storage o = orders[orderId];
        if (o.owner != msg.sender) revert UnknownOrder();
        remaining = o.remaining;
        _release(msg.sender, o.side, o.price, remaining);
        _unlink(o.side, o.price, o);
        delete orders[orderId];
        emit OrderCancelled(orderId, msg.sender, remaining);
    }

    /// Take `o` out of its level's queue; drop the level when it empties.
    function _unlink(uint8 side, uint256 price, Order storage o) internal {
        mapping(uint256 => Level) storage book = levels[side];
        Level storage level = book[price];
        if (o.prev != 0) orders[o.prev].next = o.next;
        else level.head = o.next;
        if (o.next != 0) orders[o.next].prev = o.prev;
        else level.tail = o.prev;
        if (level.head == 0) {
            uint64 better = level.better;
            uint64 worse = level.worse;
            if (better == 0) best[side] = worse;
            else book[better].worse = worse;
            if (worse != 0) book[worse].better = better;
            delete book[price];
        }
    }

    function _release(address owner, uint8 side, uint256 price, uint256 quantity) internal {
        if (side == BUY) balanceOf[owner][QUOTE] += price * quantity / lotSize;
        else balanceOf[owner][BASE] += quantity;
    }

    function _debit(address owner, uint256 asset, uint256 amount) internal {
        uint256 available = balanceOf[owner][asset];
        if (available < amount) revert InsufficientBalance(asset, amount, available);
        balanceOf[owner][asset] = available - amount;
    }
}

"""The engine: routes commands, owns the state, its undo log and its digest.

``Engine.apply(command, ctx) -> (result, events)``. A handler first checks
everything that can reject the command (raising :class:`ExchangeError` with the
state untouched), then mutates. Mutations go through helpers that append undo
entries to ``_log`` while a checkpoint is open and add touched objects to
``_dirty`` for the digest.

Undo entries are ``(function, obj, *args)``; ``obj`` is always the Account,
Order or Market whose state the entry restores, so the undo runner can mark it
dirty. Counters and per-asset totals are snapshotted at each checkpoint instead
of journalled per change.
"""

from __future__ import annotations

import hashlib
import struct
from ast import literal_eval
from dataclasses import dataclass

from sortedcontainers import SortedList

from .accounts import Account, Market
from .book import Order
from .clearing import SpotClearing, _forget_fill, _restore_account, _restore_order_money
from .perps import PerpClearing
from .lending import LendingClearing
from .liquidation import Solvency
from .margin import AutoBorrowing
from .commands import RepayLoan  # lending (exchange/lending.py)
from .commands import Liquidate  # exchange/liquidation.py
from .commands import (
    BalanceResult, Batch, BatchResult, CancelAll, CancelAllResult, CancelByClientId,
    CancelOrder, CancelResult, Deposit, ExpireOrders, ExpireResult, ModifyOrder,
    ModifyResult, OrderResult, PlaceOrder, SetMarketStatus, SetOraclePrice, StatusResult, Tick,
    TickResult, Withdraw,
)
from .config import ExchangeConfig
from .errors import ExchangeError, Reason
from .events import (
    Deposited, Fill, MarketStatusChanged, OrderAccepted, OrderCancelled, OrderModified, Withdrawn,
)
from .types import (
    FEE_SCALE, CancelReason, Context, MarketKind, MarketStatus, OrderStatus, OrderType,
    SelfTradePrevention, Side, TimeInForce,
)

_ACTIVE = MarketStatus.ACTIVE
_HALTED = MarketStatus.HALTED
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_POST_ONLY = TimeInForce.POST_ONLY
_SPOT = MarketKind.SPOT
_PERP = MarketKind.PERP
_MARKET = OrderType.MARKET
_BUY = Side.BUY
_RESTING = OrderStatus.RESTING
# Enum members read through their class cost ~4x a module global (measured:
# ~70 ns for MarketKind.PERP): the hot paths read these.
_USER = CancelReason.USER
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_SELF_TRADE = CancelReason.SELF_TRADE
_FILLED = OrderStatus.FILLED
_CANCELLED = OrderStatus.CANCELLED
# Lookups that both validate a field and normalise an int from the ABI into
# its enum member, so the hot path can compare members by identity.
_SIDE = {s.value: s for s in Side}
_TIF = {t.value: t for t in TimeInForce}
_STP = {s.value: s for s in SelfTradePrevention}
_ORDER_TYPE = {t.value: t for t in OrderType}

_MOD = 1 << 256
# An order's digest encoding when all its fields fit: address, then 13 signed
# 64-bit fields (id, market, side, price, quantity, remaining, reserved,
# fee_basis, fees_paid, client_order_id, stp, expires_at, seq).
_ORDER_ENCODING = struct.Struct("<c20s13q")  # the tag b"O", then the fields
_FORMAT = b"blixt-exchange-state/1\n"


class Engine:
    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        assets = config.assets
        self._asset_index = {a.id: i for i, a in enumerate(assets)}
        self._asset_ids = [a.id for a in assets]
        self._n_assets = len(assets)
        self._account_format = b"a%b" + b",%d" * (2 * len(assets))
        self._dirty: set = set()
        # The undo log is always recording (one code path, always exercised);
        # it is emptied whenever no checkpoint is open, so it only ever holds
        # the entries of the open checkpoints (plus the command in flight).
        self._log: list = []
        self._checkpoints: list = []  # (token, log position, next order id, next seq, next trade id)
        self._next_checkpoint = 1
        self._markets: dict[int, Market] = {}
        spot = SpotClearing(self)
        perps = PerpClearing(self)  # reached as the property self._perps (see there)
        self._clearing = {MarketKind.SPOT: spot, MarketKind.PERP: perps}  # part 2 registers PERP and LENDING
        self.lending = lending = LendingClearing(self)  # lending books, loans, their Tick hook, RepayLoan
        self._clearing[MarketKind.LENDING] = lending
        for mc in config.markets:
            m = Market(mc, self._asset_index[mc.base], self._asset_index[mc.quote], self._dirty)
            m.clearing = self._clearing.get(m.kind)  # None: the kind trades from part 2 on
            m.book.log = self._log
            self._markets[m.id] = m
            self._dirty.add(m)
        self._fills_kept = config.fills_kept_per_account
        self._max_open = config.max_open_orders_per_account
        self._max_batch = config.max_batch_actions
        self._accounts: dict[bytes, Account] = {}
        self._fee_account = self._account_for(config.fee_account)
        self._epoch = 0  # counts applied commands; objects remember the epoch of their last snapshot
        self._next_order_id = 1
        self._next_seq = 1
        self._next_trade_id = 1
        self._deposits = [0] * self._n_assets
        self._withdrawals = [0] * self._n_assets
        # Good-till-time orders by (expires_at, order id); order id -> Order.
        self._expiring = SortedList()
        self._expiring_orders: dict[int, Order] = {}
        self._digest_sum = 0
        # Per-block work of part 2, run by the Tick command in this order:
        # callables hook(ctx, events) (perp funding, loan expiry / roll-over).
        self._block_hooks: list = []
        # Part-2 state persisted by to_bytes: name -> object with state() (a
        # literal) and load_state(literal), restored after accounts and orders.
        self._parts: dict = {}
        self._handlers = {
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            CancelByClientId: self._cancel_by_client_id,
            CancelAll: self._cancel_all,
            ModifyOrder: self._modify,
            Batch: self._batch,
            ExpireOrders: self._expire,
            SetMarketStatus: self._set_market_status,
            Tick: self._tick,
            SetOraclePrice: perps.set_oracle_price,
            RepayLoan: lending.repay,
        }
        perps.setup()
        self._parts["perps"] = perps
        self._block_hooks.append(perps.on_block)
        lending.setup()
        self._parts["lending"] = lending
        margin = AutoBorrowing(self)  # automatic borrowing within margin (exchange/margin.py)
        self._parts["margin"] = margin
        self._block_hooks.append(margin.on_block)  # negative free balances into loans, before maturities
        self._block_hooks.append(lending.on_block)  # loans at maturity: repay or roll over
        solvency = Solvency(self)  # account index, de-risk policies, Liquidate, defaults (exchange/liquidation.py)
        self._parts["solvency"] = solvency
        solvency.setup()  # registers its commands and its Tick hook, after the others

    # Part-2 handles as properties, not instance attributes: CPython 3.11 keeps
    # an instance's attributes in the fast shared-key layout only while there
    # are fewer than 30 of them. Measured (bench/engine.py's stream, in-process
    # A/B, CPU time): a 30th instance attribute made every resting order and
    # cancel 4-6 % slower. Keep Engine.__init__ under 30 attributes.

    @property
    def _perps(self) -> PerpClearing:
        return self._clearing[_PERP]

    @property
    def _now(self) -> int:
        """Block time of the command being checked (set before a part-2 check)."""
        return self._clearing[_PERP].now

    @_now.setter
    def _now(self, timestamp: int) -> None:
        self._clearing[_PERP].now = timestamp

    # ==== the entry ========================================================

    def apply(self, command, ctx: Context):
        """Apply one command at block ``ctx``; returns ``(result, events)`` or
        raises ExchangeError with the state unchanged."""
        handler = self._handlers.get(command.__class__)
        if handler is None:
            raise ExchangeError(Reason.UNKNOWN_COMMAND, type(command).__name__)
        if not self._checkpoints:
            self._log.clear()
        self._epoch += 1
        result, events = handler(command, ctx)
        margin = self._parts["margin"]
        if margin.negative:
            # A realized loss, funding or a fee left some free balance below zero:
            # borrow it from the lending book now (exchange/margin.py); what the
            # book cannot lend stays owed, for the next Tick and liquidation.
            margin.on_block(ctx, events)
        return result, events

    # ==== checkpoints ======================================================

    def checkpoint(self) -> int:
        """Open a (nested) checkpoint; returns its token."""
        if not self._checkpoints and self._log:
            self._log.clear()
        token = self._next_checkpoint
        self._next_checkpoint = token + 1
        # Counters only grow, so a snapshot here is their undo entry.
        self._checkpoints.append((token, len(self._log), self._next_order_id, self._next_seq,
                                  self._next_trade_id))
        return token

    def revert(self, token: int) -> None:
        """Undo everything since ``token`` was taken; drops it and any later ones."""
        i = self._find_checkpoint(token)
        _, position, order_id, seq, trade_id = self._checkpoints[i]
        self._undo_to(position)
        self._next_order_id, self._next_seq, self._next_trade_id = order_id, seq, trade_id
        # An undo restores objects without touching their snapshot epochs, which
        # the portfolio caches validate against: drop them (lending.terms_by_id, margin_terms).
        self.lending._terms_cache.clear()
        self.lending._fixed_cache.clear()
        self._clearing[_PERP].resting_gen += 1  # every Account.resting and spot_resting too
        # A fresh epoch: whatever is changed next journals itself again. An
        # object the undone part snapped (an order, a watch, a market) may still
        # carry the current epoch, and a later change in this epoch - the next
        # action of a Batch after a nested revert - would otherwise go
        # unjournalled and survive the outer revert (found by review).
        self._epoch += 1
        del self._checkpoints[i:]
        if not self._checkpoints:
            self._log.clear()

    def commit(self, token: int) -> None:
        """Keep the changes since ``token``; an outer checkpoint can still undo them."""
        checkpoints = self._checkpoints
        if checkpoints and checkpoints[-1][0] == token:
            checkpoints.pop()  # the usual case: the innermost checkpoint
        else:
            del checkpoints[self._find_checkpoint(token):]
        if not checkpoints:
            self._log.clear()

    def _find_checkpoint(self, token: int) -> int:
        for i in range(len(self._checkpoints) - 1, -1, -1):
            if self._checkpoints[i][0] == token:
                return i
        raise ValueError(f"unknown checkpoint {token}")

    def _undo_to(self, position: int) -> None:
        log = self._log
        dirty_add = self._dirty.add
        # Undo functions journal nothing; entries they might append while
        # replaying are cut off with the rest.
        undo = log[position:]
        del log[position:]
        for i in range(len(undo) - 1, -1, -1):
            entry = undo[i]
            entry[0](*entry[1:])
            dirty_add(entry[1])
        del log[position:]

    # ==== digest and persistence ==========================================

    def state_digest(self) -> bytes:
        """32-byte commitment to the whole state (fills history excepted, a view).

        An additive multiset hash: the sum mod 2^256 of one blake2b term per
        live account, order and market, plus a hash of the counters. Commands
        only mark what they touch; the sum is brought up to date here, in time
        proportional to what changed since the last call.
        """
        total = self._digest_sum
        blake2b = hashlib.blake2b
        from_bytes = int.from_bytes
        account_format = self._account_format
        pack_order = _ORDER_ENCODING.pack
        struct_error = struct.error
        # Encodings are unambiguous: fixed fields, comma-separated decimal ints,
        # addresses always 20 bytes. The loop is inlined: it runs once per
        # object changed since the last digest.
        noted = []  # the objects other than orders, in the set's order: the solvency part's marks read them
        for obj in self._dirty:
            cls = obj.__class__
            if cls is Order:
                if obj.live:
                    try:
                        # Fixed-width binary when every field fits 64 bits (the
                        # usual case, ~4x cheaper to encode than decimal text);
                        # packed straight from the attributes, no tuple ...
                        encoding = pack_order(
                            b"O", obj.account.address, obj.id, obj.market, obj.side, obj.price, obj.quantity,
                            obj.remaining, obj.reserved, obj.fee_basis, obj.fees_paid,
                            obj.client_order_id, obj.stp, obj.expires_at, obj.seq)
                    except struct_error:
                        # ... else comma-separated decimals. The tags differ, so
                        # the two encodings can never collide.
                        encoding = b"o%b,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d" % (
                            obj.account.address, obj.id, obj.market, obj.side, obj.price, obj.quantity,
                            obj.remaining, obj.reserved, obj.fee_basis, obj.fees_paid,
                            obj.client_order_id, obj.stp, obj.expires_at, obj.seq)
                    term = from_bytes(blake2b(encoding, digest_size=32).digest(), "big")
                else:
                    # A dead order (most of them: cancelled or filled since the
                    # last digest, often placed since) leaves the sum.
                    term = obj.digest_term
                    if term:
                        total -= term
                        obj.digest_term = 0
                    continue
            elif cls is Account:
                noted.append(obj)
                term = from_bytes(blake2b(account_format % (obj.address, *obj.available, *obj.reserved),
                                          digest_size=32).digest(), "big") if obj.exists else 0
            elif cls is Market:
                term = from_bytes(blake2b(b"m%d,%d" % (obj.id, obj.status), digest_size=32).digest(), "big")
            else:
                noted.append(obj)
                # Part-2 objects (positions, perp market state, loans) encode
                # themselves; each tag is unique, None = no longer live.
                encoding = obj.digest_encoding()
                term = from_bytes(blake2b(encoding, digest_size=32).digest(), "big") if encoding is not None else 0
            total += term - obj.digest_term
            obj.digest_term = term
        # Accounts changed: re-banded at the next batch (Solvency.note skips
        # orders; it reads nothing the loop above writes, so it may come after).
        solvency = self._parts["solvency"]
        if self._checkpoints:
            # A digest inside a checkpoint (a stateDigest() view in an eth_call): its
            # revert must give back the objects changed before the checkpoint too,
            # whose re-banding marks it undoes (found by review: such an account was
            # not re-banded at the next Tick).
            self._log.append((_redirty, solvency.marks, self._dirty, tuple(self._dirty)))
        solvency.note(noted)
        self._dirty.clear()
        total %= _MOD
        self._digest_sum = total
        meta = repr((self._next_order_id, self._next_seq, self._next_trade_id,
                     self._deposits, self._withdrawals)).encode()
        return hashlib.blake2b(_FORMAT + total.to_bytes(32, "big") + meta, digest_size=32).digest()

    def to_bytes(self) -> bytes:
        """Deterministic serialisation of the state (config not included)."""
        if self._checkpoints:
            raise RuntimeError("to_bytes with open checkpoints")
        accounts = []
        for address in sorted(self._accounts):
            a = self._accounts[address]
            fills = [_fill_tuple(f) for f in a.fills] if a.fills is not None else []
            accounts.append((address, tuple(a.available), tuple(a.reserved), fills))
        markets = []
        for mid in sorted(self._markets):
            m = self._markets[mid]
            orders = [(o.id, o.account.address, int(o.side), o.price, o.quantity, o.remaining, o.reserved,
                       o.fee_basis, o.fees_paid, o.client_order_id, int(o.stp), o.expires_at, o.seq)
                      for o in m.book.orders()]
            markets.append((mid, int(m.status), orders))
        parts = {name: self._parts[name].state() for name in sorted(self._parts)}
        state = (self._next_order_id, self._next_seq, self._next_trade_id, tuple(self._deposits),
                 tuple(self._withdrawals), accounts, markets, parts)
        return _FORMAT + repr(state).encode()

    @classmethod
    def from_bytes(cls, data: bytes, config: ExchangeConfig) -> "Engine":
        if not data.startswith(_FORMAT):
            raise ValueError("not a blixt exchange state")
        state = literal_eval(data[len(_FORMAT):].decode())
        next_order_id, next_seq, next_trade_id, deposits, withdrawals, accounts, markets = state[:7]
        parts = state[7] if len(state) > 7 else {}  # a part-1 state has none
        engine = cls(config)
        engine._next_order_id, engine._next_seq, engine._next_trade_id = next_order_id, next_seq, next_trade_id
        engine._deposits[:] = deposits
        engine._withdrawals[:] = withdrawals
        for address, available, reserved, fills in accounts:
            a = engine._account_for(address)
            a.available[:] = available
            a.reserved[:] = reserved
            if a.fills is not None:
                a.fills.extend(Fill(*f[:4], Side(f[4]), *f[5:]) for f in fills)
        for mid, status, orders in markets:
            m = engine._markets[mid]
            m.status = MarketStatus(status)
            for (oid, address, side, price, quantity, remaining, reserved, basis, paid, cid, stp,
                 expires_at, seq) in orders:
                o = Order(oid, engine._accounts[address], mid, Side(side), price, quantity, cid,
                          SelfTradePrevention(stp), expires_at, seq)
                o.remaining, o.reserved, o.fee_basis, o.fees_paid = remaining, reserved, basis, paid
                m.book.add(o)
                engine._attach(o)
        for name in sorted(parts):
            engine._parts[name].load_state(parts[name])
        engine._parts["solvency"].after_load()
        engine._log.clear()
        return engine

    # ==== read views =======================================================

    def depth(self, market: int, levels: int = 10):
        """Aggregated book: ([(price, quantity, orders)] bids, [...] asks), best first."""
        m = self._market(market)
        lot = m.lot_size
        bids, asks = m.book.depth(levels)
        return ([(p, q * lot, n) for p, q, n in bids], [(p, q * lot, n) for p, q, n in asks])

    def best_bid_ask(self, market: int) -> tuple[int | None, int | None]:
        book = self._market(market).book
        return book.bids.best, book.asks.best

    def balances(self, account: bytes) -> dict[int, tuple[int, int]]:
        """asset id -> (available, reserved); empty for an unknown account."""
        a = self._accounts.get(account)
        if a is None:
            return {}
        return {self._asset_ids[i]: (a.available[i], a.reserved[i]) for i in range(self._n_assets)}

    def open_orders(self, account: bytes) -> list["OrderView"]:
        a = self._accounts.get(account)
        if a is None:
            return []
        return [self._order_view(a.open_orders[oid]) for oid in sorted(a.open_orders)]

    def order(self, account: bytes, order_id: int) -> "OrderView | None":
        a = self._accounts.get(account)
        o = a.open_orders.get(order_id) if a is not None else None
        return self._order_view(o) if o is not None else None

    def fills(self, account: bytes) -> list[Fill]:
        """The account's most recent fills, oldest first."""
        a = self._accounts.get(account)
        return list(a.fills) if a is not None and a.fills is not None else []

    # ---- perps (exchange/perps.py) ----

    def oracle_price(self, asset: int) -> int | None:
        """The latest oracle price of an asset id, quote units per whole token."""
        index = self._asset_index.get(asset)
        if index is None:
            raise ExchangeError(Reason.UNKNOWN_ASSET)
        return self._perps.oracle.prices[index] or None

    def mark_price(self, market: int) -> int | None:
        """A perp market's mark price per whole token (None: no oracle price yet)."""
        return self._perps.mark_price(self._market(market))

    def position(self, account: bytes, market: int):
        """The account's perp position on ``market`` (a PositionView; flat if none)."""
        return self._perps.position_view(account, self._market(market))

    def portfolio(self, account: bytes, now: int | None = None, assume_orders: bool = False):
        """The account's risk.Portfolio (spot balances free + held, perp positions
        at mark with pending funding, loans at ``now``); with ``assume_orders``
        its open perp orders as the pre-trade check counts them: each market's
        position at the size, within what its orders could make it, that
        leaves the lowest opening-level available margin, valued with the
        orders' losses and fees but not their profits (risk.RiskModel._worst,
        settled into plain positions)."""
        a = self._accounts.get(account) or Account(account, self._n_assets, 0)
        perps = self._perps
        portfolio, prices = perps.portfolio_of(a, self._now if now is None else now, None, None, assume_orders)
        if portfolio.choices:
            model = perps.risk_model()
            portfolio = model._concrete(portfolio, model._worst(portfolio, prices, 1, 5)[1], prices)
        portfolio.balances = {asset: amount for asset, amount in portfolio.balances.items() if amount}
        return portfolio

    def margin(self, account: bytes, now: int | None = None, assume_orders: bool = False):
        """risk.Margin of the account's portfolio at oracle prices (equity,
        available margin at both levels, binding scenario, naive margin)."""
        a = self._accounts.get(account) or Account(account, self._n_assets, 0)
        perps = self._perps
        portfolio, prices = perps.portfolio_of(a, self._now if now is None else now, None, None, assume_orders)
        return perps._evaluate(perps.risk_model(), portfolio, prices)

    def margin_view(self, account: bytes, now: int | None = None):
        """margin.MarginView: equity, available margin at both levels, the
        binding scenario, and naive per-position margin side by side."""
        return self._parts["margin"].view(account, self._now if now is None else now)

    def liquidatable_accounts(self) -> list[bytes]:
        """Accounts flagged at liquidation-level available margin <= 0, sorted
        (exchange/liquidation.py: flagged when an oracle move or a batch finds them)."""
        return self._parts["solvency"].liquidatable_accounts()

    def derisk_policy(self, account: bytes) -> tuple:
        """The account's de-risk rules (liquidation.DeriskRule), in order."""
        return self._parts["solvency"].policy(account)

    def funding(self, market: int):
        """A perp market's funding state (a FundingView)."""
        return self._perps.funding_view(self._market(market))

    # ---- lending (exchange/lending.py) ----

    def loans(self, account: bytes, now: int) -> list:
        """The account's open loans, lent and borrowed, by id, with interest
        as of block time ``now`` (LoanViews)."""
        return self.lending.loan_views(account, now)

    def market_status(self, market: int) -> MarketStatus:
        return self._market(market).status

    def accounts(self) -> list[bytes]:
        return sorted(self._accounts)

    def _order_view(self, o: Order) -> "OrderView":
        lot = self._markets[o.market].lot_size
        return OrderView(o.id, o.account.address, o.market, Side(o.side), o.price, o.quantity * lot,
                         o.remaining * lot, o.reserved, o.client_order_id, o.expires_at)

    def _market(self, market: int) -> Market:
        m = self._markets.get(market)
        if m is None:
            raise ExchangeError(Reason.UNKNOWN_MARKET)
        return m

    # ==== handlers: balances ==============================================

    def _deposit(self, c: Deposit, ctx: Context):
        asset = self._asset_index.get(c.asset)
        if asset is None:
            raise ExchangeError(Reason.UNKNOWN_ASSET)
        amount = c.amount
        if amount <= 0:
            raise ExchangeError(Reason.INVALID_AMOUNT)
        a = self._account_for(c.account)
        self._snap(a)
        self._log.append((_restore_total, a, self._deposits, asset, self._deposits[asset]))
        a.available[asset] += amount
        self._deposits[asset] += amount
        self._dirty.add(a)
        return BalanceResult(c.asset, a.available[asset]), [Deposited(c.account, c.asset, amount, a.available[asset])]

    def _withdraw(self, c: Withdraw, ctx: Context):
        asset = self._asset_index.get(c.asset)
        if asset is None:
            raise ExchangeError(Reason.UNKNOWN_ASSET)
        amount = c.amount
        if amount <= 0:
            raise ExchangeError(Reason.INVALID_AMOUNT)
        a = self._accounts.get(c.account)
        if a is None or a.available[asset] < amount:
            if a is None:
                raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
            # Borrow the shortfall from the asset's lending book, within margin (exchange/margin.py).
            return self._parts["margin"].withdraw(c, ctx, a, asset)
        if a.positions or a.loans or a.open_orders or min(a.available) < 0:
            # Positions, resting perp orders, loans and debts are margined by the
            # whole portfolio (exchange/perps.py).
            self._clearing[_PERP].check_withdrawal(a, asset, amount, ctx.timestamp)  # (self._perps)
        self._snap(a)
        self._log.append((_restore_total, a, self._withdrawals, asset, self._withdrawals[asset]))
        a.available[asset] -= amount
        self._withdrawals[asset] += amount
        self._dirty.add(a)
        return BalanceResult(c.asset, a.available[asset]), [Withdrawn(c.account, c.asset, amount, a.available[asset])]

    # ==== handlers: orders ================================================

    def _place(self, c: PlaceOrder, ctx: Context):
        m = self._markets.get(c.market)
        if m is None:
            raise ExchangeError(Reason.UNKNOWN_MARKET)
        if m.status is not _ACTIVE:
            raise ExchangeError(Reason.MARKET_HALTED)
        clearing = m.clearing
        if clearing is None:
            raise ExchangeError(Reason.MARKET_KIND_UNSUPPORTED)
        side = _SIDE.get(c.side)
        tif = _TIF.get(c.time_in_force)
        stp = _STP.get(c.stp)
        order_type = _ORDER_TYPE.get(c.order_type)
        if side is None or tif is None or stp is None or order_type is None:
            raise ExchangeError(Reason.INVALID_ORDER)
        price = c.price
        quantity = c.quantity
        lot = m.lot_size
        if price > 0 and quantity >= lot and not price % m.tick_size and not quantity % lot:
            lots = quantity // lot  # (every rule of _checked_lots holds: no call on the hot path)
        else:
            lots = _checked_lots(m, price, quantity)  # raises the first rule broken
        if price * lots < m.min_notional:
            raise ExchangeError(Reason.BELOW_MIN_NOTIONAL)
        if order_type is _MARKET:
            # A market order is an IOC (or FOK) bounded by its worst price.
            if tif is _POST_ONLY:
                raise ExchangeError(Reason.INVALID_ORDER, "market order cannot be post-only")
            if tif is _GTC:
                tif = _IOC
        rests = tif is _GTC or tif is _POST_ONLY
        expires_at = c.expires_at
        if expires_at:
            if not rests or expires_at < 0:
                raise ExchangeError(Reason.INVALID_ORDER, "only resting orders expire")
            if expires_at <= ctx.timestamp:
                raise ExchangeError(Reason.ALREADY_EXPIRED)
        account = self._accounts.get(c.account)
        if account is None:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
        if rests and len(account.open_orders) >= self._max_open:
            raise ExchangeError(Reason.TOO_MANY_OPEN_ORDERS)
        cid = c.client_order_id
        if cid:
            if cid < 0:
                raise ExchangeError(Reason.INVALID_ORDER, "client order id must be positive")
            if account.client_ids is not None and cid in account.client_ids:
                raise ExchangeError(Reason.DUPLICATE_CLIENT_ORDER_ID)
        book = m.book
        # book.would_cross, inlined: this is the hottest path of the engine.
        if side is _BUY:
            best = book.asks.best
            crosses = best is not None and best <= price
        else:
            best = book.bids.best
            crosses = best is not None and best >= price
        if clearing.__class__ is SpotClearing and not c.reduce_only:
            # SpotClearing.hold_for, inlined (same arithmetic, same rounding).
            if side is _BUY:
                notional = price * lots
                asset = m.quote
                hold = notional - (-notional * (m.max_fee if crosses else m.maker_fee) // FEE_SCALE)
            else:
                asset = m.base
                hold = quantity  # lots * lot_size: a whole number of lots
        else:
            # Part 2: the kind's own pre-trade check (perps: reduce-only, margin),
            # which may trim a reduce-only order, then its hold.
            check = getattr(clearing, "check_order", None)
            if check is not None:
                # self._now = ..., inlined: the portfolio check's block time (loan interest accrues by it)
                self._clearing[_PERP].now = ctx.timestamp
                lots = check(m, account, side, price, lots, tif, c.reduce_only, crosses)
                quantity = lots * lot
            elif c.reduce_only:
                raise ExchangeError(Reason.INVALID_ORDER, "reduce-only is for perp orders")
            if clearing.__class__ is PerpClearing:
                # PerpClearing.hold_for, inlined (same arithmetic): its worst fee in
                # the quote asset, a crossing sell's at the best bid above its limit
                notional = price * lots
                if crosses and side is not _BUY:
                    best = book.bids.best
                    if best is not None and best > price:
                        notional = best * lots
                asset = m.quote
                hold = -(-notional * (m.max_fee if crosses else m.maker_fee) // FEE_SCALE)
            else:
                asset, hold = clearing.hold_for(m, side, price, lots, crosses)
        available = account.available
        if available[asset] < hold:
            # Borrow the shortfall from the asset's lending book, within margin (exchange/margin.py).
            return self._parts["margin"].place(c, ctx, m, account, side, price, lots, asset, hold, rests)
        if m.kind is _SPOT and (account.positions or account.loans or min(available) < 0
                                or (account.open_orders and self._perp_orders(account))):
            # A spot trade changes a leveraged account's exposure: the portfolio
            # check (an account without positions or debt cannot go below zero).
            self._parts["margin"].check_spot_fit(m, account, side, price, lots, hold, ctx.timestamp, rests)
        now = ctx.timestamp
        if crosses:
            if tif is _POST_ONLY:
                raise ExchangeError(Reason.WOULD_CROSS_POST_ONLY)
            if tif is _FOK and book.fillable(side, price, lots, account, stp, now) < lots:
                raise ExchangeError(Reason.FOK_NOT_FILLABLE)
        elif tif is _FOK:
            raise ExchangeError(Reason.FOK_NOT_FILLABLE)

        # ---- every check passed: from here on the command cannot fail ----
        order_id = self._next_order_id
        self._next_order_id = order_id + 1
        seq = self._next_seq
        self._next_seq = seq + 1
        market_id = m.id
        o = Order(order_id, account, market_id, side, price, lots, cid, stp, expires_at, seq)
        log = self._log
        epoch = self._epoch
        if account.snap != epoch:  # self._snap(account), inlined
            log.append((_restore_account, account, available[:], account.reserved[:], account.snap))
            account.snap = epoch
        available[asset] -= hold
        account.reserved[asset] += hold
        o.reserved = hold
        dirty = self._dirty
        dirty.add(account)
        events = [OrderAccepted(order_id, c.account, market_id, side, price, quantity, tif,
                                order_type, cid, expires_at)]
        if not crosses:
            if rests:
                # book.add and self._attach, inlined for the commonest command:
                # a passive order that rests without matching. One undo entry
                # covers both (see _undo_rest).
                book_side = book.bids if side is _BUY else book.asks
                level = book_side.levels.get(price)
                if level is None:
                    level = book._new_level(book_side, price)
                tail = level.tail
                o.prev = tail
                if tail is None:
                    level.head = o
                else:
                    tail.next = o
                level.tail = o
                level.total += lots
                level.count += 1
                o.live = True
                dirty.add(o)
                account.open_orders[order_id] = o
                if m.kind is _PERP:
                    # clearing.rested(o, 1), inlined: the account's resting perp sums
                    # (kept only while of the current generation)
                    if account.resting_gen == clearing.resting_gen:
                        resting = account.resting
                        sums = resting.get(market_id)
                        if sums is None:
                            sums = resting[market_id] = [0, 0, 0, 0, 0, 0, 0]
                        if side:
                            sums[3] += lots
                            sums[4] += price * lots
                            sums[5] += hold
                        else:
                            sums[0] += lots
                            sums[1] += price * lots
                            sums[2] += hold
                        sums[6] += 1
                elif account.spot_resting is not None:  # (None: a part-1 account, nothing kept)
                    self._clearing[_PERP].spot_rested(o, 1)
                if cid:
                    if account.client_ids is None:
                        account.client_ids = {}
                    account.client_ids[cid] = o
                if expires_at:
                    self._expiring.add((expires_at, order_id))
                    self._expiring_orders[order_id] = o
                log.append((self._undo_rest, o))
                return OrderResult(order_id, _RESTING, 0, quantity), events
            # An IOC that cannot take: nothing fills, its hold goes back.
            clearing.release(m, o)
            events.append(OrderCancelled(order_id, c.account, market_id, side, price, quantity,
                                         _IOC_REMAINDER))
            return OrderResult(order_id, _CANCELLED, 0, 0), events
        outcomes, stopped = book.match(o, now)
        filled = clearing.settle(m, o, outcomes, events, now)
        remaining = o.remaining
        if rests and remaining and not stopped:
            book.add(o)
            clearing.trim(m, o)
            self._attach(o)  # after trim: it counts the order's final hold (PerpClearing.rested)
            return OrderResult(order_id, _RESTING, filled * lot, remaining * lot), events
        left = o.reserved
        if left and clearing.__class__ is SpotClearing:
            # SpotClearing.release, inlined: settle has already journalled the
            # taker and its account in this command.
            available[asset] += left
            account.reserved[asset] -= left
            o.reserved = 0
            dirty.add(o)
        else:
            clearing.release(m, o)
        if not remaining:
            return OrderResult(order_id, _FILLED, filled * lot, 0), events
        events.append(OrderCancelled(order_id, c.account, market_id, side, price, remaining * lot,
                                     _SELF_TRADE if stopped else _IOC_REMAINDER))
        return OrderResult(order_id, _CANCELLED, filled * lot, 0), events

    def _perp_orders(self, account) -> dict:
        """The account's resting perp orders' sums (empty: none) - a spot order
        of an account with any is margin-checked (they may fill)."""
        perp = self._clearing[_PERP]
        return account.resting if account.resting_gen == perp.resting_gen else perp.resting_of(account)

    def _cancel(self, c: CancelOrder, ctx: Context):
        account = self._accounts.get(c.account)
        o = account.open_orders.get(c.order_id) if account is not None else None
        if o is None:
            raise ExchangeError(Reason.UNKNOWN_ORDER)
        return self._cancel_one(o, _USER)

    def _cancel_by_client_id(self, c: CancelByClientId, ctx: Context):
        account = self._accounts.get(c.account)
        ids = account.client_ids if account is not None else None
        o = ids.get(c.client_order_id) if ids else None
        if o is None or not c.client_order_id:
            raise ExchangeError(Reason.UNKNOWN_ORDER)
        return self._cancel_one(o, _USER)

    def _cancel_one(self, o: Order, reason: CancelReason):
        m = self._markets[o.market]
        if m.status is _HALTED:
            raise ExchangeError(Reason.MARKET_HALTED)
        lots = o.remaining
        remaining = lots * m.lot_size
        # book.remove(o), inlined (the same undo entry).
        book = m.book
        side = book.bids if o.side == 0 else book.asks
        level = side.levels[o.price]
        p = o.prev
        n = o.next
        if p is None:
            level.head = n
        else:
            p.next = n
        if n is None:
            level.tail = p
        else:
            n.prev = p
        level.total -= lots
        level.count -= 1
        o.prev = o.next = None
        o.live = False
        self._dirty.add(o)
        if level.count == 0:
            book._drop_level(side, level)
        log = self._log
        log.append((book._relink, o, p, n, level))
        # self._detach(o), inlined.
        a = o.account
        del a.open_orders[o.id]
        if m.kind is _PERP:
            # m.clearing.rested(o, -1), inlined (kept only while of the current generation)
            if a.resting_gen == m.clearing.resting_gen:
                resting = a.resting
                mid = o.market
                sums = resting.get(mid)
                if sums is None:
                    sums = resting[mid] = [0, 0, 0, 0, 0, 0, 0]
                if o.side:
                    sums[3] -= lots
                    sums[4] -= o.price * lots
                    sums[5] -= o.reserved
                else:
                    sums[0] -= lots
                    sums[1] -= o.price * lots
                    sums[2] -= o.reserved
                sums[6] -= 1
                if not sums[6]:
                    del resting[mid]
        elif a.spot_resting is not None:
            self._clearing[_PERP].spot_rested(o, -1)
        if o.client_order_id:
            del a.client_ids[o.client_order_id]
        if o.expires_at:
            self._expiring.remove((o.expires_at, o.id))
            del self._expiring_orders[o.id]
        log.append((self._reindex, o))
        reserved = o.reserved
        kind = m.clearing.__class__
        if reserved and (kind is SpotClearing or kind is PerpClearing):
            # SpotClearing.release / PerpClearing.release (a perp order holds its
            # fee in the quote asset) -> _move_hold, inlined: the whole hold goes back.
            epoch = self._epoch
            if a.snap != epoch:
                log.append((_restore_account, a, a.available[:], a.reserved[:], a.snap))
                a.snap = epoch
            if o.snap != epoch:
                o.snap = epoch
                log.append((_restore_order_money, o, reserved, o.fee_basis, o.fees_paid))
            asset = m.quote if o.side == 0 or kind is PerpClearing else m.base
            a.available[asset] += reserved
            a.reserved[asset] -= reserved
            o.reserved = 0
            self._dirty.add(a)  # o is already marked by book.remove
        else:
            m.clearing.release(m, o)
        return (CancelResult(o.id, remaining),
                [OrderCancelled(o.id, o.account.address, m.id, o.side, o.price, remaining, reason)])

    def _cancel_all(self, c: CancelAll, ctx: Context):
        account = self._accounts.get(c.account)
        if c.market is not None:
            m = self._market(c.market)
            if m.status is _HALTED:
                raise ExchangeError(Reason.MARKET_HALTED)
        if account is None:
            return CancelAllResult(0), []
        events = []
        count = 0
        # Sorted by id: the order of events must not depend on dict history.
        for oid in sorted(account.open_orders):
            o = account.open_orders[oid]
            if c.market is not None and o.market != c.market:
                continue
            if self._markets[o.market].status is _HALTED:
                continue
            events.extend(self._cancel_one(o, _USER)[1])
            count += 1
        return CancelAllResult(count), events

    def _modify(self, c: ModifyOrder, ctx: Context):
        account = self._accounts.get(c.account)
        o = account.open_orders.get(c.order_id) if account is not None else None
        if o is None:
            raise ExchangeError(Reason.UNKNOWN_ORDER)
        m = self._markets[o.market]
        if m.status is not _ACTIVE:
            raise ExchangeError(Reason.MARKET_HALTED)
        price = c.price
        lots = _checked_lots(m, price, c.quantity)
        if price == o.price and lots == o.remaining:
            raise ExchangeError(Reason.NO_CHANGE)
        requeue = price != o.price or lots > o.remaining
        book = m.book
        if requeue:
            # A re-queued order is judged like a new resting one: it must be
            # worth the minimum and it never takes liquidity.
            if price * lots < m.min_notional:
                raise ExchangeError(Reason.BELOW_MIN_NOTIONAL)
            if book.would_cross(o.side, price):
                raise ExchangeError(Reason.WOULD_CROSS_POST_ONLY)
        clearing = m.clearing
        self._now = ctx.timestamp  # for a part-2 clearing's margin check in resting_hold
        delta = clearing.resting_hold(m, o, price, lots) - o.reserved
        asset = clearing.hold_asset(m, o.side)
        if delta > account.available[asset]:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
        if requeue and m.kind is _SPOT and (account.positions or account.loans or self._perp_orders(account)):
            # The modified spot order is judged as a new one would be: the
            # portfolio check of a leveraged account (found by review: a small
            # order modified into a large one went around it).
            self._parts["margin"].check_spot_fit(m, account, o.side, price, lots, o.reserved + delta,
                                                 ctx.timestamp, True, o)

        # ---- cannot fail from here ----
        perp = m.kind is _PERP
        if perp:
            clearing.rested(o, -1)  # its fields change: out of the account's resting sums, then back
        elif account.spot_resting is not None:
            self._clearing[_PERP].spot_rested(o, -1)
        if requeue:
            book.remove(o)
            log = self._log
            log.append((_restore_order_book_fields, o, o.price, o.quantity, o.remaining, o.seq))
            o.quantity += lots - o.remaining
            o.price = price
            o.remaining = lots
            o.seq = self._next_seq
            self._next_seq += 1
            book.add(o)
        else:
            log = self._log
            log.append((_restore_order_book_fields, o, o.price, o.quantity, o.remaining, o.seq))
            o.quantity -= o.remaining - lots
            book.reduce(o, lots)
        if delta:
            clearing._move_hold(o, asset, delta)
        if perp:
            clearing.rested(o, 1)
        elif account.spot_resting is not None:
            self._clearing[_PERP].spot_rested(o, 1)
        return (ModifyResult(o.id, requeue),
                [OrderModified(o.id, c.account, m.id, o.side, price, lots * m.lot_size, requeue)])

    def _batch(self, c: Batch, ctx: Context):
        actions = c.actions
        if len(actions) > self._max_batch:
            raise ExchangeError(Reason.BATCH_TOO_LARGE)
        results = []
        events = []
        handlers = self._handlers
        for action in actions:
            if action.__class__ is Batch:
                results.append(ExchangeError(Reason.NESTED_BATCH))
                continue
            # The account that acts: a Liquidate's is its liquidator (its
            # ``account`` is the one liquidated, anyone's).
            actor = action.liquidator if action.__class__ is Liquidate else getattr(action, "account", None)
            if actor != c.account:
                results.append(ExchangeError(Reason.WRONG_ACCOUNT))
                continue
            handler = handlers.get(action.__class__)
            if handler is None:
                results.append(ExchangeError(Reason.UNKNOWN_COMMAND))
                continue
            try:
                result, action_events = handler(action, ctx)
            except ExchangeError as e:
                results.append(e)
            else:
                results.append(result)
                events.extend(action_events)
        return BatchResult(tuple(results)), events

    def _expire(self, c: ExpireOrders, ctx: Context):
        now = ctx.timestamp
        expiring = self._expiring
        events = []
        count = 0
        while expiring and expiring[0][0] <= now and (not c.limit or count < c.limit):
            o = self._expiring_orders[expiring[0][1]]
            m = self._markets[o.market]
            lot = m.lot_size
            remaining = o.remaining * lot
            m.book.remove(o)
            self._detach(o)
            m.clearing.release(m, o)
            events.append(OrderCancelled(o.id, o.account.address, m.id, o.side, o.price, remaining,
                                         CancelReason.EXPIRED))
            count += 1
        return ExpireResult(count), events

    def _tick(self, c: Tick, ctx: Context):
        events: list = []
        for hook in self._block_hooks:
            hook(ctx, events)
        return TickResult(ctx.block_number, ctx.timestamp), events

    def _set_market_status(self, c: SetMarketStatus, ctx: Context):
        if c.account != self.config.admin:
            raise ExchangeError(Reason.NOT_AUTHORIZED)
        m = self._market(c.market)
        if c.status not in tuple(MarketStatus):
            raise ExchangeError(Reason.INVALID_ORDER, "unknown status")
        status = MarketStatus(c.status)
        self._log.append((_restore_status, m, m.status))
        m.status = status
        self._dirty.add(m)
        return StatusResult(m.id, status), [MarketStatusChanged(m.id, status)]

    # ==== state helpers ===================================================

    def _account_for(self, address: bytes) -> Account:
        a = self._accounts.get(address)
        if a is None:
            if not isinstance(address, bytes) or len(address) != 20:
                raise ExchangeError(Reason.WRONG_ACCOUNT, "accounts are 20-byte addresses")
            a = Account(address, self._n_assets, self._fills_kept)
            self._accounts[address] = a
            self._dirty.add(a)
            self._log.append((self._undo_new_account, a))
        return a

    def _undo_new_account(self, a: Account) -> None:
        del self._accounts[a.address]
        a.exists = False

    def _snap(self, a: Account) -> None:
        """Journal ``a``'s balances, once per command (see SpotClearing.settle)."""
        if a.snap != self._epoch:
            self._log.append((_restore_account, a, a.available[:], a.reserved[:], a.snap))
            a.snap = self._epoch

    def _move_free(self, payer: Account, payee: Account, asset: int, amount: int) -> None:
        """Move ``amount`` of asset index ``asset`` from one free balance to
        another, both journalled (a loan repayment, a liquidation reward)."""
        self._snap(payer)
        self._snap(payee)
        payer.available[asset] -= amount
        payee.available[asset] += amount
        self._dirty.add(payer)
        self._dirty.add(payee)

    def _attach(self, o: Order) -> None:
        """Index a resting order under its account (and expiry)."""
        a = o.account
        a.open_orders[o.id] = o
        m = self._markets[o.market]
        if m.kind is _PERP:
            m.clearing.rested(o, 1)
        elif a.spot_resting is not None:
            self._clearing[_PERP].spot_rested(o, 1)
        if o.client_order_id:
            if a.client_ids is None:
                a.client_ids = {}
            a.client_ids[o.client_order_id] = o
        if o.expires_at:
            self._expiring.add((o.expires_at, o.id))
            self._expiring_orders[o.id] = o
        self._log.append((self._unindex, o))

    def _detach(self, o: Order) -> None:
        """Drop a finished order from its account's indexes."""
        self._unindex(o)
        self._log.append((self._reindex, o))

    def _unindex(self, o: Order) -> None:
        a = o.account
        del a.open_orders[o.id]
        m = self._markets[o.market]
        if m.kind is _PERP:
            m.clearing.rested(o, -1)
        elif a.spot_resting is not None:
            self._clearing[_PERP].spot_rested(o, -1)
        if o.client_order_id:
            del a.client_ids[o.client_order_id]
        if o.expires_at:
            self._expiring.remove((o.expires_at, o.id))
            del self._expiring_orders[o.id]

    def _undo_rest(self, o: Order) -> None:
        """Undo of the inlined rest in _place: unindex, then take it off the book
        (the reverse of the order they were done in)."""
        self._unindex(o)
        self._markets[o.market].book.remove(o)  # its undo entry is cut off by the runner

    def _reindex(self, o: Order) -> None:
        self._attach(o)  # its undo entry is appended past the cut and dropped

    def _remember_fill(self, a: Account, fill: Fill) -> None:
        fills = a.fills
        dropped = fills[0] if len(fills) == fills.maxlen else None
        self._log.append((_forget_fill, a, dropped))
        fills.append(fill)

    # ==== audits (tests and the benchmark's self-check) ===================

    def balance_report(self) -> "BalanceReport":
        """exchange-core's TotalCurrencyBalanceReport: per asset, where every
        unit that came in is now. Walks the whole state: a check, not a hot path."""
        n = self._n_assets
        available = [0] * n
        reserved = [0] * n
        held_by_orders = [0] * n
        fee = self._fee_account
        for a in self._accounts.values():
            if a is fee:
                continue
            for i in range(n):
                available[i] += a.available[i]
                reserved[i] += a.reserved[i]
        for m in self._markets.values():
            for o in m.book.orders():
                held_by_orders[m.clearing.hold_asset(m, o.side)] += o.reserved
        for i in range(n):
            reserved[i] += fee.reserved[i]
        pools = [0] * n  # part-2 settlement pools (perp PnL and funding in transit)
        for name in sorted(self._parts):
            for asset, amount in getattr(self._parts[name], "pool_balances", list)():
                pools[asset] += amount
        rows = tuple(
            AssetBalance(self._asset_ids[i], self._deposits[i], self._withdrawals[i], available[i],
                         reserved[i], fee.available[i], held_by_orders[i], pools[i])
            for i in range(n))
        return BalanceReport(rows)

    def audit(self) -> list[str]:
        """Structural invariants of books and accounts; [] when all hold."""
        problems = []
        indexed = {}
        for a in self._accounts.values():
            for oid, o in a.open_orders.items():
                indexed[oid] = o
                if o.account is not a:
                    problems.append(f"order {oid} indexed under the wrong account")
            for i in range(self._n_assets):
                # A free balance may be below zero (a realized loss or funding no
                # lender has covered yet, what a default left: exchange/margin.py,
                # liquidation.py); a held one never.
                if a.reserved[i] < 0:
                    problems.append(f"negative held balance {a.address.hex()} asset {i}")
        on_book = {}
        for m in self._markets.values():
            book = m.book
            if book.bids.best is not None and book.asks.best is not None and book.bids.best >= book.asks.best:
                problems.append(f"market {m.id} crossed {book.bids.best} >= {book.asks.best}")
            for side in (book.bids, book.asks):
                expected_best = side.sign * side.keys[0] if side.keys else None
                if side.best != expected_best:
                    problems.append(f"market {m.id} stale best price")
                if len(side.keys) != len(side.levels):
                    problems.append(f"market {m.id} keys and levels disagree")
                for level in side.iter_levels():
                    total = count = 0
                    last_seq = 0
                    o = level.head
                    prev = None
                    while o is not None:
                        if o.prev is not prev or not o.live or o.price != level.price:
                            problems.append(f"order {o.id} badly linked")
                        if o.seq <= last_seq:
                            problems.append(f"level {level.price} not FIFO at order {o.id}")
                        if o.remaining <= 0:
                            problems.append(f"order {o.id} rests with nothing open")
                        last_seq = o.seq
                        total += o.remaining
                        count += 1
                        on_book[o.id] = o
                        prev = o
                        o = o.next
                    if level.tail is not prev or total != level.total or count != level.count or count == 0:
                        problems.append(f"level {level.price} totals wrong")
        if set(on_book) != set(indexed):
            problems.append("open-order indexes and books disagree")
        problems += self._perps.audit()
        return problems


@dataclass(slots=True, frozen=True)
class OrderView:
    order_id: int
    account: bytes
    market: int
    side: Side
    price: int
    quantity: int  # base units, as placed (adjusted by modifies)
    remaining: int  # base units still open
    reserved: int  # units held (quote for a buy, base for a sell)
    client_order_id: int
    expires_at: int


@dataclass(slots=True, frozen=True)
class AssetBalance:
    asset: int
    deposits: int
    withdrawals: int
    available: int  # free balances of all accounts but the fee account
    reserved: int  # held balances of all accounts
    fees: int  # the fee account's free balance
    held_by_orders: int  # sum of the holds of resting orders
    pools: int = 0  # part-2 settlement pools (perps: realized PnL and funding in transit)

    @property
    def balanced(self) -> bool:
        return (self.available + self.reserved + self.fees + self.pools == self.deposits - self.withdrawals
                and self.reserved == self.held_by_orders)


@dataclass(slots=True, frozen=True)
class BalanceReport:
    assets: tuple[AssetBalance, ...]

    @property
    def balanced(self) -> bool:
        return all(row.balanced for row in self.assets)


def _fill_tuple(f: Fill) -> tuple:
    return (f.trade_id, f.market, f.price, f.quantity, int(f.taker_side), f.maker_order_id,
            f.maker_account, f.maker_remaining, f.maker_fee, f.taker_order_id, f.taker_account,
            f.taker_remaining, f.taker_fee)


def _restore_order_book_fields(o: Order, price: int, quantity: int, remaining: int, seq: int) -> None:
    o.price, o.quantity, o.remaining, o.seq = price, quantity, remaining, seq


def _restore_total(a: Account, totals: list, asset: int, value: int) -> None:
    totals[asset] = value


def _redirty(_marks, dirty: set, objects: tuple) -> None:
    """Undo of a digest taken inside a checkpoint: the objects it took out of the
    dirty set go back (``_marks``: the undo loop marks its first argument dirty)."""
    dirty.update(objects)


def _restore_status(m: Market, status: MarketStatus) -> None:
    m.status = status


def _checked_lots(m, price: int, quantity: int) -> int:
    """The order's size in lots, after the price and size rules every order obeys
    (placing and modifying alike); raises the rule's reason otherwise."""
    if price <= 0:
        raise ExchangeError(Reason.INVALID_PRICE)
    if price % m.tick_size:
        raise ExchangeError(Reason.OFF_TICK)
    if quantity <= 0:
        raise ExchangeError(Reason.INVALID_QUANTITY)
    lot = m.lot_size
    if quantity < lot:
        raise ExchangeError(Reason.BELOW_LOT)
    lots, odd = divmod(quantity, lot)
    if odd:
        raise ExchangeError(Reason.OFF_LOT)
    return lots

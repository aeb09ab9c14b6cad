"""The central limit order book of one market: price-time priority, generic
over what a price means.

The book knows integers only: a price (any ordered int: quote units per lot on
a spot market, an interest rate on a part-2 lending book) and a quantity in
lots. It never touches balances; matching returns what happened and the
market's clearing moves the money (exchange-core's matching engine vs its risk
processors).

Layout (``OrderBookDirectImpl`` in spirit):

* each side keeps ``levels``: price -> :class:`Level`, and ``keys``: a
  ``SortedList`` of prices signed so that index 0 is the best (bids are stored
  negated); ``best`` caches the best price so the hot path reads an attribute;
* a level is a doubly linked FIFO of :class:`Order` objects (``prev`` /
  ``next``), so cancelling a known order is O(1) and adding is O(1) at an
  existing price, O(log levels) for a new one.

Every mutation appends an undo entry ``(function, *args)`` to ``log`` (the
engine's undo log, which it empties when no checkpoint is open) and adds the touched order to ``dirty`` for the state
digest. Undo entries are replayed in reverse order, so an entry may rely on
the state being exactly as it was right after its mutation.
"""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedList

from .types import SelfTradePrevention

BUY = 0
SELL = 1

# Outcome markers in a match result: a positive quantity is a fill; these are
# resting orders removed without a fill.
SELF_TRADE_CANCELLED = 0
EXPIRED = -1

_CANCEL_RESTING = SelfTradePrevention.CANCEL_RESTING
_CANCEL_INCOMING = SelfTradePrevention.CANCEL_INCOMING


class Order:
    """An order: book fields (price, remaining lots, FIFO links) and the money it
    holds (``reserved``, fee accounting). One class for resting and incoming
    orders so an incoming remainder rests without a copy."""

    __slots__ = (
        "id", "account", "market", "side", "price", "quantity", "remaining",
        "reserved", "fee_basis", "fees_paid", "client_order_id", "stp",
        "expires_at", "seq", "prev", "next", "live", "snap", "digest_term",
    )

    def __init__(self, id, account, market, side, price, quantity, client_order_id, stp, expires_at, seq):
        self.id = id
        self.account = account  # the owning Account object
        self.market = market  # market id
        self.side = side
        self.price = price
        self.quantity = quantity  # lots originally asked for
        self.remaining = quantity  # lots still open
        self.reserved = 0  # asset units held for this order (quote for a buy, base for a sell)
        self.fee_basis = 0  # sum of notional * fee rate over this order's fills
        self.fees_paid = 0  # always ceil(fee_basis / FEE_SCALE)
        self.client_order_id = client_order_id
        self.stp = stp
        self.expires_at = expires_at
        self.seq = seq  # time priority: lower is earlier
        self.prev = None
        self.next = None
        self.live = False  # on the book
        self.snap = -1  # engine epoch of the last snapshot of the money fields
        self.digest_term = 0  # this order's term in the state digest (see digest.py)

    def __repr__(self) -> str:
        return (f"Order(id={self.id}, side={self.side}, price={self.price}, "
                f"remaining={self.remaining}/{self.quantity}, seq={self.seq})")


class Level:
    __slots__ = ("price", "head", "tail", "total", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head = None
        self.tail = None
        self.total = 0  # lots resting at this price
        self.count = 0  # orders resting at this price


class BookSide:
    __slots__ = ("sign", "levels", "keys", "best")

    def __init__(self, sign: int) -> None:
        self.sign = sign  # -1 for bids: keys hold -price so keys[0] is the best
        self.levels: dict[int, Level] = {}
        self.keys = SortedList()
        self.best: int | None = None

    def iter_levels(self):
        """Levels from the best price outwards."""
        levels, sign = self.levels, self.sign
        for key in self.keys:
            yield levels[sign * key]


class OrderBook:
    __slots__ = ("market", "bids", "asks", "log", "dirty")

    def __init__(self, market: int, dirty: set) -> None:
        self.market = market
        self.bids = BookSide(-1)
        self.asks = BookSide(1)
        self.log: list = []  # the owner's undo log; the owner empties it
        self.dirty = dirty  # the engine's set of objects to rehash for the digest

    # ---- queries ---------------------------------------------------------

    @property
    def best_bid(self) -> int | None:
        return self.bids.best

    @property
    def best_ask(self) -> int | None:
        return self.asks.best

    def would_cross(self, side: int, price: int) -> bool:
        if side == BUY:
            best = self.asks.best
            return best is not None and best <= price
        best = self.bids.best
        return best is not None and best >= price

    def fillable(self, side: int, price: int, lots: int, account, stp: int, now: int) -> int:
        """Lots an incoming order could fill right now, up to ``lots``, with the
        same rules as :meth:`match` (expired orders and self-trades don't count)."""
        opposite = self.asks if side == BUY else self.bids
        found = 0
        for level in opposite.iter_levels():
            if (level.price > price) if side == BUY else (level.price < price):
                break
            o = level.head
            while o is not None:
                if not (o.expires_at and o.expires_at <= now):
                    if o.account is account:
                        if stp != _CANCEL_RESTING:
                            return found
                    else:
                        found += o.remaining
                        if found >= lots:
                            return lots
                o = o.next
        return found

    def depth(self, n: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Up to ``n`` aggregated levels per side, best first: (price, lots, orders)."""
        return (
            [(lv.price, lv.total, lv.count) for lv in islice(self.bids.iter_levels(), n)],
            [(lv.price, lv.total, lv.count) for lv in islice(self.asks.iter_levels(), n)],
        )

    def orders(self):
        """Every resting order: bids then asks, each best price first, FIFO within."""
        for side in (self.bids, self.asks):
            for level in side.iter_levels():
                o = level.head
                while o is not None:
                    yield o
                    o = o.next

    # ---- mutations -------------------------------------------------------

    def add(self, o: Order) -> None:
        """Rest ``o`` at the back of its price level."""
        side = self.bids if o.side == BUY else self.asks
        price = o.price
        level = side.levels.get(price)
        if level is None:
            level = self._new_level(side, price)
        tail = level.tail
        o.prev = tail
        o.next = None
        if tail is None:
            level.head = o
        else:
            tail.next = o
        level.tail = o
        level.total += o.remaining
        level.count += 1
        o.live = True
        self.dirty.add(o)
        log = self.log
        log.append((self._undo_add, o))

    def remove(self, o: Order) -> None:
        """Take a resting order off the book (cancel, fill, expiry) in O(1)."""
        side = self.bids if o.side == BUY else self.asks
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
        level.total -= o.remaining
        level.count -= 1
        o.prev = o.next = None
        o.live = False
        self.dirty.add(o)
        if level.count == 0:
            self._drop_level(side, level)
        log = self.log
        log.append((self._relink, o, p, n, level))

    def reduce(self, o: Order, remaining: int) -> None:
        """Lower a resting order's open lots in place: it keeps its priority."""
        side = self.bids if o.side == BUY else self.asks
        level = side.levels[o.price]
        log = self.log
        log.append((self._undo_reduce, o, o.remaining))
        level.total += remaining - o.remaining
        o.remaining = remaining
        self.dirty.add(o)

    def match(self, taker: Order, now: int) -> tuple[list, bool]:
        """Match ``taker`` against the opposite side, best price first, FIFO
        within a level, while prices cross and lots remain.

        Returns ``(outcomes, stopped)``: outcomes in the order they happened,
        each ``(maker, lots)`` with lots > 0 for a fill at the maker's price,
        ``SELF_TRADE_CANCELLED`` or ``EXPIRED`` for a resting order removed
        without a fill; ``stopped`` is True when self-trade prevention ends
        the incoming order. Makers are updated (and removed when done);
        ``taker.remaining`` is lowered. Balances are the caller's business.
        """
        buy = taker.side == BUY
        opposite = self.asks if buy else self.bids
        levels = opposite.levels
        limit = taker.price
        rem = taker.remaining
        account = taker.account
        stp = taker.stp
        dirty_add = self.dirty.add
        log = self.log
        undo_fill = self._undo_fill
        relink = self._relink
        outcomes = []
        push = outcomes.append
        stopped = False
        while rem:
            best = opposite.best
            if best is None or (best > limit if buy else best < limit):
                break
            level = levels[best]
            o = level.head
            while o is not None:
                nxt = o.next
                if o.expires_at and o.expires_at <= now:
                    self.remove(o)
                    push((o, EXPIRED))
                elif o.account is account:
                    if stp == _CANCEL_INCOMING:
                        stopped = True
                        break
                    self.remove(o)
                    push((o, SELF_TRADE_CANCELLED))
                    if stp != _CANCEL_RESTING:
                        stopped = True
                        break
                else:
                    have = o.remaining
                    if have <= rem:
                        rem -= have
                        level.total -= have
                        o.remaining = 0
                        log.append((undo_fill, o, have))
                        push((o, have))
                        # self.remove(o), inlined: o is the head of its level.
                        level.head = nxt
                        if nxt is None:
                            level.tail = None
                        else:
                            nxt.prev = None
                        level.count -= 1
                        o.next = None
                        o.live = False
                        dirty_add(o)
                        if level.count == 0:
                            self._drop_level(opposite, level)
                        log.append((relink, o, None, nxt, level))
                        if not rem:
                            break
                    else:
                        o.remaining = have - rem
                        level.total -= rem
                        dirty_add(o)
                        log.append((undo_fill, o, rem))
                        push((o, rem))
                        rem = 0
                        break
                o = nxt
            if stopped:
                break
        taker.remaining = rem
        return outcomes, stopped

    # ---- levels and undo -------------------------------------------------

    def _new_level(self, side: BookSide, price: int) -> Level:
        level = Level(price)
        side.levels[price] = level
        side.keys.add(side.sign * price)
        best = side.best
        if best is None or (price > best if side.sign < 0 else price < best):
            side.best = price
        return level

    def _drop_level(self, side: BookSide, level: Level) -> None:
        price = level.price
        del side.levels[price]
        keys = side.keys
        keys.remove(side.sign * price)
        if side.best == price:
            side.best = side.sign * keys[0] if keys else None

    def _relink(self, o: Order, p, n, level: Level) -> None:
        side = self.bids if o.side == BUY else self.asks
        if level.price not in side.levels:
            level.head = level.tail = None
            level.total = level.count = 0
            side.levels[level.price] = level
            side.keys.add(side.sign * level.price)
            best = side.best
            if best is None or (level.price > best if side.sign < 0 else level.price < best):
                side.best = level.price
        o.prev = p
        o.next = n
        if p is None:
            level.head = o
        else:
            p.next = o
        if n is None:
            level.tail = o
        else:
            n.prev = o
        level.total += o.remaining
        level.count += 1
        o.live = True
        self.dirty.add(o)

    def _undo_add(self, o: Order) -> None:
        self.remove(o)  # the undo runner cuts the entry this appends

    def _undo_fill(self, o: Order, lots: int) -> None:
        side = self.bids if o.side == BUY else self.asks
        side.levels[o.price].total += lots
        o.remaining += lots
        self.dirty.add(o)

    def _undo_reduce(self, o: Order, remaining: int) -> None:
        side = self.bids if o.side == BUY else self.asks
        side.levels[o.price].total += remaining - o.remaining
        o.remaining = remaining
        self.dirty.add(o)


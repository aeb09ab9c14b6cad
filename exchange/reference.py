"""NaiveBook: an obviously correct order book to test the fast one against.

exchange-core keeps ``OrderBookNaiveImpl`` beside ``OrderBookDirectImpl`` and
runs both on random streams; this is ours. One flat list of resting orders in
arrival order; every query scans and sorts it. Same interface and same rules as
:class:`exchange.book.OrderBook` (price-time priority, expired orders removed
when met, self-trade prevention), none of its data structures. Not for
production: O(n) or worse per operation.
"""

from __future__ import annotations

from .book import BUY, EXPIRED, SELF_TRADE_CANCELLED
from .types import SelfTradePrevention


class NaiveBook:
    def __init__(self, market: int = 0) -> None:
        self.market = market
        self.resting: list = []  # arrival order == time priority

    # ---- queries ---------------------------------------------------------

    def _queue(self, side: int) -> list:
        """Resting orders of ``side``, best first: price, then arrival."""
        orders = [o for o in self.resting if o.side == side]
        if side == BUY:
            return sorted(orders, key=lambda o: -o.price)  # sorted() is stable: arrival kept
        return sorted(orders, key=lambda o: o.price)

    @property
    def best_bid(self):
        q = self._queue(BUY)
        return q[0].price if q else None

    @property
    def best_ask(self):
        q = self._queue(1)
        return q[0].price if q else None

    def would_cross(self, side: int, price: int) -> bool:
        if side == BUY:
            return self.best_ask is not None and self.best_ask <= price
        return self.best_bid is not None and self.best_bid >= price

    def fillable(self, side, price, lots, account, stp, now) -> int:
        found = 0
        for o in self._queue(1 - side):
            if (o.price > price) if side == BUY else (o.price < price):
                break
            if o.expires_at and o.expires_at <= now:
                continue
            if o.account is account:
                if stp != SelfTradePrevention.CANCEL_RESTING:
                    return min(found, lots)
                continue
            found += o.remaining
        return min(found, lots)

    def depth(self, n: int):
        out = []
        for side in (BUY, 1):
            levels: list = []
            for o in self._queue(side):
                if levels and levels[-1][0] == o.price:
                    p, q, c = levels[-1]
                    levels[-1] = (p, q + o.remaining, c + 1)
                else:
                    levels.append((o.price, o.remaining, 1))
            out.append(levels[:n])
        return out[0], out[1]

    def orders(self):
        return self._queue(BUY) + self._queue(1)

    # ---- mutations -------------------------------------------------------

    def add(self, o) -> None:
        o.live = True
        self.resting.append(o)

    def remove(self, o) -> None:
        self.resting.remove(o)
        o.live = False

    def reduce(self, o, remaining: int) -> None:
        o.remaining = remaining

    def match(self, taker, now):
        outcomes = []
        stopped = False
        while taker.remaining:
            queue = self._queue(1 - taker.side)
            if not queue:
                break
            o = queue[0]
            if (o.price > taker.price) if taker.side == BUY else (o.price < taker.price):
                break
            if o.expires_at and o.expires_at <= now:
                self.remove(o)
                outcomes.append((o, EXPIRED))
                continue
            if o.account is taker.account:
                if taker.stp == SelfTradePrevention.CANCEL_INCOMING:
                    stopped = True
                    break
                self.remove(o)
                outcomes.append((o, SELF_TRADE_CANCELLED))
                if taker.stp == SelfTradePrevention.CANCEL_BOTH:
                    stopped = True
                    break
                continue
            lots = min(o.remaining, taker.remaining)
            o.remaining -= lots
            taker.remaining -= lots
            outcomes.append((o, lots))
            if not o.remaining:
                self.remove(o)
        return outcomes, stopped

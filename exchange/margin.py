"""The unified account's money rules: automatic borrowing within margin.

One account holds spot, perps and loans, and a balance may go below what the
account holds: the shortfall is then borrowed from that asset's lending book
(exchange/lending.py), at the best offers, each offer taken becoming one loan
at the offer's rate and the market's term. ``AutoBorrowing`` (one per engine,
``engine._parts["margin"]``, so Engine keeps fewer than 30 attributes) does it
in three places::

    PlaceOrder (spot, or a perp order's fee hold) whose hold > free balance
    Withdraw beyond the free balance
        Engine._place / _withdraw reach their INSUFFICIENT_BALANCE branch
          -> AutoBorrowing.place / withdraw:
             checkpoint
             borrow(shortfall rounded up to whole lots, best rate first, FIFO)
             margin: the order at its worst-case fill (spot: the whole hold
                     spent at its limit price for the whole quantity; perps:
                     PerpClearing.check_order as ever) and the new loans must
                     leave opening-level available margin >= 0
                     (withdrawals: PerpClearing.check_withdrawal, which sees
                     the new debt)
             re-dispatch the command, which now fits the free balance
             commit                 -- or revert and re-raise: nothing changed
    Tick (the block hook, before lending's maturities)
        an account whose free balance went negative (a perp's realized loss or
        funding, noted by perps.py through ``owes``) borrows the shortfall the
        same way, without a margin check (the debt exists already; a loan only
        gives it a lender and a rate). What the book cannot lend stays
        negative and is the liquidation path's business (exchange/liquidation.py).
        The insurance fund (config.insurance) is skipped: its deficit is what
        defaults left, for the operator to fund, not a debt to lend against.

Unpaid interest at maturity is not handled here: lending's maturity hook
already rolls the shortfall (principal and interest) over against the best
offers; a loan it cannot roll stays overdue, and its interest keeps accruing
as a debt of the loan, never as a negative balance.

Spot orders that fit the free balance never borrow: part 1's fast path is
untouched for an account without positions or debt; one with them passes
``check_spot_fit`` (the order filled in full at its limit must leave
opening-level margin >= 0, or not lower it). A spot order that borrowed was
checked at both ends by ``_check_spot_order`` already, whose filled end is
exactly what ``check_spot_fit`` tests, so the re-dispatch skips it
(``checked``).

Errors (stable codes, errors.Reason):
    INSUFFICIENT_BALANCE (5)  nothing to borrow from: the asset has no lending
                              market, its book is not ACTIVE or holds no offer
                              of another account (part 1's answer stands);
    BORROW_UNAVAILABLE (51)   the book has offers, but too few to lend the
                              shortfall;
    INSUFFICIENT_MARGIN (50)  it could, but the account's opening-level margin
                              would fall below zero.

State: no state of its own beyond a cache - the set of accounts that may have
a negative free balance. An entry is only a hint (the Tick re-reads the
balance); removals are journalled so a reverted Tick finds them again, and
``load_state`` rebuilds the set from the balances.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clearing import SpotClearing
from .errors import ExchangeError, Reason
from .events import AutoBorrowed
from .lending import offers_to_take
from .types import FEE_SCALE, MarketKind, MarketStatus

BUY = 0
_LENDING = MarketKind.LENDING  # (an enum member through its class costs ~4x a global)
_ACTIVE = MarketStatus.ACTIVE


class AutoBorrowing:
    __slots__ = ("engine", "perps", "lending_markets", "negative", "checked")

    def __init__(self, engine) -> None:
        self.engine = engine
        # The PerpClearing (engine._perps, a property: a call on every read), kept:
        # the spot check reads it several times per order.
        self.perps = engine._clearing[MarketKind.PERP]
        # asset index -> its lending market (the lowest id if several)
        self.lending_markets: dict = {}
        for mid in sorted(engine._markets, reverse=True):
            m = engine._markets[mid]
            if m.kind is MarketKind.LENDING:
                self.lending_markets[m.base] = m
        self.negative: set = set()  # Accounts that may have a negative free balance (a hint)
        # The Account whose spot order place() has just margin-checked, while
        # it re-dispatches the order (check_spot_fit would repeat that check).
        self.checked = None

    # ==== the engine's INSUFFICIENT_BALANCE branches ======================

    def place(self, c, ctx, market, account, side: int, price: int, lots: int, asset: int, hold: int,
              rests: bool = False):
        """PlaceOrder whose hold exceeds the free balance: borrow the
        shortfall within margin, then place it. Raises with nothing changed."""
        if market.kind is _LENDING:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)  # an offer lends what the lender has
        shortfall = hold - account.available[asset]
        engine = self.engine
        token = engine.checkpoint()
        engine._epoch += 1  # fresh undo snapshots: in a Batch, earlier actions snapped this epoch
        try:
            events: list = []
            self._borrow_or_raise(account, asset, shortfall, ctx.timestamp, events)
            if market.clearing.__class__ is SpotClearing:
                self._check_spot_order(market, account, side, price, lots, hold, ctx.timestamp, rests)
                self.checked = account
            else:
                # A perp order's fee hold borrowed: the loans stay (their interest to
                # term counts) even if the order never fills, so the account must
                # carry them unfilled too (found by review); the re-dispatch checks
                # the order filled.
                perps = self.engine._perps
                portfolio, prices = perps.portfolio_of(account, ctx.timestamp, None, None, True, True)
                unfilled = perps._available(perps.risk_model(), portfolio, prices)
                if unfilled < 0:
                    raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {unfilled}")
            # Perp orders: the re-dispatch runs PerpClearing.check_order, whose
            # portfolio now holds the new loans.
            result, placed = engine._place(c, ctx)
        except BaseException:
            self.checked = None
            engine.revert(token)
            raise
        self.checked = None
        engine.commit(token)
        return result, events + placed

    def withdraw(self, c, ctx, account, asset: int):
        """Withdraw beyond the free balance: borrow the shortfall, then
        withdraw (PerpClearing.check_withdrawal sees the new debt)."""
        engine = self.engine
        token = engine.checkpoint()
        engine._epoch += 1  # fresh undo snapshots: in a Batch, earlier actions snapped this epoch
        try:
            events: list = []
            self._borrow_or_raise(account, asset, c.amount - account.available[asset], ctx.timestamp, events)
            result, withdrawn = engine._withdraw(c, ctx)
        except BaseException:
            engine.revert(token)
            raise
        engine.commit(token)
        return result, events + withdrawn

    def _borrow_or_raise(self, account, asset: int, shortfall: int, now: int, events: list) -> None:
        market = self.lending_markets.get(asset)
        if market is None:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
        plan = self._plan(market, account, shortfall, now)
        if plan is None:
            if not self._plan(market, account, shortfall, now, partial=True):
                # No offer to take at all: the command stands where part 1 left it.
                raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
            raise ExchangeError(Reason.BORROW_UNAVAILABLE, f"lending book {market.id} cannot lend {shortfall}")
        self._execute(market, account, plan, now, events)

    def check_spot_fit(self, market, account, side: int, price: int, lots: int, hold: int, now: int,
                       rests: bool = False, replacing=None) -> None:
        """A spot order that fits the free balance, by an account with positions
        or loans: INSUFFICIENT_MARGIN if, filled in full at its limit price paying
        its worst fee, it would leave opening-level available margin below zero -
        unless it does not lower it (an account already under water may still
        trade its way out). An order that may rest (``rests``; ``replacing``: the
        order a ModifyOrder re-queues, out of the figures) is judged resting too,
        as the what-if will count it from then on: its loss against the oracle,
        its worst fee and a unit per lot, filled or not (``_resting``; found by
        the property test: a resting buy that shrank a WETH debt passed filled
        and left the account below zero unfilled)."""
        perps = self.perps
        if self.checked is account or not perps._margined(account):  # (self._leveraged, inlined)
            return  # checked by place() already (see _check_spot_order), or cannot go below zero
        if rests and not self._counted_resting(market):
            rests = False  # the what-if does not count resting orders there: judged filled, as before
        # The account's open perp orders assumed filled, as the perp check assumes them.
        if replacing is None:  # the fast path (PerpClearing._floor_available): the same figure at or above zero
            if rests:
                fast = perps._floor_available(account, now, None, None, self._resting_choice(market, side, price, lots))
            else:
                fast = perps._floor_available(account, now, None, self._fill_moves(market, side, price, lots, hold))
            if fast is not None:
                return
        model = perps.risk_model()
        portfolio, prices = perps.portfolio_of(account, now, None, replacing, True, True)
        # Resting, it counts at or below its filled figure (that is its fullest
        # corner, the profit left out): the one figure is enough.
        judge = self._resting if rests else self._filled
        after = judge(market, portfolio, prices, side, price, lots, hold, model)
        if after >= 0:
            return
        # Under water once filled: allowed only if it does not lower the margin,
        # with the open perp orders counted and without them (the worst corner
        # of the orders may stay the same while the position itself gets worse;
        # found by review).
        portfolio, prices = perps.portfolio_of(account, now, None, None, True, True)
        if after < perps._available(model, portfolio, prices, exact=True):
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {after}")
        portfolio, prices = perps.portfolio_of(account, now, None, None, False, True)
        bare = judge(market, portfolio, prices, side, price, lots, hold, model)
        portfolio, prices = perps.portfolio_of(account, now, None, None, False, True)
        if bare < 0 and bare < perps._available(model, portfolio, prices, exact=True):
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {after}")

    def _resting(self, market, portfolio, prices, side: int, price: int, lots: int, hold: int, model) -> int:
        """Opening-level available margin of ``portfolio`` with the spot order
        resting, as ``PerpClearing._spot_what_if`` counts it (one more choice:
        the base exposure from nothing to all of it filled, at its loss against
        the oracle, never its profit, less its worst fee and a unit per lot; an
        unpriced base: the buy's whole notional, no exposure). The hold moves
        free -> held, which the balances count either way."""
        engine = self.engine
        perps = engine._perps
        choice = self._resting_choice(market, side, price, lots)
        if perps.oracle.prices[market.base]:
            portfolio.choices = sorted([*portfolio.choices, choice])
        else:
            quote = engine._asset_ids[market.quote]
            portfolio.balances[quote] = portfolio.balances.get(quote, 0) + choice[1]
        return perps._available(model, portfolio, prices)

    def _counted_resting(self, market) -> bool:
        """The what-if counts this spot market's resting orders (``_spot_what_if``:
        quoted in the risk model's quote); elsewhere a resting figure would mix
        units (found by review: a WETH-quoted market's bids were refused)."""
        return self.engine._asset_ids[market.quote] == self.perps.risk_model().quote

    def _resting_choice(self, market, side: int, price: int, lots: int) -> tuple:
        """(base asset id, value, low size, high size): ``_resting``'s choice
        (with an unpriced base only its value counts, into the quote balance)."""
        perps = self.perps
        oracle = perps.oracle.prices[market.base]
        info = perps._spot_info.get(market.id)  # (its 10**decimals of the base precomputed)
        scale = info[3] if info is not None else 10 ** perps.decimals[market.base]
        notional = price * lots
        worth = lots * market.lot_size * oracle
        against = worth - notional * scale if side == BUY else notional * scale - worth
        value = (against if against < 0 else 0) // scale - lots + (-notional * market.max_fee // FEE_SCALE)
        amount = lots * market.lot_size
        return self.engine._asset_ids[market.base], value, 0 if side == BUY else -amount, amount if side == BUY else 0

    def _leveraged(self, account) -> bool:
        """A perp position, a resting perp order, a loan or a negative
        balance: what can take an account below zero margin (the withdrawal
        check's test; resting perp orders counted since a review found a spot
        order of an account with only those going unchecked)."""
        return self.perps._margined(account)

    def _filled(self, market, portfolio, prices, side: int, price: int, lots: int, hold: int, model) -> int:
        """Opening-level available margin of ``portfolio`` with the spot order
        filled in full at its limit price, paying its worst fee."""
        balances = portfolio.balances
        (paid, paid_amount), (got, got_amount) = self._fill_moves(market, side, price, lots, hold)
        balances[paid] = balances.get(paid, 0) + paid_amount
        if got in prices:  # without a price what it buys counts as worth nothing
            balances[got] = balances.get(got, 0) + got_amount
        return self.engine._perps._available(model, portfolio, prices)

    def _fill_moves(self, market, side: int, price: int, lots: int, hold: int) -> tuple:
        """((asset id paid, -amount), (asset id got, +amount)) of the spot
        order filled in full at its limit price, paying its worst fee."""
        ids = self.engine._asset_ids
        base, quote = ids[market.base], ids[market.quote]
        amount = lots * market.lot_size
        if side == BUY:
            return (quote, -hold), (base, amount)
        notional = price * lots
        return (base, -amount), (quote, notional + (-notional * market.max_fee // FEE_SCALE))  # minus ceil(fee)

    def _check_spot_order(self, market, account, side: int, price: int, lots: int, hold: int, now: int,
                          rests: bool = False) -> None:
        """INSUFFICIENT_MARGIN unless the spot order, filled in full at its
        limit price paying its worst fee, with the loans just opened, leaves
        opening-level available margin >= 0 - and so does not filling it at
        all (the available margin is concave in the filled fraction, so the
        two ends are the worst cases)."""
        perps = self.perps
        if rests and not self._counted_resting(market):
            rests = False  # (as check_spot_fit)
        # The fast path first (PerpClearing._floor_available: the full path's
        # same figures when at or above zero), as check_spot_fit asks it.
        if rests:
            if perps._floor_available(account, now, None, None,
                                      self._resting_choice(market, side, price, lots)) is not None:
                return
        elif (perps._floor_available(account, now, None) is not None
              and perps._floor_available(account, now, None,
                                         self._fill_moves(market, side, price, lots, hold)) is not None):
            return
        model = perps.risk_model()
        portfolio, prices = perps.portfolio_of(account, now, None, None, True, True)
        if rests:  # resting: at or below both ends (its corners, the profit left out)
            available = self._resting(market, portfolio, prices, side, price, lots, hold, model)
        else:
            unfilled = perps._available(model, portfolio, prices)
            if unfilled < 0:
                raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {unfilled}")
            available = self._filled(market, portfolio, prices, side, price, lots, hold, model)
        if available < 0:
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {available}")

    # ==== borrowing =======================================================

    def borrow(self, account, asset: int, amount: int, now: int, events: list) -> int:
        """Borrow up to ``amount`` of asset index ``asset`` for ``account``
        against the best offers (rounded up to whole lots), no margin check;
        returns what was borrowed (0 when there is no active book or offer).
        For the Tick hook and the liquidation path (debt into loans)."""
        market = self.lending_markets.get(asset)
        if market is None or amount <= 0:
            return 0
        plan = self._plan(market, account, amount, now, partial=True)
        if not plan:
            return 0
        return self._execute(market, account, plan, now, events)

    def _plan(self, market, borrower, amount: int, now: int, partial: bool = False):
        """[(offer, lots)] that lend ``amount`` rounded up to whole lots, best
        rate first, FIFO within a rate, skipping the borrower's own and
        expired offers; None (or, ``partial``, what there is) if the book
        cannot. Decided before any change, like lending's roll-over."""
        if market.status is not _ACTIVE:
            return [] if partial else None
        plan, need = offers_to_take(market, borrower, -(-amount // market.lot_size), now)
        if need and not partial:
            return None
        return plan

    def _execute(self, market, borrower, plan, now: int, events: list) -> int:
        lending = self.engine.lending
        loans = []
        borrowed = 0
        for o, lots in plan:
            loans.append(lending._take_offer(market, o, lots, borrower, now, events, 0))
            borrowed += lots * market.lot_size
        events.append(AutoBorrowed(borrower.address, self.engine._asset_ids[market.base], borrowed, tuple(loans)))
        return borrowed

    # ==== negative balances: noted by perps, covered at the Tick ==========

    def owes(self, account) -> None:
        """perps.py: ``account``'s free balance went negative."""
        self.negative.add(account)

    def on_block(self, ctx, events: list) -> None:
        """Borrow what each account with a negative free balance owes (by
        address, assets by index); drop the accounts that no longer owe."""
        negative = self.negative
        if not negative:
            return
        now = ctx.timestamp
        log = self.engine._log
        insurance = self.engine.config.insurance
        for account in sorted(negative, key=_address):
            if account.address == insurance:  # its deficit is the operator's to fund, not a borrower's
                negative.discard(account)
                log.append((_renote, account, negative))
                continue
            available = account.available
            for asset in range(len(available)):
                if available[asset] < 0:
                    self.borrow(account, asset, -available[asset], now, events)
            if min(available) >= 0 or not account.exists:
                negative.discard(account)
                log.append((_renote, account, negative))

    # ==== views ===========================================================

    def view(self, address: bytes, now: int) -> "MarginView":
        engine = self.engine
        m = engine.margin(address, now, assume_orders=True)
        base = m.equity - m.deductions
        return MarginView(m.equity, m.available_open, m.available_liq, m.binding, m.loss_open, m.loss_liq,
                          m.naive_open, m.naive_liq, base - m.naive_open, base - m.naive_liq, m.deductions)

    # ==== persistence =====================================================

    def state(self):
        return ()  # nothing of its own: the negative-balance hint is rebuilt on load

    def load_state(self, state) -> None:
        for a in self.engine._accounts.values():
            if min(a.available, default=0) < 0:
                self.negative.add(a)


def _address(account) -> bytes:
    return account.address


def _renote(account, negative: set) -> None:
    negative.add(account)


@dataclass(slots=True, frozen=True)
class MarginView:
    """The portfolio margin of an account beside naive per-position margin
    (quote units): what netting saves is ``naive_open - loss_open``."""

    equity: int
    available_open: int  # equity - deductions - loss_open: new risk needs >= 0
    available_liq: int  # liquidatable at <= 0
    binding: tuple | None  # (asset id, move ppm) of the largest single-underlying loss
    loss_open: int  # the portfolio's scenario loss (netted, correlated)
    loss_liq: int
    naive_open: int  # sum over positions of |value| x shock, no netting
    naive_liq: int
    naive_available_open: int  # what available margin would be without netting
    naive_available_liq: int
    deductions: int  # lent haircut + interest to term of borrowings

"""Perpetual futures: positions, oracle prices, mark price, funding, the perp
pre-trade margin check.

``PerpClearing`` is the clearing of ``MarketKind.PERP`` markets (the engine
routes by kind, see clearing.py for the R1 / R2 split). It owns:

* **positions** - ``Account.positions[market id] -> Position``: signed size in
  base units (+ long), entry value in quote units (+ paid for a long,
  - received for a short), the funding index it last settled at and a funding
  carry (see below). A fill that grows a position adds its notional to the
  entry value; one that shrinks it removes the pro-rata part of the entry value
  (``ceil(entry * closed / |size|)``: rounded against the account now, in its
  favour later, never created or lost) and pays the difference to the closed
  notional as **realized PnL** into the account's free quote balance; one that
  crosses zero closes, then opens the rest at the same price.
* **the settlement pool** of each market (``PerpMarket.pool``, quote units):
  realized PnL and funding flow between accounts and the pool, never straight
  between two accounts, because the counterparty of a closing trade may be
  opening (its loss is still unrealized). Invariant, exact at every moment:
  ``pool == -sum(entry values) + sum(funding settled)``; it is in
  ``Engine.balance_report()`` beside the fee account.
* **oracle prices** - ``SetOraclePrice(oracle, asset, price)`` from the
  configured oracle address only; quote units per WHOLE token.
* **mark price** - the oracle price, or (``mark = "median"``) the median of
  oracle, book mid and last trade price, all per whole token; a missing book
  mid or last trade counts as the oracle price.
* **funding** - see ``on_block``; applied through a cumulative per-market
  index so settling a position is O(1), when it is touched (any fill of it,
  or a view), never a loop over positions.
* **fees** as spot: in the quote asset, into the fee account; a perp order
  holds only its worst fee (there is no asset to deliver).

Funding, exactly (``D = 10**base_decimals * RATE_SCALE``):

    each Tick:   premium sample = (max(0, impact_bid - oracle) - max(0, oracle - impact_ask))
                                  * RATE_SCALE // oracle        (each part floored; 0 when a
                                  side cannot fill impact_notional, or no oracle price)
    at the first Tick at or after the interval's end (intervals are aligned
    to multiples of funding_interval of block time; a gap of several intervals
    pays once):
                 P    = mean of the samples (rounded toward zero)
                 rate = clamp(P + clamp(I - P, -premium_clamp, premium_clamp), -cap, cap)
                        (I = funding_interest; all in RATE_SCALE parts per interval)
                 index += rate * oracle_price      (an exact integer)
    a position settles  owed = size * (index - its index) + carry   (units of 1/D quote)
                        paid = ceil(owed / D)  (longs pay when the rate is positive)
                        carry = owed - paid * D    in (-D, 0]

Zero-sum rule: every position pays the ceiling of what it exactly owes and
keeps the fraction it overpaid as its carry, which is credited at its next
settlement. Nothing is rounded away: for every account,
``paid so far + carry / D`` equals its exact funding, and the exact funding of
all positions sums to zero at every index step (sizes sum to zero), so longs
pay exactly what shorts receive; the pool holds the fractions in transit
(``pool == -sum(entry) - sum(exact pending funding)`` and, once every position
has settled at the same index, ``pool + sum(entry) = -sum(carry) / D >= 0``).

Reduce-only orders (``PlaceOrder.reduce_only``): the Binance / Bybit rule -
rejected (REDUCE_ONLY_REJECTED) unless the account has a position on the
other side; a quantity above the position is trimmed to it. They are
taker-only (IOC, FOK, MARKET): a resting reduce-only order could later flip a
position that shrank meanwhile, which needs a book-level check (not built).

The margin check (``check_order``): the order fully filled at its limit price
plus the account's other open perp orders assumed filled in their worse
direction must leave opening-level available margin (exchange/risk.py) >= 0;
a reduce-only order passes if it does not lower the available margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import add as _add

from .book import Order
from .clearing import SpotClearing, _forget_fill, _restore_order_money
from .commands import OracleResult, SetOraclePrice
from .errors import ExchangeError, Reason
from .events import Fill, FundingPaid, OracleUpdated, PositionChanged
from .risk import PPM, Portfolio, RiskModel
from .types import FEE_SCALE, RATE_SCALE, MarketKind, MarkMethod, TimeInForce

BUY = 0
_FLAT = (0, 0, 0)  # (size, entry value, funding owed) of no position
# The largest oracle price (quote units per whole token): 2**128 is 3.4e32 dollars a
# token with 6-decimal USDC, far past any real price.
MAX_ORACLE_PRICE = 2**128
_NO_SUMS = (0, 0, 0, 0, 0, 0, 0)  # resting sums of a market without resting orders
_NO_RESTING: dict = {}  # (never written)
# Enum members read through their class cost ~4x a module global (~70 ns):
# every perp order's check reads these.
_GTC = TimeInForce.GTC
_POST_ONLY = TimeInForce.POST_ONLY
PPM_TO_RATE = RATE_SCALE // FEE_SCALE  # config ppm -> RATE_SCALE parts


class Position:
    """One account's position on one perp market (kept while the account
    has it, flat or not: at most one per perp market per account)."""

    __slots__ = ("account", "market", "size", "entry_value", "funding_index", "carry", "snap", "digest_term")

    def __init__(self, account, market: int, funding_index: int) -> None:
        self.account = account
        self.market = market
        self.size = 0  # base units, + long / - short, a whole number of lots
        self.entry_value = 0  # quote units: + paid for a long, - received for a short
        self.funding_index = funding_index  # the market index of the last settlement
        self.carry = 0  # in (-D, 0]: funding overpaid by the ceiling, units of 1/D quote
        self.snap = -1
        self.digest_term = 0

    def digest_encoding(self) -> bytes | None:
        if not self.size and not self.carry and not self.entry_value:
            return None  # flat: the same state as no position at all
        return b"P%b,%d,%d,%d,%d,%d" % (self.account.address, self.market, self.size,
                                         self.entry_value, self.funding_index, self.carry)


class PerpMarket:
    """Funding and mark state of one perp market."""

    __slots__ = ("market", "divisor", "funding_index", "premium_sum", "samples", "next_funding",
                 "last_trade", "last_rate", "pool", "snap", "digest_term")

    def __init__(self, market, decimals: int) -> None:
        self.market = market  # the runtime Market
        self.divisor = 10**decimals * RATE_SCALE  # D: index units per quote unit per base unit
        self.funding_index = 0  # cumulative sum of rate * oracle price
        self.premium_sum = 0  # samples of this interval, RATE_SCALE parts
        self.samples = 0
        self.next_funding = 0  # block time of the next payment; 0 = before the first Tick
        self.last_trade = 0  # price per lot of the last fill; 0 = none yet
        self.last_rate = 0  # the last funding rate paid, RATE_SCALE parts per interval
        self.pool = 0  # quote units: the settlement pool (see the module docstring)
        self.snap = -1
        self.digest_term = 0

    def fields(self) -> tuple:
        return (self.funding_index, self.premium_sum, self.samples, self.next_funding,
                self.last_trade, self.last_rate, self.pool)

    def digest_encoding(self) -> bytes:
        return b"F%d,%d,%d,%d,%d,%d,%d,%d" % (self.market.id, *self.fields())


class OraclePrices:
    """The latest oracle price per asset index (0 = none yet)."""

    __slots__ = ("prices", "digest_term")

    def __init__(self, n_assets: int) -> None:
        self.prices = [0] * n_assets
        self.digest_term = 0

    def digest_encoding(self) -> bytes:
        return b"X" + b",".join(b"%d" % p for p in self.prices)


class PerpClearing(SpotClearing):
    """Clearing of perp markets; also the home of oracle, funding and views.

    Subclasses SpotClearing for ``_move_hold``; the engine's inlined spot
    paths test ``clearing.__class__ is SpotClearing``, so they never run here.
    """

    __slots__ = ("markets", "oracle", "decimals", "model", "now", "_perp_info", "_prices", "_prices_key",
                 "resting_gen", "_spot_info", "_base_ids", "_quote_at", "_valued", "_cap_rates")

    def __init__(self, engine) -> None:
        super().__init__(engine)
        self.markets: dict[int, PerpMarket] = {}  # perp market id -> state
        self.oracle = OraclePrices(engine._n_assets)
        self.decimals = [a.decimals for a in engine.config.assets]
        self.model = None  # the RiskModel, made on first use
        self.now = 0  # Engine._now: block time of the command being checked
        # perp market id -> (Market, base index, base asset id, mark is the oracle, 10**base decimals,
        # lot size, quote asset id)
        self._perp_info: dict = {}
        self._prices: dict = {}  # _prices_for's cache, valid while oracle.prices == _prices_key
        self._prices_key: list | None = None
        self._cap_rates: tuple = (None, {})  # _floor_available's (prices, {asset: (price x shock, divisor)})
        # spot market id -> (Market, lot size, max fee, 10**base decimals): the
        # markets whose resting orders Account.spot_resting sums
        self._spot_info: dict = {}
        self._base_ids: dict = {}  # market id -> its base asset's id (a what-if choice's underlying)
        # The generation of every Account.resting: Engine.revert bumps it (an
        # undo restores orders behind the sums' back), making all of them
        # stale; each is rebuilt from its open orders on its next use.
        self.resting_gen = 0

    def setup(self) -> None:
        """Called by the engine once its markets exist."""
        engine = self.engine
        for mid in sorted(engine._markets):
            m = engine._markets[mid]
            self._base_ids[mid] = engine._asset_ids[m.base]
            if m.kind is MarketKind.PERP:
                pm = PerpMarket(m, self.decimals[m.base])
                self.markets[mid] = pm
                self._perp_info[mid] = (m, m.base, engine._asset_ids[m.base], m.config.mark is MarkMethod.ORACLE,
                                        10**self.decimals[m.base], m.lot_size, engine._asset_ids[m.quote])
                engine._dirty.add(pm)
            elif m.kind is MarketKind.SPOT:
                self._spot_info[mid] = (m, m.lot_size, m.max_fee, 10**self.decimals[m.base])
        engine._dirty.add(self.oracle)
        # _floor_available's balances: the risk quote's index, and (index, asset id,
        # 10**decimals) of every other asset in index order
        quote = self.risk_model().quote
        self._quote_at = engine._asset_index[quote]
        params = self.risk_model()._p
        self._valued = tuple((i, a, params[a][0]) for i, a in enumerate(engine._asset_ids) if a != quote)

    # ==== journalling =====================================================

    def _snap_market(self, pm: PerpMarket) -> None:
        engine = self.engine
        if pm.snap != engine._epoch:
            pm.snap = engine._epoch
            engine._log.append((_restore_perp_market, pm, pm.fields()))
        engine._dirty.add(pm)

    def _snap_position(self, pos: Position) -> None:
        engine = self.engine
        if pos.snap != engine._epoch:
            engine._log.append((_restore_position, pos, pos.size, pos.entry_value, pos.funding_index, pos.carry,
                                pos.snap))
            pos.snap = engine._epoch
        engine._dirty.add(pos)

    def _position(self, account, pm: PerpMarket) -> Position:
        """The account's position on ``pm`` (made when missing), journalled
        and with its funding settled up to the market's index."""
        mid = pm.market.id
        pos = account.positions.get(mid)
        if pos is None:
            pos = Position(account, mid, pm.funding_index)
            account.positions[mid] = pos
            self.engine._log.append((_unlink_position, pos))
        self._snap_position(pos)
        if pos.funding_index != pm.funding_index:
            self._settle_funding(pos, pm)
        return pos

    def _settle_funding(self, pos: Position, pm: PerpMarket) -> None:
        """Pay or receive the funding accrued since the position last settled."""
        owed = pos.size * (pm.funding_index - pos.funding_index) + pos.carry
        pos.funding_index = pm.funding_index
        if not owed:
            return
        d = pm.divisor
        paid = -(-owed // d)  # ceil: rounded against the account, the fraction is carried
        pos.carry = owed - paid * d
        if paid:
            a = pos.account
            self.engine._snap(a)
            self._snap_market(pm)
            a.available[pm.market.quote] -= paid
            pm.pool += paid
            if a.available[pm.market.quote] < 0:
                self.engine._parts["margin"].owes(a)  # borrowed at the next Tick (exchange/margin.py)
            self.engine._dirty.add(a)

    # ==== the resting perp orders' sums (Account.resting) ================

    def resting_of(self, a) -> dict:
        """``a.resting``, rebuilt from its open orders when stale (``_sums``)."""
        if a.resting_gen == self.resting_gen:
            return a.resting
        a.resting = resting = self._sums(a)
        a.resting_gen = self.resting_gen
        return resting

    def _sums(self, a) -> dict:
        """Per perp market id, [buy lots, buy price x lots, buy held, sell
        lots, sell price x lots, sell held, orders] over ``a``'s resting
        orders there (markets without any left out). Sums commute: dict order
        does not matter."""
        resting: dict = {}
        markets = self.markets
        for o in a.open_orders.values():
            mid = o.market
            if mid in markets:
                sums = resting.get(mid)
                if sums is None:
                    sums = resting[mid] = [0, 0, 0, 0, 0, 0, 0]
                k = 3 if o.side else 0
                lots = o.remaining
                sums[k] += lots
                sums[k + 1] += o.price * lots
                sums[k + 2] += o.reserved
                sums[6] += 1
        return resting

    def rested(self, o: Order, sign: int) -> None:
        """Add (``sign`` 1) or take out (-1) a perp order's lots, price x lots
        and hold in its account's sums: called where an order joins or leaves
        the open orders (Engine._attach / _unindex and their inlined copies)
        and, taking out then adding, around a change of a resting order's
        fields (ModifyOrder). A maker's fill is taken out in ``settle``."""
        a = o.account
        if a.resting_gen != self.resting_gen:
            return  # stale: rebuilt from the open orders on its next use
        resting = a.resting
        mid = o.market
        sums = resting.get(mid)
        if sums is None:
            sums = resting[mid] = [0, 0, 0, 0, 0, 0, 0]
        lots = o.remaining
        if sign > 0:
            if o.side:
                sums[3] += lots
                sums[4] += o.price * lots
                sums[5] += o.reserved
            else:
                sums[0] += lots
                sums[1] += o.price * lots
                sums[2] += o.reserved
            sums[6] += 1
        else:
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

    # ==== the resting spot orders' sums (Account.spot_resting) ============
    #
    # Kept only for accounts a portfolio check has read them for (spot_resting
    # not None): the part-1 hot path pays one attribute test. Same generation
    # as Account.resting (an undo makes both stale).

    def spot_resting_of(self, a) -> dict:
        """``a.spot_resting``, rebuilt from its open orders when stale."""
        if a.spot_gen == self.resting_gen:
            return a.spot_resting
        a.spot_resting = spot = self._spot_sums(a)
        a.spot_gen = self.resting_gen
        return spot

    def _spot_sums(self, a) -> dict:
        """Per spot market id, [buy lots, sell lots, lots + each order's
        worst fee (ceil(price x lots x max fee / FEE_SCALE), per order)] over
        ``a``'s resting orders there (markets without any left out)."""
        spot: dict = {}
        info = self._spot_info
        for o in a.open_orders.values():
            mid = o.market
            m = info.get(mid)
            if m is not None:
                sums = spot.get(mid)
                if sums is None:
                    sums = spot[mid] = [0, 0, 0]
                lots = o.remaining
                sums[o.side] += lots
                sums[2] += lots - (-o.price * lots * m[2] // FEE_SCALE)
        return spot

    def spot_rested(self, o: Order, sign: int) -> None:
        """``rested`` for an order of an account whose spot_resting is kept
        (any market kind but perp: only spot markets are summed)."""
        a = o.account
        if a.spot_gen != self.resting_gen:
            return  # stale: rebuilt from the open orders on its next use
        mid = o.market
        m = self._spot_info.get(mid)
        if m is None:
            return  # a lending order
        spot = a.spot_resting
        sums = spot.get(mid)
        if sums is None:
            sums = spot[mid] = [0, 0, 0]
        lots = o.remaining
        cost = lots - (-o.price * lots * m[2] // FEE_SCALE)
        if sign > 0:
            sums[o.side] += lots
            sums[2] += cost
        else:
            sums[o.side] -= lots
            sums[2] -= cost
            if not sums[2]:  # every order counts at least its lots: none left
                del spot[mid]

    def spot_filled(self, maker: Order, lots: int) -> None:
        """A spot maker's fill of ``lots`` (already out of ``maker.remaining``)
        out of its account's spot sums: its lots and the change of its fee term."""
        a = maker.account
        if a.spot_gen != self.resting_gen:
            return
        mid = maker.market
        sums = a.spot_resting.get(mid)
        if sums is None:  # cannot happen (a resting maker is in them); rebuilt if it did
            a.spot_gen = -1
            return
        m = self._spot_info[mid]
        after = maker.remaining
        price_fee = maker.price * m[2]
        sums[maker.side] -= lots
        # its term was remaining + ceil(price x remaining x fee / S), before and after
        sums[2] -= lots - (-price_fee * (after + lots) // FEE_SCALE) + (-price_fee * after // FEE_SCALE)
        if not sums[2]:
            del a.spot_resting[mid]

    def audit(self) -> list[str]:
        """Every up-to-date Account.resting equals its rebuild from the open
        orders (read-only: a wrong one stays as it is)."""
        problems = []
        gen = self.resting_gen
        for a in self.engine._accounts.values():
            if a.resting_gen == gen:
                rebuilt = self._sums(a)
                if a.resting != rebuilt:
                    problems.append(f"resting perp order sums of {a.address.hex()} wrong: {a.resting} != {rebuilt}")
            if a.spot_gen == gen:
                rebuilt = self._spot_sums(a)
                if a.spot_resting != rebuilt:
                    problems.append(f"resting spot order sums of {a.address.hex()} wrong: "
                                    f"{a.spot_resting} != {rebuilt}")
        return problems

    # ==== R1: the pre-trade check and holds ===============================

    def hold_for(self, market, side: int, price: int, lots: int, crosses: bool) -> tuple[int, int]:
        """A perp order holds its worst fee, in the quote asset. A sell that
        crosses fills at the bids, from the best down to its limit: its fee is
        worst at the best bid's price, not at its limit (a hold at the limit let
        a fill's fee overdraw the free balance; found by the portfolio property test)."""
        notional = price * lots
        if crosses and side != BUY:
            best = market.book.bids.best
            if best is not None and best > price:
                notional = best * lots
        rate = market.max_fee if crosses else market.maker_fee
        return market.quote, -(-notional * rate // FEE_SCALE)

    def hold_asset(self, market, side: int) -> int:
        return market.quote

    def _resting_fee(self, market, o: Order, price: int, lots: int) -> int:
        return -(-(o.fee_basis + price * lots * market.maker_fee) // FEE_SCALE) - o.fees_paid

    def resting_hold(self, market, o: Order, price: int, lots: int) -> int:
        """Called by ModifyOrder before it changes anything: the margin check
        of the modified order, then the fee it must hold from now on."""
        if lots > o.remaining or price != o.price:
            self._check_margin(market, o.account, o.side, price, lots, False, replacing=o)
        return self._resting_fee(market, o, price, lots)

    def trim(self, market, o: Order) -> None:
        excess = o.reserved - self._resting_fee(market, o, o.price, o.remaining)
        if excess:
            self._move_hold(o, market.quote, -excess)

    def release(self, market, o: Order) -> None:
        if o.reserved:
            self._move_hold(o, market.quote, -o.reserved)

    def check_order(self, market, account, side: int, price: int, lots: int, tif, reduce_only: bool,
                    crosses: bool) -> int:
        """Everything a new perp order must pass besides the part-1 rules;
        returns its lots (a reduce-only order trimmed to the position)."""
        if reduce_only:
            if tif is _GTC or tif is _POST_ONLY:
                raise ExchangeError(Reason.INVALID_ORDER, "reduce-only orders are IOC, FOK or market")
            pos = account.positions.get(market.id)
            size = pos.size if pos is not None else 0
            if not size or (size > 0) == (side == BUY):
                raise ExchangeError(Reason.REDUCE_ONLY_REJECTED)
            lots = min(lots, abs(size) // market.lot_size)
        if not self.oracle.prices[market.base]:
            raise ExchangeError(Reason.NO_ORACLE_PRICE)
        rests = tif is _GTC or tif is _POST_ONLY
        # _check_margin's fast path first, here (one call less for nearly every order)
        if self._floor_available(account, self.now, (market, side, price, lots, rests)) is None:
            self._check_margin(market, account, side, price, lots, reduce_only, rests=rests, fast=False)
        return lots

    def _check_margin(self, market, account, side, price, lots, reduce_only, replacing=None,
                      rests: bool = True, fast: bool = True) -> None:
        """INSUFFICIENT_MARGIN unless the order, fully filled at its limit price
        (its worst fee paid), with the account's other open perp orders filling
        or not, their profits not counted (``_what_if``), leaves opening-level
        available margin >= 0. An order that may rest (``rests``: GTC,
        post-only, a modified order) is judged as it will then count: filled
        or not, in part or in full, its loss and fee in either way (found by
        the property test: a resting buy that shrank a short passed filled,
        and its unfilled corner left the account below zero).
        A reduce-only order also passes if it does not lower that margin (an
        account under water may always shrink its risk)."""
        now = self.now  # Engine._now
        order = (market, side, price, lots, rests)
        if fast and replacing is None and self._floor_available(account, now, order) is not None:
            return  # at or above zero (the full path's same figure; ``fast`` False: check_order asked it)
        model = self.model or self.risk_model()
        portfolio, prices = self.portfolio_of(account, now, order, replacing, True, True)
        after = self._available(model, portfolio, prices)
        if after >= 0:
            return
        if reduce_only:
            # Under water, a reduce-only order passes if it lowers the margin
            # neither with the open orders counted nor without them (their worst
            # corner may stay the same while the position itself gets worse;
            # found by review).
            portfolio, prices = self.portfolio_of(account, now, None, replacing, True, True)
            if after >= self._available(model, portfolio, prices, exact=True):
                bare_after = self._available(model, *self.portfolio_of(
                    account, now, (market, side, price, lots, False), replacing, True, True, resting=False),
                    exact=True)
                bare_before = self._available(model, *self.portfolio_of(account, now, None, None, False, True),
                                              exact=True)
                if bare_after >= 0 or bare_after >= bare_before:
                    return
        raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {after}")

    def check_withdrawal(self, account, asset: int, amount: int, now: int) -> None:
        """A withdrawal from an account with perp positions or resting perp
        orders, loans or a negative balance must leave opening-level available
        margin >= 0 (open perp orders assumed filled). An account without any
        of them passes at once (nothing it holds can take it below zero):
        whether a flat Position object lingers must not decide anything, as it
        is not part of the state a restart restores (found by review).

        An asset without a price counts as worth nothing, so withdrawing it
        changes no figure; but the account is still evaluated, so that owing
        an unpriced asset - a Withdraw that has just borrowed it - raises
        NO_ORACLE_PRICE, as a borrow bid for it does (found by review)."""
        if not self._margined(account):
            return
        key = self.engine._asset_ids[asset]
        if self._floor_available(account, now, None, ((key, -amount),)) is not None:
            return  # at or above zero (the full path's same figure)
        portfolio, prices = self.portfolio_of(account, now, None, None, True, True)
        model = self.risk_model()
        if key not in prices:
            self._available(model, portfolio, prices)
            return
        portfolio.balances[key] = portfolio.balances.get(key, 0) - amount
        available = self._available(model, portfolio, prices)
        if available < 0:
            raise ExchangeError(Reason.INSUFFICIENT_MARGIN, f"available margin {available}")

    def _margined(self, account) -> bool:
        """A perp position (or a funding remainder), a resting perp order, a
        loan or a negative balance: what a withdrawal must be checked against."""
        if account.loans or min(account.available) < 0:
            return True
        for pos in account.positions.values():
            if pos.size or pos.carry:
                return True
        return bool(account.open_orders) and bool(self.resting_of(account))

    @staticmethod
    def _available(model, portfolio, prices, exact: bool = False) -> int:
        """Opening-level available margin, all a pre-trade check needs
        (``RiskModel.available_open``: ``_evaluate(...).available_open``),
        exactly when it is below zero; at or above zero, unless ``exact``,
        possibly a lower bound at or above zero (RiskModel._worst): a check
        only asks "at least zero?" - and, under water, compares exact figures."""
        try:
            if portfolio.choices:  # model._available's first branch, one call less on the checks' hot path
                return model._worst(portfolio, prices, 1, 5, None if exact else 0)[0]
            return model._available(portfolio, prices, 1, 5)
        except KeyError as missing:  # a held asset without an oracle price
            raise ExchangeError(Reason.NO_ORACLE_PRICE, f"asset {missing}") from None

    @staticmethod
    def _evaluate(model, portfolio, prices):
        try:
            return model.evaluate(portfolio, prices)
        except KeyError as missing:  # a held asset without an oracle price
            raise ExchangeError(Reason.NO_ORACLE_PRICE, f"asset {missing}") from None

    def risk_model(self) -> RiskModel:
        if self.model is None:
            self.model = RiskModel.from_config(self.engine.config)
        return self.model

    def portfolio_of(self, account, now: int, order=None, replacing=None,
                     assume_orders: bool = True, margin_only: bool = False,
                     resting: bool = True) -> tuple[Portfolio, dict]:
        """(risk.Portfolio, prices by asset id) of ``account``.

        Spot balances count free + held; each perp position at its mark with
        its pending funding; lending terms from exchange/lending.py when it
        is there. With ``order = (market, side, price, lots)`` (and for the
        margin check generally) the what-if of the pre-trade check: the order
        filled in full at its price paying its worst fee, and every other
        open perp order of the account (``replacing`` excluded) filling or
        not: such markets come as ``Portfolio.choices`` (a value without the
        orders' profits, a size range) and the risk model takes the worst
        (``_what_if``, ``RiskModel._worst``).

        ``resting=False``: the new order alone, the open orders left out (a
        check's "without the open orders" figure).

        ``margin_only``: the lending terms in ``LendingClearing.margin_terms``'
        form, for callers that read available-margin figures alone (the
        checks, the re-banding): the same figures, but not the same equity.

        The hot path of every pre-trade check (and of every re-banding):
        per-market constants come from ``_perp_info``, the prices dict is
        rebuilt only when an oracle price changed (``_prices_for``)."""
        engine = self.engine
        # every asset, zeros included (the risk model skips them; Engine.portfolio drops them)
        balances = dict(zip(engine._asset_ids, map(_add, account.available, account.reserved)))
        positions = self._positions(account) if account.positions else {}
        choices = ()
        if order is not None or (assume_orders and account.open_orders):
            choices = self._what_if(account, positions, balances, order, replacing, resting, margin_only)
        # A check (the margin-only what-if) values positions at the worse of the
        # mark and the oracle: a median mark moves with the book, which the
        # account's own orders (or a colluder's, cancelled later) help make
        # (found by review). Views and the liquidation level keep the mark.
        guarded = margin_only and (order is not None or assume_orders)
        perps = self._perp_terms(positions, guarded, margin_only) if positions else []
        if choices:
            base_ids = self._base_ids
            choices = [(base_ids[mid], value, low, high) for mid, _, value, low, high in choices]
        if account.loans:
            if margin_only:
                lent, borrowed = engine.lending.margin_terms(account, now)
            else:
                lent, borrowed = engine.lending.terms_by_id(account, now)
        else:
            lent = borrowed = []
        prices = self._prices if self.oracle.prices == self._prices_key else self._prices_for()
        if len(prices) < engine._n_assets:
            for key in [k for k, v in balances.items() if k not in prices and v > 0]:
                del balances[key]  # no price: counted as worth nothing (against the account)
        return Portfolio(balances, perps, lent, borrowed, choices), prices

    def _positions(self, account) -> dict:
        """Per perp market id, (size, entry value, funding owed now) of the
        account's positions that are not flat (or carry funding)."""
        positions = {}
        markets = self.markets
        for mid, pos in account.positions.items():
            size = pos.size
            carry = pos.carry
            if size or carry:
                pm = markets[mid]
                # pending_funding, inlined (nothing pending: settled at the index, no carry)
                if carry or pm.funding_index != pos.funding_index:
                    owed = size * (pm.funding_index - pos.funding_index) + carry
                    positions[mid] = (size, pos.entry_value, -(-owed // pm.divisor))
                else:
                    positions[mid] = (size, pos.entry_value, 0)
        return positions

    def _perp_terms(self, positions: dict, guarded: bool, margin_only: bool) -> list:
        """Portfolio.perps of ``positions`` (those the what-if left):
        [(underlying id, size, entry value, mark, funding owed)]; ``guarded``
        (a check): at the worse of the mark and the oracle."""
        perps = []
        info = self._perp_info
        oracle = self.oracle.prices
        # The margin-only figures are sums (and a loss symmetric in the
        # underlyings), so they take the positions in any order; views sort.
        for mid in positions if margin_only or len(positions) < 2 else sorted(positions):
            size, entry, owed = positions[mid]
            if not size and not owed:
                continue
            m, base, base_id, oracle_mark, one, lot_size, _ = info[mid]
            mark = oracle[base]
            if not mark:  # no oracle price (yet): value it at its entry price
                mark = entry * one // size if size else 0
            elif not oracle_mark:
                # mark_price, inlined: the median of oracle, book mid and last trade
                book = m.book
                bid, ask = book.bids.best, book.asks.best
                mid_price = ((bid + ask) // 2 * one // lot_size
                             if bid is not None and ask is not None else mark)
                last = self.markets[mid].last_trade
                last = last * one // lot_size if last else mark
                # the median of the three
                if mark > mid_price:
                    mark, mid_price = mid_price, mark
                mark = mark if last < mark else (mid_price if last > mid_price else last)
                if guarded:
                    index = oracle[base]
                    mark = (mark if mark < index else index) if size > 0 else (mark if mark > index else index)
            perps.append((base_id, size, entry, mark, owed))
        return perps

    def _floor_available(self, account, now: int, order, moves=None, extra=None) -> int | None:
        """The check's figure ``_available(model, portfolio, prices)`` of
        ``portfolio, prices = portfolio_of(account, now, order, None, True,
        True)`` - with ``moves`` ((asset id, amount) pairs) added to
        ``portfolio.balances`` first, as a spot fill's or a withdrawal's check
        does, or ``extra`` (asset id, value, low, high) added to its choices,
        as a resting spot order's check does (AutoBorrowing._resting) - when
        it is at or above zero, the answer of nearly every check:
        RiskModel._worst's cheap bound (or, without choices, the exact
        figure). None when the full path must answer: the figure below zero,
        an asset without an oracle price, or a what-if market the mark-to-market
        rule does not cover (no oracle price, another quote: that rule moves
        cash into a balance or keeps a position).

        One pass, without the Portfolio and without the intermediate parts the
        full path builds (the positions dict, the choices and perps lists, the
        balances dict): ``_positions``, ``_what_if`` (guarded, no
        ``replacing``), ``_perp_terms`` (guarded, margin-only),
        ``RiskModel._holdings``, and ``_worst``'s pass over the choices, with
        the same arithmetic in the same order (the net exposures ``delta``
        are built in ``_holdings``' order: balances, positions, lent,
        borrowed; a choice's range adds its underlying's exposure, which the
        what-if does not change, once they are all known).
        tests/exchange/test_floor_available.py compares it with the full path."""
        engine = self.engine
        prices = self._prices if self.oracle.prices == self._prices_key else self._prices_for()
        if len(prices) < engine._n_assets:
            return None
        model = self.model or self.risk_model()
        params = model._p
        quote_id = model.quote
        oracle = self.oracle.prices
        info = self._perp_info
        open_orders = account.open_orders
        whatif = order is not None or open_orders
        if whatif:
            resting = account.resting if account.resting_gen == self.resting_gen else self.resting_of(account)
        else:
            resting = _NO_RESTING
        new_mid = None
        if order is not None:
            new_market, new_side, new_price, new_lots, new_rests = order
            new_mid = new_market.id
        try:
            # ---- the balances (RiskModel._holdings' first loop)
            deductions = 0
            delta: dict = {}  # per underlying: net exposure, base units
            get = delta.get
            if moves:
                balances = dict(zip(engine._asset_ids, map(_add, account.available, account.reserved)))
                for key, amount in moves:
                    balances[key] += amount
                equity = 0
                for a, amount in balances.items():
                    if a == quote_id:
                        equity += amount
                    elif amount:
                        equity += amount * prices[a] // params[a][0]
                        delta[a] = amount
            else:
                # the same sums by asset index: the quote's, then the others' in order
                free = account.available
                hold = account.reserved
                q = self._quote_at
                equity = free[q] + hold[q]
                for i, a, scale in self._valued:
                    amount = free[i] + hold[i]
                    if amount:
                        equity += amount * prices[a] // scale
                        delta[a] = amount
            # ---- the positions (_positions; _perp_terms guarded; _holdings' second loop);
            # those of the what-if's markets set aside for it
            held = None
            if account.positions:
                markets = self.markets
                for mid, pos in account.positions.items():
                    size = pos.size
                    carry = pos.carry
                    if not size and not carry:
                        continue
                    pm = markets[mid]
                    # pending_funding, inlined (nothing pending: settled at the index, no carry)
                    if carry or pm.funding_index != pos.funding_index:
                        owed = -(-(size * (pm.funding_index - pos.funding_index) + carry) // pm.divisor)
                    else:
                        owed = 0
                    if mid in resting or mid == new_mid:
                        if held is None:
                            held = {}
                        held[mid] = (size, pos.entry_value, owed)
                        continue
                    if not size and not owed:
                        continue
                    entry = pos.entry_value
                    m, base, base_id, oracle_mark, one, lot_size, _ = info[mid]
                    mark = oracle[base]
                    if not mark:  # no oracle price (yet): value it at its entry price
                        mark = entry * one // size if size else 0
                    elif not oracle_mark:
                        # mark_price, inlined: the median of oracle, book mid and last trade
                        book = m.book
                        bid, ask = book.bids.best, book.asks.best
                        mid_price = ((bid + ask) // 2 * one // lot_size
                                     if bid is not None and ask is not None else mark)
                        last = pm.last_trade
                        last = last * one // lot_size if last else mark
                        if mark > mid_price:
                            mark, mid_price = mid_price, mark
                        mark = mark if last < mark else (mid_price if last > mid_price else last)
                        index = oracle[base]  # guarded: the worse of the mark and the oracle
                        mark = (mark if mark < index else index) if size > 0 else (mark if mark > index else index)
                    equity += size * mark // params[base_id][0] - entry - owed
                    delta[base_id] = get(base_id, 0) + size
            # ---- the loans (lending.margin_terms; _holdings' last loops)
            if account.loans:
                lent, borrowed = engine.lending.margin_terms(account, now)
                for a, amount in lent:
                    if a == quote_id:
                        equity += amount
                        deductions += amount - amount * model._quote_cf // PPM
                    else:
                        pa = params[a]
                        v = amount * prices[a]
                        value = v // pa[0]
                        equity += value
                        deductions += value - v * pa[3] // pa[4]
                        delta[a] = get(a, 0) + amount
                for a, owed, interest in borrowed:
                    if a == quote_id:
                        equity -= owed
                        deductions += interest
                    else:
                        p = prices[a]
                        scale = params[a][0]
                        equity += (-owed * p) // scale
                        deductions -= (-interest * p) // scale
                        delta[a] = get(a, 0) - owed
            base_value = equity - deductions
            # ---- the what-if (_what_if's mark-to-market rule, guarded): per market a
            # value into the figure and a range of sizes (ranges: per underlying, its
            # choices' [low, high] summed; the exposure in delta added below)
            ranges: dict = {}
            if whatif:
                items = resting.items()
                if new_mid is not None and new_mid not in resting:
                    items = [*items, (new_mid, _NO_SUMS)]
                perp_orders = 0
                for mid, sums in items:  # per market, independent: dict order does not matter
                    m, base, base_id, oracle_mark, one, lot, quote = info[mid]
                    bought, buy_notional, buy_held, sold, sell_notional, sell_held, count = sums
                    perp_orders += count
                    index = oracle[base]
                    if quote != quote_id or not index:
                        return None  # the old rule (cash into a balance, a position kept): the full path
                    size, entry, owed = held.get(mid, _FLAT) if held is not None else _FLAT
                    if oracle_mark:
                        below = above = index
                    else:
                        # _mark_range, inlined: wherever the account's own actions can
                        # take the median mark - the lower and the higher of the oracle,
                        # the last trade and the new order's prices (its first fill at
                        # the best opposite price when it crosses); the book's mid drops out
                        below = above = index
                        traded = self.markets[mid].last_trade
                        if traded:
                            last = traded * one // lot
                            if last < below:
                                below = last
                            else:
                                above = last
                        if mid == new_mid:
                            v = new_price * one // lot
                            if v < below:
                                below = v
                            elif v > above:
                                above = v
                            if new_side == BUY:
                                best = m.book.asks.best
                                crossing = best is not None and best <= new_price
                            else:
                                best = m.book.bids.best
                                crossing = best is not None and best >= new_price
                            if crossing:
                                v = best * one // lot
                                if v < below:
                                    below = v
                                elif v > above:
                                    above = v
                    value = size * (below if size > 0 else above) // one - entry - owed
                    buy_ref = lot * below  # of one lot, times ``one``
                    sell_ref = lot * above
                    losses = 0
                    low = high = 0
                    if mid == new_mid:  # the order itself fills (its worst fee paid)
                        lots = new_lots
                        if new_side == BUY:
                            against = lots * (buy_ref - new_price * one)
                        else:
                            against = lots * (new_price * one - sell_ref)
                        if against < 0:
                            losses += against
                        value -= -(new_price * lots * new_market.max_fee // -FEE_SCALE) + lots
                        if not new_rests:
                            size += lots * lot if new_side == BUY else -lots * lot
                        elif new_side == BUY:
                            high = lots
                        else:
                            low = lots
                    if bought and (m.book.bids.best or 0) * one > buy_ref:
                        losses += self._losses(account, mid, BUY, None, buy_ref, one)
                    if sold and (m.book.asks.best if m.book.asks.best is not None else sell_ref) * one < sell_ref:
                        losses += self._losses(account, mid, 1, None, sell_ref, one)
                    value -= buy_held + sell_held + bought + sold
                    if losses:
                        value += losses // one
                    base_value += value
                    low = size - (sold + low) * lot
                    high = size + (bought + high) * lot
                    was = ranges.get(base_id)
                    if was is None:
                        ranges[base_id] = [low, high]
                    else:
                        was[0] += low
                        was[1] += high
                if len(open_orders) > perp_orders:
                    # resting spot orders too: _spot_what_if, inlined (no replacing)
                    spot = (account.spot_resting if account.spot_gen == self.resting_gen
                            else self.spot_resting_of(account))
                    if spot:
                        ids = engine._asset_ids
                        spot_info = self._spot_info
                        for mid, (bought, sold, costs) in spot.items():  # sums: any order
                            m, lot, _, scale = spot_info[mid]
                            if not costs or ids[m.quote] != quote_id:
                                continue
                            bought *= lot  # base units
                            sold *= lot
                            base = m.base
                            worth = lot * oracle[base]  # a lot's worth at the oracle, times ``scale``
                            losses = 0
                            if bought:
                                bid = m.book.bids.best
                                if bid is None or bid * scale > worth:
                                    losses += self._spot_losses(account, mid, BUY, None, worth, scale)
                            if sold:
                                ask = m.book.asks.best
                                if ask is None or ask * scale < worth:
                                    losses += self._spot_losses(account, mid, 1, None, worth, scale)
                            value = losses // scale - costs
                            if not oracle[base]:
                                if value:
                                    return None  # worth nothing: the value into the quote balance (full path)
                                continue
                            base_value += value
                            asset = ids[base]
                            was = ranges.get(asset)
                            if was is None:
                                ranges[asset] = [-sold, bought]
                            else:
                                was[0] -= sold
                                was[1] += bought
            if extra is not None:
                asset, value, low, high = extra
                base_value += value
                was = ranges.get(asset)
                if was is None:
                    ranges[asset] = [low, high]
                else:
                    was[0] += low
                    was[1] += high
            elif not ranges:  # RiskModel._available's exact figure
                available = base_value - model._loss(delta, prices, 1, 5)
                return available if available >= 0 else None
            # RiskModel._loss_cap, inlined (every price is there; the sum commutes):
            # per underlying its single-underlying loss at its largest |exposure|,
            # an underlying with choices ranging over their summed range around
            # its exposure in delta
            # (price x shock, its divisor) per asset: made once per prices dict
            rates = self._cap_rates
            if rates[0] is not prices:
                rates = self._cap_rates = (prices, {a: (p * params[a][1], params[a][4])
                                                    for a, p in prices.items() if a in params})
            rates = rates[1]
            cap = 0
            for asset, (low, high) in ranges.items():
                d = get(asset)
                if d:
                    low += d
                    high += d
                x = low if low >= 0 else -low
                if high > x or -high > x:
                    x = high if high >= 0 else -high
                if x:
                    rate, den = rates[asset]
                    cap += -(-x * rate // den)
            for asset, d in delta.items():
                if d and asset not in ranges:
                    rate, den = rates[asset]
                    cap += -(-(d if d >= 0 else -d) * rate // den)
            bound = base_value - cap
        except KeyError as missing:  # (cannot happen: every asset has a price) as _available
            raise ExchangeError(Reason.NO_ORACLE_PRICE, f"asset {missing}") from None
        return bound if bound >= 0 else None

    def _mark(self, mid: int) -> int:
        """The mark of perp market ``mid`` whose underlying has an oracle price
        (portfolio_of's inlined rule: the oracle, or the median of oracle, book
        mid and last trade)."""
        m, base, _, oracle_mark, one, lot_size, _ = self._perp_info[mid]
        mark = self.oracle.prices[base]
        if oracle_mark:
            return mark
        book = m.book
        bid, ask = book.bids.best, book.asks.best
        mid_price = (bid + ask) // 2 * one // lot_size if bid is not None and ask is not None else mark
        last = self.markets[mid].last_trade
        last = last * one // lot_size if last else mark
        # the median of the three
        if mark > mid_price:
            mark, mid_price = mid_price, mark
        return mark if last < mark else (mid_price if last > mid_price else last)

    def _mark_range(self, mid: int, index: int, new) -> tuple[int, int]:
        """For a check: bounds ``(low, high)`` of where the median mark of
        ``mid`` can be after the account's own actions - the lower and the
        higher of the oracle and the last trade, widened by the new order's
        price (a fill of it sets the last trade there) and, if it crosses, the
        best opposite price (its first fill). The median of three lies between
        any two of them, so the book's mid - which orders move, the account's
        own too, and a cancel or a modification is never checked - drops out
        (found by review: a check at the mark its own bid propped up, then a
        cancel, left the account 3,994 below zero; its own resting bid, once
        filled, moved the last trade against its short; a crossing buy lowered
        the last trade against its long)."""
        m, _, _, _, one, lot_size, _ = self._perp_info[mid]
        last = self.markets[mid].last_trade
        low = high = index
        if last:
            last = last * one // lot_size
            if last < low:
                low = last
            else:
                high = last
        if new is not None and new[0] == mid:
            side, price = new[1], new[2]
            ends = [price]
            book = m.book
            if side == BUY:
                ask = book.asks.best
                if ask is not None and ask <= price:
                    ends.append(ask)
            else:
                bid = book.bids.best
                if bid is not None and bid >= price:
                    ends.append(bid)
            for per_lot in ends:
                v = per_lot * one // lot_size
                if v < low:
                    low = v
                elif v > high:
                    high = v
        return low, high

    def _prices_for(self) -> dict:
        """Prices by asset id (the quote at 10**decimals, assets without an
        oracle price left out), rebuilt only when an oracle price changed.
        Callers must not mutate it."""
        oracle = self.oracle.prices
        if oracle != self._prices_key:
            engine = self.engine
            ids = engine._asset_ids
            prices = {ids[i]: p for i, p in enumerate(oracle) if p}
            quote = self.risk_model().quote
            prices[quote] = 10**self.decimals[engine._asset_index[quote]]
            self._prices = prices
            self._prices_key = oracle[:]
        return self._prices

    def _what_if(self, account, positions: dict, balances: dict, order, replacing, with_resting: bool = True,
                 guarded: bool = False, ordered: bool = True) -> list:
        """The open-orders part of ``portfolio_of`` (see its docstring); returns
        ``[(market id, funding owed, value, low size, high size)]`` by market
        id (``ordered`` False: in no particular order, for the fast check,
        which only sums them) for the markets whose underlying has an oracle
        price and whose quote is the model's (left out of ``positions``).

        The new order fills (its worst fee paid); each resting order may fill
        or not, in part or in full - the account does not choose, and a
        cancel is never checked. So a market's position counts at a value
        and a size range: marked to market, a fill of q lots at price p moves
        the position's value by exactly p*q less the mark value of its base
        units for a sell (the opposite for a buy), less its fee, up to a unit
        of rounding (the floor of the mark value; a fill is at least a lot);
        ``value`` is the position's value now plus every fill's loss against
        the mark - or the oracle, whichever is worse for that order (a median
        mark moves with the book the account's own orders help make) - never
        its profit, less every held fee and a unit per lot -
        at or below the value after any of its fills (tests/exchange/
        test_fast_checks.py replays the corners) - and the size runs from
        every sell filled to every buy filled (the loss is convex in it: its
        worst is at an end; RiskModel._worst takes the worst over the
        markets). The losses need the orders themselves only when the book's
        best bid is above the mark or its best ask below it (every order of
        the account is at or behind the best); otherwise the resting sums
        (``Account.resting``) give it all. Before, resting orders were counted
        filled at their prices on one side per market - the side of the
        larger position - and an in-the-money order (a buy far below the
        mark) covered an under-margined one the trader then kept alone by
        cancelling it (found by review, and in two more forms by a review of
        the first fix).

        A market whose underlying has no oracle price (or another quote: a
        config.load refuses such perp markets since session 6) keeps the old
        rule, exactly: the new order filled, then the side (all buys
        or all sells) that leaves the larger position (ties: BUY), from the
        sums where every fill grows it and a replay by order id otherwise.

        ``_floor_available`` carries a copy of the mark-to-market rule (and of
        ``_positions``, ``_perp_terms``, ``_mark_range`` and
        ``_spot_what_if``) for the checks' fast path; tests/exchange/
        test_floor_available.py compares the two: change both."""
        if with_resting:
            resting = account.resting if account.resting_gen == self.resting_gen else self.resting_of(account)
        else:  # the new order alone (``resting=False``: the check's "without the open orders")
            resting = {}
            replacing = None
        new = None
        if order is not None:  # (market id, side, price, lots, its worst fee, may rest)
            m, side, price, lots, rests = order
            new = (m.id, side, price, lots, -(price * lots * m.max_fee // -FEE_SCALE), rests)
        if replacing is not None and replacing.market in resting:
            # a modified perp order's old self is out of the what-if (a spot one: _spot_what_if)
            mid = replacing.market
            resting = dict(resting)
            sums = resting[mid] = list(resting[mid])
            k = 3 if replacing.side else 0
            lots_out = replacing.remaining
            sums[k] -= lots_out
            sums[k + 1] -= replacing.price * lots_out
            sums[k + 2] -= replacing.reserved
            sums[6] -= 1
            if not (sums[0] or sums[3]):
                del resting[mid]  # its only order: the market is out of the what-if
        info = self._perp_info
        quote_id = (self.model or self.risk_model()).quote
        oracle = self.oracle.prices
        choices = []
        perp_orders = 0  # the resting perp orders counted (the rest of the open orders are not perp)
        if new is not None and new[0] not in resting:
            resting = dict(resting)
            resting[new[0]] = _NO_SUMS
        for mid, sums in resting.items():  # per market, independent: dict order does not matter
            m, base, base_id, oracle_mark, one, lot, quote = info[mid]
            size, entry, owed = positions.get(mid, _FLAT)
            bought, buy_notional, buy_held, sold, sell_notional, sell_held, count = sums
            perp_orders += count
            if quote == quote_id and oracle[base]:
                # Mark to market: each fill moves the position's value by its
                # price against the mark (less its fee, less a unit of rounding
                # per lot); a profit is never counted (the order may never
                # fill, and a cancel is not checked), a loss always is. The
                # exposure runs from every sell filled to every buy filled.
                index = oracle[base]
                if oracle_mark:
                    mark = below = above = index
                else:  # the lower and the higher of the mark and the oracle
                    mark = self._mark(mid)
                    if guarded:  # a check: wherever the account's own actions can take the mark
                        below, above = self._mark_range(mid, index, new)
                    elif mark < index:
                        below, above = mark, index
                    else:
                        below, above = index, mark
                # guarded (a check): the position at the worse of mark and oracle
                value = size * ((below if size > 0 else above) if guarded else mark) // one - entry - owed
                # An order's loss is measured against the worse of the mark and
                # the oracle for it: a median mark moves with the book, which the
                # account's own orders help make (found by review: its own bid
                # lifted the mark above the bid, its loss counted nothing).
                buy_ref = lot * below  # of one lot, times ``one``
                sell_ref = lot * above
                losses = 0  # sum of lots x (price against the reference), times ``one``, where negative
                low = high = 0  # the new order's share of the range (lots) when it may rest
                if new is not None and new[0] == mid:  # the order itself fills (its worst fee paid)
                    _, side, price, lots, fee, rests = new
                    against = lots * (buy_ref - price * one) if side == BUY else lots * (price * one - sell_ref)
                    if against < 0:
                        losses += against
                    value -= fee + lots
                    if not rests:
                        size += lots * lot if side == BUY else -lots * lot
                    elif side == BUY:  # filled or not, as a resting order
                        high = lots
                    else:
                        low = lots
                if bought and (m.book.bids.best or 0) * one > buy_ref:
                    losses += self._losses(account, mid, BUY, replacing, buy_ref, one)
                if sold and (m.book.asks.best if m.book.asks.best is not None else sell_ref) * one < sell_ref:
                    losses += self._losses(account, mid, 1, replacing, sell_ref, one)
                value -= buy_held + sell_held + bought + sold
                if losses:
                    value += losses // one
                positions.pop(mid, None)
                choices.append((mid, owed, value, size - (sold + low) * lot, size + (bought + high) * lot))
                continue
            cash = 0
            if new is not None and new[0] == mid:  # (no oracle price / another quote) the order fills first
                _, side, price, lots, fee, _ = new
                size, entry, realized = trade(size, entry, lots * lot if side == BUY else -lots * lot,
                                              price * lots, price, lot)
                cash = realized - fee
            if not bought:
                buys = (size, entry, 0)
            elif size >= 0:  # every fill grows the long: nothing realized
                buys = (size + bought * lot, entry + buy_notional, -buy_held)
            else:
                buys = self._replay(account, mid, BUY, replacing, size, entry, 0, lot)
            if not sold:
                sells = (size, entry, 0)
            elif size <= 0:  # every fill grows the short: nothing realized
                sells = (size - sold * lot, entry - sell_notional, -sell_held)
            else:
                sells = self._replay(account, mid, 1, replacing, size, entry, 0, -lot)
            size, entry, side_cash = sells if abs(sells[0]) > abs(buys[0]) else buys
            positions[mid] = (size, entry, owed)
            cash += side_cash
            if cash:
                balances[quote] = balances.get(quote, 0) + cash
        if with_resting and len(account.open_orders) > perp_orders + (replacing is not None):
            self._spot_what_if(account, replacing, balances, choices, oracle, quote_id)
        if ordered and len(choices) > 1:  # (the fast check's sums do not need it)
            choices.sort()
        return choices

    def _spot_what_if(self, account, replacing, balances: dict, choices: list, oracle, quote_id) -> None:
        """The account's resting SPOT orders in the what-if, as the perp ones:
        per spot market quoted in the model's quote, one more choice - the base
        asset's exposure anywhere from every sell filled to every buy filled,
        at a value of every order's loss against the oracle (never its profit)
        less its worst fee and a unit per lot (the base balance's value is a
        floor); an unpriced base is worth nothing, so a buy costs its whole
        notional and carries no exposure (found by review: a spot bid far above
        the oracle, rested before any perp exposure, filled after it)."""
        spot = account.spot_resting if account.spot_gen == self.resting_gen else self.spot_resting_of(account)
        if not spot:
            return
        if replacing is not None and replacing.market in spot:  # its old self out (as _what_if's perp sums)
            mid = replacing.market
            spot = dict(spot)
            sums = spot[mid] = list(spot[mid])
            lots = replacing.remaining
            sums[replacing.side] -= lots
            sums[2] -= lots - (-replacing.price * lots * self._spot_info[mid][2] // FEE_SCALE)
        ids = self.engine._asset_ids
        info = self._spot_info
        for mid, (bought, sold, costs) in spot.items():  # sums (and choices sorted later): any order
            m, lot, _, scale = info[mid]
            if not costs or ids[m.quote] != quote_id:
                continue
            bought *= lot  # base units
            sold *= lot
            base = m.base
            worth = lot * oracle[base]  # a lot's worth at the oracle, times ``scale``
            losses = 0  # sum of lots x (price against the oracle) x scale, where negative
            # Every order of the account is at or behind its side's best price:
            # none is worse than the oracle unless the best is (as _what_if's perp losses).
            if bought:
                bid = m.book.bids.best
                if bid is None or bid * scale > worth:
                    losses += self._spot_losses(account, mid, BUY, replacing, worth, scale)
            if sold:
                ask = m.book.asks.best
                if ask is None or ask * scale < worth:
                    losses += self._spot_losses(account, mid, 1, replacing, worth, scale)
            value = losses // scale - costs
            if oracle[base]:
                choices.append((mid, None, value, -sold, bought))
            elif value:  # worth nothing: no exposure, the value alone
                balances[quote_id] = balances.get(quote_id, 0) + value

    def _spot_losses(self, account, mid: int, side: int, replacing, worth: int, scale: int) -> int:
        """Sum over ``side``'s resting orders on spot market ``mid`` of lots x
        (price x scale against ``worth``, a lot's worth at the oracle times
        scale) where that is negative (a buy above the oracle, a sell below)."""
        total = 0
        for o in account.open_orders.values():
            if o.market == mid and o.side == side and o is not replacing:
                against = worth - o.price * scale if side == BUY else o.price * scale - worth
                if against < 0:
                    total += o.remaining * against
        return total

    def _losses(self, account, mid: int, side: int, replacing, worth: int, one: int) -> int:
        """Sum over ``side``'s resting orders on ``mid`` of lots x (price against
        the mark), times ``one``, where that is negative (a buy above the mark,
        a sell below it)."""
        total = 0
        for o in account.open_orders.values():
            if o.market == mid and o.side == side and o is not replacing:
                against = worth - o.price * one if side == BUY else o.price * one - worth
                if against < 0:
                    total += o.remaining * against
        return total

    def _replay(self, account, mid: int, side: int, replacing, size: int, entry: int, cash: int,
                step: int) -> tuple[int, int, int]:
        """``side``'s resting orders on ``mid`` filled one by one, by order id,
        against a position they shrink (PnL realized on the way)."""
        lot = abs(step)
        mine = [o for o in account.open_orders.values() if o.market == mid and o.side == side and o is not replacing]
        if len(mine) > 1:
            mine.sort(key=_order_id)
        for o in mine:
            price = o.price
            lots = o.remaining
            size, entry, realized = trade(size, entry, lots * step, price * lots, price, lot)
            cash += realized - o.reserved
        return size, entry, cash

    # ==== R2: settlement ==================================================

    def settle(self, market, taker: Order, outcomes: list, events: list, now: int) -> int:
        """Apply match outcomes: fees as spot, positions, realized PnL."""
        engine = self.engine
        log_append = engine._log.append
        epoch = engine._epoch
        dirty_add = engine._dirty.add
        fee_account = engine._fee_account
        lot = market.lot_size
        quote = market.quote
        maker_rate = market.maker_fee
        taker_rate = market.taker_fee
        market_id = market.id
        pm = self.markets[market_id]
        taker_account = taker.account
        taker_side = taker.side
        sign = 1 if taker_side == BUY else -1
        keep_fills = engine._fills_kept
        push = events.append
        gen = self.resting_gen
        self._snap_taker(taker, fee_account)
        self._snap_market(pm)
        dirty_add(taker_account)
        dirty_add(fee_account)
        taker_position = self._position(taker_account, pm)
        filled = 0
        taker_left = taker.quantity
        for maker, lots in outcomes:
            if lots <= 0:
                self._removed_maker(market, maker, lots, events)
                continue
            filled += lots
            taker_left -= lots
            price = maker.price
            notional = price * lots
            maker_account = maker.account
            if maker.snap != epoch:
                maker.snap = epoch
                log_append((_restore_order_money, maker, maker.reserved, maker.fee_basis, maker.fees_paid))
            engine._snap(maker_account)
            basis = taker.fee_basis
            taker.fee_basis = after = basis + notional * taker_rate
            taker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            taker.fees_paid += taker_fee
            basis = maker.fee_basis
            maker.fee_basis = after = basis + notional * maker_rate
            maker_fee = (basis // -FEE_SCALE) - (after // -FEE_SCALE)
            maker.fees_paid += maker_fee
            taker.reserved -= taker_fee
            taker_account.reserved[quote] -= taker_fee
            maker.reserved -= maker_fee
            maker_account.reserved[quote] -= maker_fee
            fee_account.available[quote] += taker_fee + maker_fee
            if maker_account.resting_gen == gen:  # the fill out of the maker's resting sums
                sums = maker_account.resting.get(market_id)
                if sums is None:  # cannot happen (a resting maker is in them); rebuilt if it did
                    maker_account.resting_gen = -1
                else:
                    k = 3 if maker.side else 0
                    sums[k] -= lots
                    sums[k + 1] -= notional
                    sums[k + 2] -= maker_fee
            base_amount = lots * lot
            dirty_add(maker_account)
            dirty_add(maker)
            trade_id = engine._next_trade_id
            engine._next_trade_id = trade_id + 1
            fill = Fill(trade_id, market_id, price, base_amount, taker_side,
                        maker.id, maker_account.address, maker.remaining * lot, maker_fee,
                        taker.id, taker_account.address, taker_left * lot, taker_fee)
            push(fill)
            maker_position = self._position(maker_account, pm)
            self._trade(taker_position, pm, sign * base_amount, notional, price, events)
            self._trade(maker_position, pm, -sign * base_amount, notional, price, events)
            pm.last_trade = price
            if keep_fills:
                for a in (maker_account, taker_account):
                    fills = a.fills
                    log_append((_forget_fill, a, fills[0] if len(fills) == keep_fills else None))
                    fills.append(fill)
            if not maker.remaining:
                engine._detach(maker)
                self.release(market, maker)
        return filled

    def _trade(self, pos: Position, pm: PerpMarket, quantity: int, notional: int, price: int,
               events: list) -> None:
        """Apply one fill of ``quantity`` signed base units (+ bought) at
        ``notional`` quote units to a (settled, journalled) position."""
        size, entry, realized = trade(pos.size, pos.entry_value, quantity, notional, price, pm.market.lot_size)
        pos.size = size
        pos.entry_value = entry
        if realized:
            a = pos.account
            a.available[pm.market.quote] += realized
            pm.pool -= realized
            if realized < 0 and a.available[pm.market.quote] < 0:
                self.engine._parts["margin"].owes(a)  # borrowed at the next Tick (exchange/margin.py)
        events.append(PositionChanged(pos.account.address, pm.market.id, size, entry, realized))

    # ==== commands ========================================================

    def oracle_asset(self, c: SetOraclePrice) -> int:
        """The asset index a SetOraclePrice sets, after its checks (from the
        oracle account, a known asset other than the risk model's quote, whose
        price is fixed at one, an int price in 1..MAX_ORACLE_PRICE); raises
        otherwise (a price of 2**256 - 1 was taken; found by review)."""
        engine = self.engine
        if c.account != engine.config.oracle:
            raise ExchangeError(Reason.NOT_AUTHORIZED)
        asset = engine._asset_index.get(c.asset)
        if asset is None:
            raise ExchangeError(Reason.UNKNOWN_ASSET)
        if c.price.__class__ is not int or not 0 < c.price <= MAX_ORACLE_PRICE:
            raise ExchangeError(Reason.INVALID_PRICE)
        if c.asset == self.risk_model().quote:
            raise ExchangeError(Reason.INVALID_PRICE, "the quote asset's price is fixed at one")
        return asset

    def set_oracle_price(self, c: SetOraclePrice, ctx):
        engine = self.engine
        asset = self.oracle_asset(c)
        price = c.price
        oracle = self.oracle
        engine._log.append((_restore_oracle, oracle, asset, oracle.prices[asset]))
        oracle.prices[asset] = price
        engine._dirty.add(oracle)
        return OracleResult(c.asset, price), [OracleUpdated(c.asset, price)]

    def on_block(self, ctx, events: list) -> None:
        """The Tick hook: a premium sample per perp market, and the funding
        payment of every market whose interval ended (by market id)."""
        now = ctx.timestamp
        interval = self.engine.config.funding_interval
        prices = self.oracle.prices
        for mid in sorted(self.markets):
            pm = self.markets[mid]
            m = pm.market
            oracle = prices[m.base]
            self._snap_market(pm)
            if not pm.next_funding:
                pm.next_funding = (now // interval + 1) * interval
            if oracle:
                pm.premium_sum += self.premium(m, oracle)
                pm.samples += 1
            if now >= pm.next_funding:
                if oracle and pm.samples:
                    cfg = m.config
                    rate = funding_rate(pm.premium_sum, pm.samples, cfg.funding_interest, cfg.premium_clamp,
                                        cfg.funding_cap)
                    pm.funding_index += rate * oracle
                    pm.last_rate = rate
                    events.append(FundingPaid(mid, rate, oracle, pm.funding_index, now))
                pm.premium_sum = 0
                pm.samples = 0
                pm.next_funding = (now // interval + 1) * interval

    # ==== prices ==========================================================

    def per_token(self, market, price_per_lot: int) -> int:
        return price_per_lot * 10**self.decimals[market.base] // market.lot_size

    def premium(self, market, oracle: int) -> int:
        """One premium sample, RATE_SCALE parts; 0 if a side is too thin."""
        notional = market.config.impact_notional
        bid = self.impact_price(market, market.book.bids, notional)
        ask = self.impact_price(market, market.book.asks, notional)
        if bid is None or ask is None:
            return 0
        return max(0, bid - oracle) * RATE_SCALE // oracle - max(0, oracle - ask) * RATE_SCALE // oracle

    def impact_price(self, market, side, notional: int) -> int | None:
        """Average price per whole token of trading ``notional`` quote units
        against ``side`` (best first); None if the side is not that deep."""
        lots = 0  # whole lots taken so far
        left = notional
        for level in side.iter_levels():
            level_notional = level.price * level.total
            if level_notional >= left:
                # notional / (lots + left / price) lots, per whole token
                p = level.price
                return (notional * p * 10**self.decimals[market.base]
                        // ((lots * p + left) * market.lot_size))
            lots += level.total
            left -= level_notional
        return None

    def mark_price(self, market) -> int | None:
        """Mark price per whole token; None while the market has no oracle price."""
        oracle = self.oracle.prices[market.base]
        if not oracle:
            return None
        if market.config.mark is MarkMethod.ORACLE:
            return oracle
        book = market.book
        bid, ask = book.bids.best, book.asks.best
        mid = self.per_token(market, (bid + ask) // 2) if bid is not None and ask is not None else oracle
        last = self.per_token(market, self.markets[market.id].last_trade) if self.markets[market.id].last_trade else oracle
        return sorted((oracle, mid, last))[1]

    def pending_funding(self, pos: Position) -> int:
        """What the position would pay (+) or receive (-) if settled now."""
        pm = self.markets[pos.market]
        owed = pos.size * (pm.funding_index - pos.funding_index) + pos.carry
        return -(-owed // pm.divisor)

    # ==== views ===========================================================

    def position_view(self, address: bytes, market) -> PositionView:
        if market.kind is not MarketKind.PERP:
            raise ExchangeError(Reason.MARKET_KIND_UNSUPPORTED)
        a = self.engine._accounts.get(address)
        pos = a.positions.get(market.id) if a is not None else None
        mark = self.mark_price(market)
        if pos is None:
            return PositionView(address, market.id, 0, 0, None, mark, 0 if mark is not None else None, 0)
        size, entry = pos.size, pos.entry_value
        one = 10**self.decimals[market.base]
        entry_price = entry * one // size if size else None
        unrealized = size * mark // one - entry if mark is not None else None
        return PositionView(address, market.id, size, entry, entry_price, mark, unrealized,
                            self.pending_funding(pos))

    def funding_view(self, market) -> FundingView:
        pm = self.markets.get(market.id)
        if pm is None:
            raise ExchangeError(Reason.MARKET_KIND_UNSUPPORTED)
        average = (abs(pm.premium_sum) // pm.samples * (1 if pm.premium_sum >= 0 else -1)) if pm.samples else 0
        return FundingView(market.id, pm.funding_index, pm.samples, average, pm.next_funding, pm.last_rate,
                           pm.last_trade, pm.pool)

    # ==== persistence and audit ===========================================

    def state(self):
        positions = []
        engine = self.engine
        for address in sorted(engine._accounts):
            a = engine._accounts[address]
            for mid in sorted(a.positions):
                p = a.positions[mid]
                if p.digest_encoding() is not None:
                    positions.append((address, mid, p.size, p.entry_value, p.funding_index, p.carry))
        markets = [(mid, self.markets[mid].fields()) for mid in sorted(self.markets)]
        return (tuple(self.oracle.prices), markets, positions)

    def load_state(self, state) -> None:
        prices, markets, positions = state
        self.oracle.prices[:] = prices
        for mid, fields in markets:
            _restore_perp_market(self.markets[mid], fields)
        engine = self.engine
        for address, mid, size, entry, index, carry in positions:
            a = engine._accounts[address]
            pos = Position(a, mid, index)
            pos.size, pos.entry_value, pos.carry = size, entry, carry
            a.positions[mid] = pos
            engine._dirty.add(pos)
        for pm in self.markets.values():
            engine._dirty.add(pm)
        engine._dirty.add(self.oracle)

    def pool_balances(self):
        """(asset index, quote units) held by each market's settlement pool."""
        return [(pm.market.quote, pm.pool) for _, pm in sorted(self.markets.items())]


# ==== pure arithmetic (also used by the margin check's what-if) ===========


def trade(size: int, entry: int, quantity: int, notional: int, price: int, lot: int) -> tuple[int, int, int]:
    """(new size, new entry value, realized PnL) after a fill of ``quantity``
    signed base units (+ bought) costing ``notional`` at ``price`` per lot."""
    if not size or (size > 0) == (quantity > 0):
        return size + quantity, entry + (notional if quantity > 0 else -notional), 0
    sign = 1 if quantity > 0 else -1
    held = abs(size)
    closing = abs(quantity)
    if closing < held:
        portion = -(-entry * closing // held)  # ceil: against the account now
        return size + quantity, entry - portion, -sign * notional - portion
    closed_notional = price * (held // lot)  # exact: sizes are whole lots
    realized = -sign * closed_notional - entry
    return sign * (closing - held), sign * (notional - closed_notional), realized


def funding_rate(premium_sum: int, samples: int, interest_ppm: int, clamp_ppm: int, cap_ppm: int) -> int:
    """The funding rate of one interval, RATE_SCALE parts (+: longs pay)."""
    premium = abs(premium_sum) // samples * (1 if premium_sum >= 0 else -1)  # toward zero
    interest = interest_ppm * PPM_TO_RATE
    clamp = clamp_ppm * PPM_TO_RATE
    cap = cap_ppm * PPM_TO_RATE
    rate = premium + min(clamp, max(-clamp, interest - premium))
    return min(cap, max(-cap, rate))


def _order_id(o: Order) -> int:
    return o.id


def _restore_perp_market(pm: PerpMarket, fields: tuple) -> None:
    (pm.funding_index, pm.premium_sum, pm.samples, pm.next_funding, pm.last_trade, pm.last_rate,
     pm.pool) = fields


def _restore_position(pos: Position, size: int, entry: int, index: int, carry: int, snap: int) -> None:
    # the snapshot epoch too (see clearing._restore_account)
    pos.size, pos.entry_value, pos.funding_index, pos.carry, pos.snap = size, entry, index, carry, snap


def _unlink_position(pos: Position) -> None:
    del pos.account.positions[pos.market]
    pos.snap = -1  # never existed: nothing for Solvency.note to mark


def _restore_oracle(oracle: OraclePrices, asset: int, price: int) -> None:
    oracle.prices[asset] = price


@dataclass(slots=True, frozen=True)
class PositionView:
    account: bytes
    market: int
    size: int  # base units, + long / - short
    entry_value: int  # quote units
    entry_price: int | None  # quote units per whole token (entry value / size), floor; None if flat
    mark_price: int | None  # per whole token
    unrealized_pnl: int | None  # size x mark - entry value, floor; None without a mark
    pending_funding: int  # quote units the position pays (+) / receives (-) at its next settlement


@dataclass(slots=True, frozen=True)
class FundingView:
    market: int
    funding_index: int  # cumulative sum of rate x oracle price
    samples: int  # premium samples taken in the current interval
    average_premium: int  # RATE_SCALE parts, toward zero; 0 without samples
    next_funding: int  # block time of the next payment (0: before the first Tick)
    last_rate: int  # RATE_SCALE parts per interval
    last_trade: int  # price per lot of the last fill (0: none)
    pool: int  # quote units in the settlement pool

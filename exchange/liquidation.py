"""Solvency: the account index, de-risk policies, liquidation and defaults.

``Solvency`` (one per engine, ``engine._parts["solvency"]``: Engine keeps
fewer than 30 attributes) owns four things.

**The account index.** A ``risk.ThresholdIndex`` over the accounts with
exposure (a perp position, a loan, a negative balance) or a de-risk policy.
Each account's bands are the intersection of ``safe_band`` at the
liquidation level (floor 0) and, per policy rule, the band in which its
condition cannot hold (AVAILABLE_*_BELOW x: ``safe_band(level, floor=x-1)``;
MARK_ABOVE y: price <= y; MARK_BELOW y: price >= y), narrowed onto a
coarse grid (``_coarse``: each finite end moves inward by less than 1/32 of
its distance to the price) so that most re-bandings leave the index's sorted
lists untouched. Accounts are *marked*,
never re-evaluated, when commands change them: the marks are read off the
objects the engine already journals (an Account, Position or Loan whose undo
``snap`` epoch is newer than the last batch), collected from
``engine._dirty`` when the digest is taken and at each batch - nothing is
added to the spot hot path. A batch re-bands every marked account:

    SetOraclePrice(asset, new)            (our wrapper of perps' handler)
      validate -> batch re-band (old prices) -> price set
      -> index.crossed(asset, old, new) -> evaluate only those accounts:
         available_liq <= 0  -> flagged liquidatable (AccountLiquidatable)
         a policy condition holds -> queued for the next Tick
         new bands
    Tick (the last block hook)
      median-mark perp markets: the accounts whose band on the mark's own
      axis (key -1 - market id) no longer holds the mark (index.outside);
      batch re-band; run the queued policies; if an action traded, re-band
      again (the makers it met, a mark its last trade moved) - the policies
      that triggers run at the next Tick.

A median mark moves without the oracle (the book, the last trade), so a
position in such a market has a mark axis of its own (``_median_marks``,
``RiskModel.safe_band(..., marks)``: its size leaves the PnL slope of the
underlying's band and gets a band of the mark; found by review: a short
whose mark rose past its liquidation level was never flagged), and so has a
MARK_ABOVE / MARK_BELOW rule on such a market.

Drift that changes no object - funding payments (a step of the market's
index once an interval), the interest of an overdue borrowing - is foreseen
by a **time axis** (key ``DRIFT``): the price bands of an account that
drifts use only half of each level's slack (``risk.held_back_of``); the other
half absorbs ``k = held // _drift(a)`` payments (``_drift``: per position
``|size| x funding_cap x 2 x oracle``, the oracle band capped at twice
today's), so its band on the time axis ends at the k-th payment (at least
the next one) and each Tick re-bands the accounts whose time band it has
passed (``index.outside(DRIFT, now)``), after perps' funding hook. So funding
alone flags an account, or runs its policy, at the Tick that moves it (lending
interest within a term changes no available margin: it is deducted to term).

**De-risk policies.** ``SetDeriskPolicy(account, rules)``: at most
``MAX_DERISK_RULES`` rules, each 6 ints (``DeriskRule``; the command takes
them flat, so the ABI is ``uint256[]`` of length 6 x rules). At each Tick the
queued accounts (sorted by address) run their rules in the trader's order;
each action runs only if its rule's condition holds at that moment (after
the earlier actions), inside a checkpoint, and is kept only if it did
something and did not raise the opening-level scenario loss (reduce-only);
otherwise it is reverted with ``DeriskActionSkipped``. Orders placed by
actions are IOC at a bounded price: mark -+ the asset's ``shock_liq``, on the
tick grid, rounded toward the mark. An account is queued again for the next
block only if an action was taken and a condition still holds.

**Liquidation.** ``Liquidate(liquidator, account)``: only when the account's
liquidation-level available margin is <= 0 at that moment. Inside a
checkpoint: cancel its orders; the insurance fund buys the claims it lent
at face value (below); per non-quote asset repay its loans in that
asset from what it holds and sell the rest on the asset's spot market;
close every perp position; buy back what is still owed in non-quote assets
(as far as its quote affords) and repay; repay quote loans. The liquidator
gets ``liquidation_reward`` ppm of the quote left (floor), only if no debt
is left. If the books cannot absorb the unwind within the price bound (or a
needed market is not ACTIVE / has no price) the command is rejected
(LIQUIDATION_BLOCKED) and nothing changes. Sub-lot dust of an asset cannot be
sold and stays.

**Defaults.** Debt left after the unwind (no auto-deleveraging): a negative
quote balance is first turned into loans (``margin.borrow``, at the book's
best offers, when exchange/margin.py is there), then per asset the unpaid
owed amount is written off the lenders' claims pro rata
(``lending.share_default``): ``AccountDefaulted`` per asset, ``DefaultShared``
per loan cut. A negative balance no lender could take is paid by the insurance
fund (``config.insurance``: its balance may go below zero; it is never
liquidated, and the Tick never borrows for it), so the account ends at zero and
is not liquidatable again. Claims the account LENT (a term, no book to sell
them on) are bought by the insurance fund at face value first
(``lending.take_over``, ``ClaimTakenOver``): their value pays its creditors
like any other holding, and the fund is repaid by the borrowers later.

Errors (errors.Reason): NOT_LIQUIDATABLE 55, NOTHING_TO_LIQUIDATE 56,
TOO_MANY_DERISK_RULES 57, INVALID_DERISK_RULE 58, LIQUIDATION_BLOCKED 59.

State: per account a ``Watch`` (policy, flagged, queued - digest tag ``W`` -
and its bands and totals, left out of the digest; journalled); the marks and
the last batch epoch (journalled, not in the digest). ``state()`` /
``load_state()`` persist the watches with their bands and totals, the pending
marks and the last median marks: a restored engine re-bands exactly the
accounts the original would (what is flagged as drift moves an account
depends on when it is re-banded).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

from sortedcontainers import SortedSet

from .accounts import Account
from .book import Order
from .commands import CancelAll, ClearDeriskPolicy, DeriskPolicyResult, Liquidate, LiquidateResult, SetDeriskPolicy
from .commands import SetOraclePrice
from .errors import ExchangeError, Reason
from .events import (
    AccountDefaulted, AccountLiquidatable, AccountLiquidated, DeriskActionSkipped, DeriskActionTaken,
    DeriskPolicySet, OrderAccepted, OrderCancelled,
)
from .lending import Loan
from .perps import Position
from .risk import LIQ, OPEN, PPM, UNBOUNDED, ThresholdIndex, held_back_of
from .types import FEE_SCALE, RATE_SCALE, CancelReason, MarketKind, MarketStatus, MarkMethod, OrderType, SelfTradePrevention
from .types import Side, TimeInForce

MAX_DERISK_RULES = 8
# The time axis of the account index: an account's band there ends when the
# slack its price bands left for funding payments may be used up.
DRIFT = -(2**62)
RULE_WIDTH = 6  # ints per rule in SetDeriskPolicy.rules
_PERP = MarketKind.PERP  # engine._clearing's key of the PerpClearing

# conditions
AVAILABLE_OPEN_BELOW = 1  # subject 0, threshold: quote units
AVAILABLE_LIQ_BELOW = 2  # subject 0, threshold: quote units
MARK_ABOVE = 3  # subject: perp market id, threshold: price per whole token
MARK_BELOW = 4
# actions
CANCEL_ALL = 1  # target 0, amount 0
REDUCE_PERP = 2  # target: perp market id, amount: fraction of the position in ppm (1..1e6)
SELL_SPOT = 3  # target: asset id, amount: asset units at most
REPAY_LOANS = 4  # target: asset id, amount 0

# DeriskActionSkipped.reason
SKIP_NOTHING_TO_DO = 1
SKIP_WOULD_INCREASE_RISK = 2
SKIP_NOT_EXECUTABLE = 3  # market not active, no price, an order rejected


@dataclass(slots=True, frozen=True)
class DeriskRule:
    """One rule: when ``condition`` holds, do ``action``."""

    condition: int
    subject: int  # MARK_*: the perp market; else 0
    threshold: int  # AVAILABLE_*: quote units; MARK_*: quote units per whole token
    action: int
    target: int  # REDUCE_PERP: perp market; SELL_SPOT / REPAY_LOANS: asset id; else 0
    amount: int  # REDUCE_PERP: ppm of the position; SELL_SPOT: asset units; else 0

    def flat(self) -> tuple:
        return (self.condition, self.subject, self.threshold, self.action, self.target, self.amount)


def flatten_rules(rules) -> tuple:
    """DeriskRules (or already flat ints) -> the command's flat tuple."""
    out: list = []
    for r in rules:
        if isinstance(r, DeriskRule):
            out.extend(r.flat())
        else:
            out.append(r)
    return tuple(out)


class Watch:
    """One account's entry: its policy, liquidatable flag, queue flag, bands."""

    __slots__ = ("address", "policy", "flagged", "queued", "bands", "totals", "snap", "digest_term")

    def __init__(self, address: bytes) -> None:
        self.address = address
        self.policy: tuple = ()  # DeriskRules
        self.flagged = False
        self.queued = False
        self.bands: dict = {}  # asset id -> (lo, hi)
        # Free + held per asset when the bands were computed: an order placed or
        # cancelled moves balance between the two and changes no band (the bands
        # assume no open order fills), so such a change does not mark the account.
        self.totals: tuple | None = None
        self.snap = -1
        self.digest_term = 0

    def fields(self) -> tuple:
        return (self.policy, self.flagged, self.queued, dict(self.bands), self.totals)

    def digest_encoding(self) -> bytes | None:
        # The bands are not committed to (saved in to_bytes: see Solvency.state).
        if not self.policy and not self.flagged and not self.queued:
            return None
        return b"W%b|%b" % (self.address, repr((flatten_rules(self.policy), self.flagged,
                                                   self.queued)).encode())


class Marks:
    """The accounts to re-band at the next batch, and the epoch of the last batch."""

    __slots__ = ("pending", "last_batch", "last_marks", "digest_term")

    def __init__(self) -> None:
        self.pending: set = set()
        self.last_batch = 0
        # median-mark perp market id -> mark at the last Tick: no longer kept (the mark
        # axis reads the live mark), an empty dict in to_bytes for the format's sake
        self.last_marks: dict = {}
        self.digest_term = 0

    def digest_encoding(self) -> None:
        return None  # a cache of what the history determines; persisted, not committed to


class Solvency:
    __slots__ = ("engine", "index", "watches", "liquidatable", "queue", "marks", "evaluations", "loading",
                 "insurance", "median", "funding", "live_marks", "median_axes", "live_perps")

    def __init__(self, engine) -> None:
        self.engine = engine
        self.insurance = engine.config.insurance  # address of the insurance fund (never liquidated)
        # perp markets whose mark is a median (ids, sorted): a mark axis of their own in the index
        self.median = sorted(m.id for m in engine.config.markets
                             if m.kind is MarketKind.PERP and m.mark is MarkMethod.MEDIAN)
        # per median market, by id: (market id, its axis key, its underlying's asset id)
        bases = {m.id: m.base for m in engine.config.markets}
        self.median_axes = [(mid, -1 - mid, bases[mid]) for mid in self.median]
        # underlying asset id -> (2 x the largest funding cap of its perp markets,
        # PPM x 10**decimals): _drift's constants
        decimals = {a.id: a.decimals for a in engine.config.assets}
        self.funding: dict = {}
        for m in engine.config.markets:
            if m.kind is MarketKind.PERP:
                was = self.funding.get(m.base, (0, 0))[0]
                self.funding[m.base] = (max(was, 2 * m.funding_cap), PPM * 10 ** decimals[m.base])
        # median market id -> its mark, for the duration of one batch or crossing
        # loop (no command runs inside one: the marks cannot move); None outside
        self.live_marks = None
        # perp market id -> _liq_fast's per-market terms (_market_terms), for the
        # same scope as live_marks (every asset priced); None outside
        self.live_perps = None
        self.index = ThresholdIndex()
        self.watches: dict = {}  # address -> Watch
        self.liquidatable = SortedSet()  # addresses flagged
        self.queue = SortedSet()  # addresses whose policy runs at the next Tick
        self.marks = Marks()
        self.evaluations = 0  # accounts evaluated by batches and crossings (a counter for tests / metrics)
        self.loading = False

    # ==== wiring ==========================================================

    def setup(self) -> None:
        """Called at the end of Engine.__init__: registers the commands, wraps
        perps' SetOraclePrice handler, appends the Tick hook (last)."""
        engine = self.engine
        perps_handler = engine._handlers[SetOraclePrice]
        engine._handlers[SetOraclePrice] = lambda c, ctx: self.set_oracle_price(perps_handler, c, ctx)
        engine._handlers[SetDeriskPolicy] = self.set_policy
        engine._handlers[ClearDeriskPolicy] = self.clear_policy
        engine._handlers[Liquidate] = self.liquidate
        engine._block_hooks.append(self.on_block)

    # ==== journalling =====================================================

    def _watch(self, address: bytes) -> Watch:
        w = self.watches.get(address)
        if w is None:
            w = self.watches[address] = Watch(address)
        engine = self.engine
        if w.snap != engine._epoch:
            w.snap = engine._epoch
            engine._log.append((self._restore_watch, w, w.fields()))
        engine._dirty.add(w)
        return w

    def _restore_watch(self, w: Watch, fields: tuple) -> None:
        w.policy, w.flagged, w.queued, bands, w.totals = fields
        self._apply_flags(w, bands)

    def _apply_flags(self, w: Watch, bands: dict) -> None:
        """Bring the sorted sets and the index in line with ``w``."""
        a = w.address
        if w.flagged:
            self.liquidatable.add(a)
        else:
            self.liquidatable.discard(a)
        if w.queued:
            self.queue.add(a)
        else:
            self.queue.discard(a)
        w.bands = dict(bands)
        if bands:
            self.index.set(a, bands)
        else:
            self.index.discard(a)

    def _snap_marks(self) -> None:
        m = self.marks
        self.engine._log.append((_restore_marks, m, set(m.pending), m.last_batch, dict(m.last_marks)))
        self.engine._dirty.add(m)

    # ==== marks ===========================================================

    def note(self, objects) -> None:
        """Mark the accounts of changed objects (Account, Position, Loan) whose
        journal epoch is newer than the last batch. Called by
        Engine.state_digest before it clears its dirty set, and by batches."""
        if self.loading:
            return
        pending = self.marks.pending
        log = self.engine._log
        marks = self.marks

        def add(address: bytes) -> None:
            if address not in pending:
                pending.add(address)
                # journalled: a digest taken inside a checkpoint that is then
                # undone (a stateDigest() view in an eth_call) leaves no mark
                log.append((_unmark, marks, address))

        self._noted(objects, add)

    def _noted(self, objects, add) -> None:
        """``note``'s rule: ``add`` the address of each marked account."""
        last = self.marks.last_batch
        watches = self.watches
        for obj in objects:
            cls = obj.__class__
            if cls is Account:
                if obj.snap > last and obj.exists:
                    w = watches.get(obj.address)
                    if w is None or w.totals is None or w.totals != _totals(obj):
                        add(obj.address)
            elif cls is Position:
                if obj.snap > last:
                    add(obj.account.address)
            elif cls is Loan:
                if obj.snap > last:
                    add(obj.lender.address)
                    add(obj.borrower.address)

    def _take_marks(self) -> list:
        engine = self.engine
        self.note(engine._dirty)
        m = self.marks
        self._snap_marks()
        pending = sorted(m.pending)
        m.pending = set()
        m.last_batch = engine._epoch
        return pending

    # ==== evaluation ======================================================

    def _exposed(self, a) -> bool:
        if a.address == self.insurance:
            return False  # the insurance fund's deficit is the operator's to fund, never liquidated
        for pos in a.positions.values():  # (positions first: fewer than loans, and most accounts hold one)
            if pos.size:
                return True
        if a.loans:
            for loan in a.loans.values():
                if loan.borrower is a:
                    return True
        q = self._quote_index()
        return a.available[q] < 0

    def _drift(self, a, portfolio, prices, caps: list) -> int:
        """The most one funding payment can take from ``a`` (quote units):
        per perp position of ``portfolio`` (positions only: no open order
        assumed) ``|size| x funding_cap x 2 x oracle`` (the largest cap of the
        underlying's markets; the bands keep the oracle below twice today's:
        the asset ids go to ``caps``) plus two units of rounding; and the
        interest an overdue borrowing accrues over an interval (past its term
        it is no longer deducted in advance). 0: nothing drifts."""
        rates = self.funding
        total = 0
        for base_id, size, _, _, _ in portfolio.perps:  # a sum: the order does not matter
            if size:
                p = prices.get(base_id)
                if p:
                    cap2, den = rates[base_id]
                    total += (size if size > 0 else -size) * cap2 * p // den + 2
                    caps.append(base_id)
        if a.loans and self.engine.lending.overdue:  # (no overdue loan anywhere: the common case)
            total += self._overdue_drift(a, caps)
        return total

    def _overdue_drift(self, a, caps: list) -> int:
        """_drift's part for ``a``'s overdue borrowings."""
        total = 0
        engine = self.engine
        interval = engine.config.funding_interval
        decimals = engine._perps.decimals
        quote = self._quote_index()
        for loan in a.loans.values():
            if loan.borrower is a and loan.overdue and loan.open:
                owed = -(-loan.principal * loan.rate * interval // (RATE_SCALE * 31_536_000)) + 1
                if loan.asset == quote:
                    total += owed + 1
                else:
                    # at up to twice today's price (capped), with up to 100 % of shock on it
                    p = engine._perps.oracle.prices[loan.asset]
                    total += owed * 4 * max(p, 1) // 10 ** decimals[loan.asset] + 1
                    caps.append(engine._asset_ids[loan.asset])
        return total

    def _liq_slow(self, a, now: int, marks) -> tuple | None:
        """``(available_liq, bands)`` of an exposed account without a de-risk
        policy, as reband stores them (the time axis, the caps, the coarse
        grid), composed of the general parts: ``portfolio_of``, ``_drift``,
        ``RiskModel.liq_band``, ``_finish``. None: an asset without a price.
        The reference of ``_liq_fast`` (tests/exchange/test_liq_fast.py)."""
        portfolio, prices = self.engine._perps.portfolio_of(a, now, None, None, False, True)  # available alone
        caps: list = []
        drift = self._drift(a, portfolio, prices, caps)
        try:
            available_liq, bands = self._model().liq_band(portfolio, prices, marks, held_back=bool(drift))
        except KeyError:
            return None
        horizons = [held_back_of(available_liq, 0) // drift] if drift else []
        return available_liq, self._finish(bands, drift, horizons, caps, prices, marks, now)

    def _liq_fast(self, a, now: int, marks, totals: tuple) -> tuple | None:
        """``_liq_slow``'s answer in one pass, without the Portfolio and the
        lists and dicts it is built of (``totals``: ``_totals(a)``): the
        re-banding of every account a block touched runs this, at each Tick.
        The same arithmetic as ``portfolio_of`` (margin-only, no order
        assumed), ``_drift``, ``RiskModel.liq_band``'s hot path and
        ``_finish`` (``RiskModel._bands`` at LIQ, the caps, the time axis, the
        coarse grid of ``_coarse``), summing in the same order; an asset
        without an oracle price goes to ``_liq_slow``. Change both.

        The per-underlying sums are kept as ``liq_band`` keeps them, but
        ``sites`` (the rounding sites) only as a total: its keys are always
        ``delta``'s (every term that adds a site adds to ``delta``)."""
        engine = self.engine
        perps = engine._clearing[_PERP]  # (engine._perps without the property call)
        prices = perps._prices if perps.oracle.prices == perps._prices_key else perps._prices_for()
        if len(prices) < engine._n_assets:
            return self._liq_slow(a, now, marks)
        model = perps.model or perps.risk_model()
        params = model._p
        quote = model.quote
        equity = 0
        deductions = 0
        delta: dict = {}
        haircut = None  # {asset: lent * (PPM - cf) + interest * PPM}, made by the first non-quote loan
        nsites = 0
        for asset, amount in zip(engine._asset_ids, totals):  # each asset once, and first
            if asset == quote:
                equity += amount
            elif amount:
                equity += amount * prices[asset] // params[asset][0]
                delta[asset] = amount
                nsites += 1
        drift = 0
        caps: list = []
        if a.positions:
            get = delta.get
            terms = self.live_perps
            if terms is None:
                terms = self._market_terms(perps, prices, params)
            for mid, pos in a.positions.items():  # sums: dict order, as _perp_terms margin-only
                size = pos.size
                carry = pos.carry
                if not size and not carry:
                    continue
                pm, base_id, mark, scale, cap2p, den = terms[mid]
                # pending_funding, inlined (nothing pending: settled at the index, no carry)
                if carry or pm.funding_index != pos.funding_index:
                    owed = -(-(size * (pm.funding_index - pos.funding_index) + carry) // pm.divisor)
                    if not size and not owed:
                        continue
                else:
                    owed = 0
                    if not size:
                        continue
                equity += size * mark // scale - pos.entry_value - owed
                delta[base_id] = get(base_id, 0) + size
                nsites += 1
                if size:  # _drift: one funding payment at most (|size| x cap2 x price // den)
                    drift += (size if size > 0 else -size) * cap2p // den + 2
                    caps.append(base_id)
        if a.loans:
            lending = engine.lending
            lent, borrowed = lending.margin_terms(a, now)
            for asset, amount in lent:
                if asset == quote:
                    equity += amount
                    deductions += amount - amount * model._quote_cf // PPM
                else:
                    pa = params[asset]
                    v = amount * prices[asset]
                    value = v // pa[0]
                    equity += value
                    deductions += value - v * pa[3] // pa[4]
                    delta[asset] = delta.get(asset, 0) + amount
                    if haircut is None:
                        haircut = {}
                    haircut[asset] = haircut.get(asset, 0) + amount * (PPM - pa[3])
                    nsites += 2
            for asset, owed, interest in borrowed:
                if asset == quote:
                    equity -= owed
                    deductions += interest
                else:
                    p = prices[asset]
                    scale = params[asset][0]
                    equity += (-owed * p) // scale
                    deductions -= (-interest * p) // scale
                    delta[asset] = delta.get(asset, 0) - owed
                    if haircut is None:
                        haircut = {}
                    haircut[asset] = haircut.get(asset, 0) + interest * PPM
                    nsites += 2
            if lending.overdue:
                drift += self._overdue_drift(a, caps)
        # RiskModel._loss(delta, prices, 2, 6) (the LIQ level), inlined for one or
        # two exposed underlyings (the usual case); more go to _loss itself
        a1 = a2 = None
        n1 = n2 = 0
        for asset, d in delta.items():  # (every asset has a price here)
            if d:
                if a1 is None:
                    a1, n1 = asset, d * prices[asset]
                elif a2 is None:
                    a2, n2 = asset, d * prices[asset]
                else:
                    a1 = False
                    break
        if a1 is False:
            loss = model._loss(delta, prices, 2, 6)
        elif a1 is None:
            loss = 0
        elif a2 is None:
            pa = params[a1]
            loss = -(-n1 * pa[2] // pa[4]) if n1 > 0 else -(n1 * pa[2] // pa[4])
        else:
            o1 = n1 * params[a1][6]
            o2 = n2 * params[a2][6]
            q = (o1 * o1 + o2 * o2) * PPM + model._rho.get((a1, a2), 0) * o1 * o2
            if q <= 0:
                loss = 0
            else:
                t = -(-q // model._den2)  # ceil(sqrt(q / den2)) = ceil(sqrt(ceil(q / den2))), exactly
                loss = isqrt(t)
                if loss * loss < t:
                    loss += 1
        available = equity - deductions - loss
        # ---- the bands: RiskModel._bands(delta, haircut, sites, prices, banded, 0, LIQ, marks)
        # with _finish's caps and coarse grid applied to each band as it is made
        bands: dict = {}
        if drift:
            held = available // 2 if available > 0 else 0  # held_back_of(available, 0)
            slack = available - held
        else:
            slack = available
        if nsites:
            budget = slack - 1 - nsites
            if slack <= 0 or budget < 0:  # no room: every band is the price (a mark axis: the mark) itself
                for asset in sorted(delta):
                    p = prices[asset]
                    bands[asset] = (p, p)
                for key, _, _, mark in marks:
                    bands[key] = (mark, mark)
            else:
                keys = sorted(delta)
                # Knum per underlying (_bands' knum: |pnl * PPM - haircut| + |delta| * shock_liq;
                # a median mark's perp leaves the pnl slope of its underlying)
                knums = []
                sensitive = len(marks)
                for asset in keys:
                    d = delta[asset]
                    pnl = d
                    for _, on, size, _ in marks:
                        if on == asset:
                            pnl -= size
                    pnl *= PPM
                    if haircut is not None:
                        pnl -= haircut.get(asset, 0)
                    k = ((pnl if pnl >= 0 else -pnl) + (d if d >= 0 else -d) * params[asset][2])
                    knums.append(k)
                    if k:
                        sensitive += 1
                share = budget // sensitive if sensitive else 0
                i = 0
                for asset in keys:
                    k = knums[i]
                    i += 1
                    p = prices[asset]
                    if k:
                        move = share * params[asset][4] // k
                        lo = p - move if p > move else 0
                        hi = p + move
                    else:
                        lo, hi = 0, UNBOUNDED
                    if drift and hi > 2 * p and asset in caps:  # _finish's cap (every capped asset has a site)
                        hi = 2 * p
                    if lo != hi:  # _coarse_band, inlined (the hot loop: one call less per asset)
                        if lo > 0:
                            d = p - lo
                            if d >= 64:
                                g = 1 << (d.bit_length() - 6)
                                lo = -(-lo // g) * g
                        if hi < UNBOUNDED:
                            d = hi - p
                            if d >= 64:
                                g = 1 << (d.bit_length() - 6)
                                hi = hi // g * g
                    bands[asset] = (lo, hi)
                for key, on, size, mark in marks:
                    move = share * params[on][4] // ((size if size > 0 else -size) * PPM)
                    bands[key] = _coarse_band(mark - move if mark > move else 0, mark + move, mark)
        if drift:
            k = held // drift  # _finish's time axis, with one horizon
            if k < 1:
                k = 1
            interval = engine.config.funding_interval
            bands[DRIFT] = (0, (now // interval + (1 << (k.bit_length() - 1))) * interval - 1)
        return available, bands

    def _median_marks(self, a) -> list:
        """``a``'s positions in median-mark perp markets as safe_band's mark
        axes ``[(key, asset id, size, mark)]``, key ``-1 - market id`` (not an
        asset id: those are >= 0), by market id."""
        live = self.live_marks
        out = []
        positions = a.positions
        for mid, key, asset in self.median_axes:
            pos = positions.get(mid)
            if pos is not None and pos.size:
                mark = live[mid] if live is not None else self._live_mark(mid)
                if mark is not None:
                    out.append((key, asset, pos.size, mark))
        return out

    def _live_mark(self, mid: int):
        return self.engine._perps.mark_price(self.engine._markets[mid])

    def _market_terms(self, perps, prices: dict, params: dict) -> dict:
        """Per perp market id ``(PerpMarket, base asset id, mark, 10**decimals,
        2 x funding cap x oracle price, PPM x 10**decimals)``: what _liq_fast
        reads per position (``prices``: every asset priced). The mark is
        mark_price's: the oracle, or the median of oracle, book mid and last
        trade (inlined)."""
        rates = self.funding
        oracle = perps.oracle.prices
        info = perps._perp_info
        out = {}
        for mid, pm in perps.markets.items():
            m, base, base_id, oracle_mark, one, lot_size, _ = info[mid]
            mark = oracle[base]
            if not oracle_mark:
                book = m.book
                bid, ask = book.bids.best, book.asks.best
                mid_price = (bid + ask) // 2 * one // lot_size if bid is not None and ask is not None else mark
                last = pm.last_trade
                last = last * one // lot_size if last else mark
                if mark > mid_price:
                    mark, mid_price = mid_price, mark
                mark = mark if last < mark else (mid_price if last > mid_price else last)
            cap2, den = rates[base_id]
            out[mid] = (pm, base_id, mark, params[base_id][0], cap2 * prices[base_id], den)
        return out

    def _with_live_marks(self, body) -> None:
        """Run ``body()`` with the median marks and the perp markets' terms
        read once (no command runs inside: neither the marks, the oracle nor
        the funding indexes move)."""
        perps = self.engine._clearing[_PERP]
        prices = perps._prices if perps.oracle.prices == perps._prices_key else perps._prices_for()
        if len(prices) == self.engine._n_assets:
            self.live_perps = self._market_terms(perps, prices, (perps.model or perps.risk_model())._p)
        if self.median:
            self.live_marks = {mid: self._live_mark(mid) for mid in self.median}
        try:
            body()
        finally:
            self.live_marks = None
            self.live_perps = None

    def _quote_index(self) -> int:
        return self.engine._asset_index[self._model().quote]

    def _model(self):
        return self.engine._perps.risk_model()

    def _evaluate(self, a, now: int):
        """(Margin, Portfolio, prices) of ``a`` now, open orders not assumed."""
        perps = self.engine._perps
        portfolio, prices = perps.portfolio_of(a, now, None, None, False)
        return perps._evaluate(self._model(), portfolio, prices), portfolio, prices

    def _mark_of(self, market_id: int):
        """(asset id, mark per token) of a perp market; None without a price."""
        engine = self.engine
        m = engine._markets.get(market_id)
        if m is None or m.kind is not MarketKind.PERP:
            return None
        mark = engine._perps.mark_price(m)
        if mark is None:
            return None
        return engine._asset_ids[m.base], mark

    def _holds(self, rule: DeriskRule, margin) -> bool:
        c = rule.condition
        if c == AVAILABLE_OPEN_BELOW:
            return margin.available_open < rule.threshold
        if c == AVAILABLE_LIQ_BELOW:
            return margin.available_liq < rule.threshold
        found = self._mark_of(rule.subject)
        if found is None:
            return False
        if c == MARK_ABOVE:
            return found[1] > rule.threshold
        return found[1] < rule.threshold

    def reband(self, address: bytes, now: int, events: list, requeue: bool = True) -> None:
        """Evaluate one account: its liquidatable flag, its queue flag (a policy
        condition holds), its bands in the index."""
        engine = self.engine
        a = engine._accounts.get(address)
        w = self.watches.get(address)
        policy = w.policy if w is not None else ()
        exposed = a is not None and a.exists and self._exposed(a)
        if not exposed and not policy:
            if w is not None and (w.flagged or w.queued or w.bands):
                w = self._watch(address)
                w.flagged = w.queued = False
                self._apply_flags(w, {})
            return
        self.evaluations += 1
        marks = self._median_marks(a) if exposed and self.median else ()
        if not policy:
            # No policy: the liquidation level is all it needs, in one pass
            # (exposed here, else it returned above).
            totals = tuple(map(int.__add__, a.available, a.reserved))  # _totals(a)
            found = self._liq_fast(a, now, marks, totals)
            if found is None:  # an asset without a price: looked at again when one arrives
                return
            available_liq, bands = found
            flagged = available_liq <= 0
            if w is not None and w.flagged == flagged and w.bands == bands:
                # _store's "nothing the sets or the index hold changed" (queued stays
                # as it was), inlined; the totals alone get an undo entry of their
                # own (none if the watch was snapped in this epoch: that restores them)
                if w.totals != totals:
                    if w.snap != engine._epoch:
                        engine._log.append((_restore_totals, w, w.totals))
                    engine._dirty.add(w)
                    w.totals = totals
                return
            self._store(w, address, flagged, False, available_liq, bands, totals, events)
            return
        model = self._model()
        caps: list = []  # assets whose oracle band _drift's bound needs capped at twice today's
        horizons = []  # per band level: the funding payments its held-back slack absorbs
        try:
            margin, portfolio, prices = self._evaluate(a, now)
        except ExchangeError:  # an asset without a price: looked at again when one arrives
            return
        drift = self._drift(a, portfolio, prices, caps) if exposed else 0
        available_liq = margin.available_liq
        banded = available_liq
        if drift:
            held = held_back_of(available_liq, 0)
            banded -= held
            horizons.append(held // drift)
        bands = model.safe_band(portfolio, prices, LIQ, 0, available=banded,
                                marks=marks) if exposed else {}
        flagged = exposed and available_liq <= 0
        holds = False
        for rule in policy:
            if self._holds(rule, margin):
                holds = True
            c = rule.condition
            if c == AVAILABLE_OPEN_BELOW or c == AVAILABLE_LIQ_BELOW:
                level = OPEN if c == AVAILABLE_OPEN_BELOW else LIQ
                banded = margin.available_open if c == AVAILABLE_OPEN_BELOW else margin.available_liq
                if drift:
                    held = held_back_of(banded, rule.threshold - 1)
                    banded -= held
                    horizons.append(held // drift)
                extra = model.safe_band(portfolio, prices, level, rule.threshold - 1, available=banded,
                                        marks=marks)
            else:
                found = self._mark_of(rule.subject)
                if found is None:
                    continue
                asset, mark = found
                if rule.subject in self.median:  # its mark moves on its own axis
                    asset = -1 - rule.subject
                    p = mark
                else:
                    p = prices.get(asset, mark)
                if (c == MARK_ABOVE and mark > rule.threshold) or (c == MARK_BELOW and mark < rule.threshold):
                    extra = {asset: (p, p)}
                elif c == MARK_ABOVE:
                    extra = {asset: (0, rule.threshold)}
                else:
                    extra = {asset: (rule.threshold, UNBOUNDED)}
            for asset, (lo, hi) in extra.items():
                was = bands.get(asset)
                bands[asset] = (lo, hi) if was is None else (max(lo, was[0]), min(hi, was[1]))
        queued = holds and requeue
        bands = self._finish(bands, drift, horizons, caps, prices, marks, now)
        self._store(w, address, flagged, queued, available_liq, bands, _totals(a) if a is not None else None,
                    events)

    def _finish(self, bands: dict, drift: int, horizons: list, caps: list, prices: dict, marks, now: int) -> dict:
        """reband's last steps on its bands: the time axis and the caps of
        ``drift``, then the coarse grid."""
        if drift:
            # Funding payments change no object: the bands above leave half their
            # slack for them, which lasts min(horizons) payments (at least the
            # next one); the account is re-banded at the first Tick from then on
            # (the time axis, read by on_block). Payments are priced at the
            # oracle, at most twice today's within the bands.
            interval = self.engine.config.funding_interval
            # k rounded down to a power of two: most re-bandings leave the end as it was
            k = max(1, min(horizons))
            until = (now // interval + (1 << (k.bit_length() - 1))) * interval
            bands[DRIFT] = (0, until - 1)
            for asset in caps:
                band = bands.get(asset)
                if band is not None and band[1] > 2 * prices[asset]:
                    bands[asset] = (band[0], 2 * prices[asset])
        if marks:
            prices = dict(prices)
            for key, _, _, mark in marks:
                prices[key] = mark
        return _coarse(bands, prices)

    def _store(self, w, address: bytes, flagged: bool, queued: bool, available_liq: int, bands: dict,
               totals, events: list) -> None:
        """reband's result into the watch, the sets and the index (journalled;
        nothing when nothing changed)."""
        if w is not None and w.flagged == flagged and w.queued == (queued or w.queued) and w.bands == bands:
            if w.totals != totals:  # nothing the sets or the index hold changed: journal the totals only
                self._watch(address).totals = totals
            return
        w = self._watch(address)
        if flagged and not w.flagged:
            events.append(AccountLiquidatable(address, available_liq))
        w.flagged = flagged
        w.queued = queued or w.queued
        w.totals = totals
        self._apply_flags(w, bands)

    def _batch(self, now: int, events: list, extra=()) -> None:
        addresses = sorted(set(self._take_marks()) | set(extra))
        if addresses:
            self._with_live_marks(lambda: self._reband_all(addresses, now, events))

    def _reband_all(self, addresses, now: int, events: list) -> None:
        for address in addresses:
            self.reband(address, now, events)

    # ==== SetOraclePrice ==================================================

    def set_oracle_price(self, perps_handler, c: SetOraclePrice, ctx):
        engine = self.engine
        # The checks of perps' handler first: a rejected command changes nothing.
        index = engine._perps.oracle_asset(c)
        now = ctx.timestamp
        old = engine._perps.oracle.prices[index]
        events: list = []
        self._batch(now, events)
        result, price_events = perps_handler(c, ctx)
        if old:
            crossed = self.index.crossed(c.asset, old, c.price)
        else:  # the first price of an asset: every exposed account may hold it (once per asset)
            crossed = sorted(addr for addr, a in engine._accounts.items()
                             if addr in self.watches or self._exposed(a))
        if crossed:
            self._with_live_marks(lambda: self._reband_all(crossed, now, events))
        return result, price_events + events

    # ==== the Tick hook ===================================================

    def on_block(self, ctx, events: list) -> None:
        engine = self.engine
        now = ctx.timestamp
        extra: set = set()
        for mid in self.median:
            mark = engine._perps.mark_price(engine._markets[mid])
            if mark is not None:
                # Every band on this mark's axis that no longer holds it (each was
                # set at the mark of its own re-banding, not at the last Tick's).
                extra.update(self.index.outside(-1 - mid, mark))
        extra.update(self.index.outside(DRIFT, now))  # funding payments may have used up their slack
        self._batch(now, events, extra)
        ran = len(events)
        for address in list(self.queue):
            self._run_policy(address, ctx, events)
        if any(e.__class__ is DeriskActionTaken for e in events[ran:]):
            # The actions traded: their fills changed the makers they met and may
            # have moved a median mark (the last trade). Re-band those now, so the
            # flags hold after this Tick; the policies they trigger run at the next
            # (found by review: a maker filled by a policy stayed unflagged a block).
            extra = set()
            for mid in self.median:
                mark = engine._perps.mark_price(engine._markets[mid])
                if mark is not None:
                    extra.update(self.index.outside(-1 - mid, mark))
            self._batch(now, events, extra)

    # ==== de-risk policies ================================================

    def set_policy(self, c: SetDeriskPolicy, ctx):
        rules = parse_rules(c.rules, self.engine)
        engine = self.engine
        engine._account_for(c.account)
        w = self._watch(c.account)
        w.policy = rules
        self._apply_flags(w, w.bands)
        self._mark(c.account)  # banded at the next batch
        return DeriskPolicyResult(len(rules)), [DeriskPolicySet(c.account, flatten_rules(rules))]

    def _mark(self, address: bytes) -> None:
        """Add ``address`` to the pending marks, journalled only if it was not
        there (a revert must not drop a mark an earlier digest added: an
        eth_call's reverted SetDeriskPolicy unmarked any account; found by review)."""
        pending = self.marks.pending
        if address not in pending:
            pending.add(address)
            self.engine._log.append((_unmark, self.marks, address))

    def clear_policy(self, c: ClearDeriskPolicy, ctx):
        w = self.watches.get(c.account)
        if w is not None and w.policy:
            w = self._watch(c.account)
            w.policy = ()
            w.queued = False
            self._apply_flags(w, w.bands)
            self._mark(c.account)
        return DeriskPolicyResult(0), [DeriskPolicySet(c.account, ())]

    def _run_policy(self, address: bytes, ctx, events: list) -> None:
        engine = self.engine
        now = ctx.timestamp
        w = self._watch(address)
        w.queued = False
        self._apply_flags(w, w.bands)
        a = engine._accounts.get(address)
        if a is None:
            return
        taken = False
        for i, rule in enumerate(w.policy):
            try:
                margin = self._evaluate(a, now)[0]
            except ExchangeError:
                return
            if not self._holds(rule, margin):
                continue
            before = margin.loss_open
            token = engine.checkpoint()
            # Fresh undo snapshots: objects this Tick (or an earlier rule) already
            # snapped in this epoch would otherwise get no undo entry, and a
            # skipped action's revert would leave its fees and PnL behind.
            engine._epoch += 1
            action_events: list = []
            try:
                amount = self._act(a, rule, ctx, action_events)
            except ExchangeError:
                engine.revert(token)
                events.append(DeriskActionSkipped(address, i, rule.action, SKIP_NOT_EXECUTABLE))
                continue
            if not amount:
                engine.revert(token)
                events.append(DeriskActionSkipped(address, i, rule.action, SKIP_NOTHING_TO_DO))
                continue
            try:
                after = self._evaluate(a, now)[0].loss_open
            except ExchangeError:
                after = before + 1
            if after > before:
                engine.revert(token)
                events.append(DeriskActionSkipped(address, i, rule.action, SKIP_WOULD_INCREASE_RISK))
                continue
            engine.commit(token)
            events.extend(action_events)
            events.append(DeriskActionTaken(address, i, rule.action, rule.target, amount))
            taken = True
        # Re-evaluated now (the actions changed it): queued again only if an
        # action was taken and a condition still holds.
        self.reband(address, now, events, requeue=taken)

    def _act(self, a, rule: DeriskRule, ctx, events: list) -> int:
        engine = self.engine
        now = ctx.timestamp
        action = rule.action
        if action == CANCEL_ALL:
            result, cancel_events = engine._cancel_all(CancelAll(a.address), ctx)
            events.extend(cancel_events)
            return result.cancelled
        if action == REDUCE_PERP:
            m = engine._markets[rule.target]
            pos = a.positions.get(m.id)
            size = pos.size if pos is not None else 0
            lots = abs(size) * rule.amount // PPM // m.lot_size
            if not lots:
                return 0
            side = Side.SELL if size > 0 else Side.BUY
            return self._take(m, a, side, lots, now, events) * m.lot_size
        if action == SELL_SPOT:
            index = engine._asset_index[rule.target]
            m = self._spot_market(index)
            if m is None:
                raise ExchangeError(Reason.LIQUIDATION_BLOCKED, "no spot market")
            lots = min(rule.amount, a.available[index]) // m.lot_size
            if not lots:
                return 0
            return self._take(m, a, Side.SELL, lots, now, events) * m.lot_size
        if action == REPAY_LOANS:
            return self._repay(a, engine._asset_index[rule.target], now, events)
        return 0

    # ==== orders the engine places for an account ========================

    def _spot_market(self, asset: int):
        engine = self.engine
        q = self._quote_index()
        for mid in sorted(engine._markets):
            m = engine._markets[mid]
            if m.kind is MarketKind.SPOT and m.base == asset and m.quote == q:
                return m
        return None

    def _bound(self, m, side) -> int:
        """The worst price per lot of an engine order: mark -+ shock_liq, on
        the tick grid, rounded toward the mark."""
        engine = self.engine
        if m.status is not MarketStatus.ACTIVE:
            raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"market {m.id} not active")
        if m.kind is MarketKind.PERP:
            mark = engine._perps.mark_price(m)
        else:
            mark = engine._perps.oracle.prices[m.base] or None
        if mark is None:
            raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"market {m.id} has no price")
        shock = engine.config.assets[m.base].shock_liq
        scale = PPM * 10**engine._perps.decimals[m.base]
        tick = m.tick_size
        if side == Side.SELL:
            per_lot = -(-mark * (PPM - shock) * m.lot_size // scale)
            price = -(-per_lot // tick) * tick
        else:
            per_lot = mark * (PPM + shock) * m.lot_size // scale
            price = per_lot // tick * tick
        return max(price, tick)

    def _take(self, m, a, side, lots: int, now: int, events: list) -> int:
        """An IOC of ``lots`` for ``a`` at the bounded price, past the
        pre-trade checks (the engine acts for the account: no margin check,
        and a perp fee hold may take its free quote below zero); returns the
        lots filled."""
        engine = self.engine
        price = self._bound(m, side)
        clearing = m.clearing
        if m.kind is MarketKind.SPOT and side == Side.BUY:
            per = price + -(-price * m.max_fee // FEE_SCALE)
            lots = min(lots, max(0, a.available[m.quote]) // per)
            if not lots:
                return 0
        order_id = engine._next_order_id
        engine._next_order_id = order_id + 1
        seq = engine._next_seq
        engine._next_seq = seq + 1
        o = Order(order_id, a, m.id, side, price, lots, 0, SelfTradePrevention.CANCEL_INCOMING, 0, seq)
        asset, hold = clearing.hold_for(m, side, price, lots, True)
        if m.kind is MarketKind.SPOT and a.available[asset] < hold:
            raise ExchangeError(Reason.INSUFFICIENT_BALANCE)
        engine._snap(a)
        a.available[asset] -= hold
        a.reserved[asset] += hold
        o.reserved = hold
        engine._dirty.add(a)
        quantity = lots * m.lot_size
        events.append(OrderAccepted(order_id, a.address, m.id, side, price, quantity, TimeInForce.IOC,
                                    OrderType.LIMIT, 0, 0))
        outcomes, stopped = m.book.match(o, now)
        filled = clearing.settle(m, o, outcomes, events, now)
        clearing.release(m, o)
        if a.available[asset] < 0:
            # The fee hold took the free quote below zero: noted like a perp loss
            # (a restored engine rebuilds the set from the balances, so a balance
            # the set missed borrowed there and not here; found by review).
            margin_part = engine._parts.get("margin")
            if margin_part is not None:
                margin_part.owes(a)
        if o.remaining:
            events.append(OrderCancelled(order_id, a.address, m.id, side, price, o.remaining * m.lot_size,
                                         CancelReason.LIQUIDATION))
        return filled

    def _repay(self, a, asset: int, now: int, events: list) -> int:
        """Repay ``a``'s borrowed loans in ``asset`` (by id) from its free balance."""
        lending = self.engine.lending
        paid = 0
        for loan_id in sorted(a.loans):
            loan = a.loans.get(loan_id)
            if loan is None or loan.borrower is not a or loan.asset != asset:
                continue
            pay = min(loan.owed(now), a.available[asset])
            if pay <= 0:
                break
            lending._touch(loan, now)
            i, p = lending._pay(loan, pay, now, events, at_maturity=False)
            paid += i + p
        return paid

    def _owed(self, a, asset: int, now: int) -> int:
        return sum(loan.owed(now) for loan in a.loans.values() if loan.borrower is a and loan.asset == asset)

    # ==== Liquidate =======================================================

    def liquidate(self, c: Liquidate, ctx):
        engine = self.engine
        a = engine._accounts.get(c.account)
        if a is None or not self._exposed(a):
            raise ExchangeError(Reason.NOTHING_TO_LIQUIDATE)
        now = ctx.timestamp
        margin = self._evaluate(a, now)[0]
        if margin.available_liq > 0:
            raise ExchangeError(Reason.NOT_LIQUIDATABLE, f"available margin {margin.available_liq}")
        token = engine.checkpoint()
        engine._epoch += 1  # fresh undo snapshots (in a Batch, earlier actions snapped this epoch)
        events: list = []
        try:
            result = self._unwind(a, c.liquidator, ctx, events)
        except ExchangeError:
            engine.revert(token)
            raise
        engine.commit(token)
        return result, events

    def _unwind(self, a, liquidator: bytes, ctx, events: list) -> LiquidateResult:
        engine = self.engine
        now = ctx.timestamp
        q = self._quote_index()
        ids = engine._asset_ids
        for oid in sorted(a.open_orders):
            o = a.open_orders[oid]
            if engine._markets[o.market].status is MarketStatus.HALTED:
                raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"market {o.market} halted")
            events.extend(engine._cancel_one(o, CancelReason.LIQUIDATION)[1])
        # 0. claims it lent (a term, no book to sell them on): the insurance fund
        #    takes them over at face value, paying the account in their asset,
        #    so its creditors are paid from them now (found by review: they were
        #    cut in full while the defaulter kept its claims and withdrew them
        #    once repaid; then deferring the cut let liquidators take a reward
        #    again and again, and left its negative balance to the next lender)
        insurance = None
        for loan_id in sorted(a.loans):
            loan = a.loans[loan_id]
            if loan.lender is a and loan.open:
                if insurance is None:
                    insurance = engine._account_for(self.insurance)
                engine.lending.take_over(loan, insurance, now, events, q)
        # 1. non-quote holdings: repay that asset's loans, sell the rest
        for i in range(engine._n_assets):
            if i == q or not a.available[i]:
                continue
            self._repay(a, i, now, events)
            if a.available[i] <= 0:
                continue
            m = self._spot_market(i)
            if m is None:
                continue  # nothing to sell it on: it stays
            lots = a.available[i] // m.lot_size
            if lots and self._take(m, a, Side.SELL, lots, now, events) < lots:
                raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"spot market {m.id} too thin")
        # 2. perp positions
        for mid in sorted(a.positions):
            pos = a.positions[mid]
            if not pos.size:
                continue
            m = engine._markets[mid]
            lots = abs(pos.size) // m.lot_size
            side = Side.SELL if pos.size > 0 else Side.BUY
            if self._take(m, a, side, lots, now, events) < lots:
                raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"perp market {mid} too thin")
        # 3. debts in non-quote assets: buy them back with quote, repay
        for i in range(engine._n_assets):
            if i == q:
                continue
            owed = self._owed(a, i, now)
            if not owed:
                continue
            m = self._spot_market(i)
            need = -(-(owed - max(0, a.available[i])) // m.lot_size) if m is not None else 0
            if need > 0:
                price = self._bound(m, Side.BUY)
                affordable = max(0, a.available[q]) // (price + -(-price * m.max_fee // FEE_SCALE))
                want = min(need, affordable)
                if want and self._take(m, a, Side.BUY, want, now, events) < want:
                    raise ExchangeError(Reason.LIQUIDATION_BLOCKED, f"spot market {m.id} too thin")
        # 4. a negative quote balance (perp losses) into loans, where lenders offer
        shortfall_total = 0
        if a.available[q] < 0:
            margin_part = engine._parts.get("margin")
            if margin_part is not None and hasattr(margin_part, "borrow"):
                margin_part.borrow(a, q, -a.available[q], now, events)
        # 5. per asset: what cannot be paid is written off the lenders' claims pro
        #    rata first (so no lender is paid ahead of another), then the rest is
        #    repaid; a negative balance no lender took goes to the insurance fund.
        for i in range(engine._n_assets):
            owed = self._owed(a, i, now)
            have = max(0, a.available[i])
            cut = owed - have if owed > have else 0
            if cut:
                engine.lending.share_default(a, i, cut, now, events)
            if owed:
                self._repay(a, i, now, events)
            negative = -a.available[i] if a.available[i] < 0 else 0
            if negative:
                # Perp losses beyond what the account had and what lenders would
                # take: the insurance fund pays them (its balance may go below
                # zero; the operator funds it), so the loss never stays on a dead
                # account to be borrowed later from whoever offers next.
                if insurance is None:
                    insurance = engine._account_for(engine.config.insurance)
                engine._move_free(insurance, a, i, negative)
            if cut or negative:
                shortfall_total += cut + negative
                events.append(AccountDefaulted(a.address, ids[i], cut + negative, negative))
        # 6. the reward, from what remains, only if nothing is owed
        remaining = a.available[q]
        reward = 0
        if not shortfall_total and remaining > 0:
            reward = remaining * engine.config.liquidation_reward // PPM
            if reward:
                engine._move_free(a, engine._account_for(liquidator), q, reward)
                remaining -= reward
        w = self._watch(a.address)
        w.flagged = False
        self._apply_flags(w, w.bands)
        remaining = max(0, remaining)
        events.append(AccountLiquidated(liquidator, a.address, reward, remaining, shortfall_total))
        return LiquidateResult(a.address, reward, remaining, shortfall_total)

    # ==== views ===========================================================

    def liquidatable_accounts(self) -> list:
        return list(self.liquidatable)

    def policy(self, address: bytes) -> tuple:
        w = self.watches.get(address)
        return tuple(w.policy) if w is not None else ()

    # ==== persistence =====================================================

    def state(self):
        """Every watch with its bands and totals, the marks, and the accounts
        the next batch re-bands (those marked, and those whose objects changed
        since the last batch, as ``note`` would read them off the dirty set).
        The bands and marks are not committed to by the digest, but what the
        next batches do depends on them - which accounts are re-banded, so
        which get flagged or have their policy queued as funding or interest
        drift moves them - so a restored engine must hold exactly them, or it
        goes another way than the engine it was saved from (found by review:
        the restored engine re-banded every exposed account)."""
        watches = [(addr, flatten_rules(w.policy), w.flagged, w.queued, sorted(w.bands.items()), w.totals)
                   for addr, w in sorted(self.watches.items())
                   if w.policy or w.flagged or w.queued or w.bands or w.totals is not None]  # else: as if absent
        m = self.marks
        pending = set(m.pending)
        self._noted(self.engine._dirty, pending.add)
        return (watches, sorted(m.last_marks.items()), sorted(pending))

    def load_state(self, state) -> None:
        engine = self.engine
        if len(state) == 2:  # a state saved before the bands were (2026-11-24): re-band everything watched
            watches, last_marks = state
            pending = {addr for addr, a in engine._accounts.items()
                       if any(addr == w[0] for w in watches) or self._exposed(a)}
            watches = [(*w, [], None) for w in watches]
        else:
            watches, last_marks, pending = state
        for addr, flat, flagged, queued, bands, totals in watches:
            w = Watch(addr)
            w.policy = parse_rules(flat, engine)
            w.flagged, w.queued = flagged, queued
            w.totals = tuple(totals) if totals is not None else None
            self.watches[addr] = w
            self._apply_flags(w, dict(bands))
            engine._dirty.add(w)
        self.marks.pending = set(pending)
        self.marks.last_marks = dict(last_marks)
        self.marks.last_batch = engine._epoch

    def after_load(self) -> None:
        """Engine.from_bytes, once every part is loaded: what loading marked
        dirty is not a change (the digest is brought up to date unmarked)."""
        self.loading = True
        try:
            self.engine.state_digest()
        finally:
            self.loading = False


def parse_rules(flat, engine) -> tuple:
    """The command's rules (flat ints, 6 per rule, or DeriskRules) ->
    validated DeriskRules; raises TOO_MANY_DERISK_RULES / INVALID_DERISK_RULE."""
    flat = flatten_rules(flat)
    if len(flat) % RULE_WIDTH:
        raise ExchangeError(Reason.INVALID_DERISK_RULE, f"rules take {RULE_WIDTH} ints each")
    if len(flat) > RULE_WIDTH * MAX_DERISK_RULES:
        raise ExchangeError(Reason.TOO_MANY_DERISK_RULES, f"at most {MAX_DERISK_RULES}")
    rules = []
    for k in range(0, len(flat), RULE_WIDTH):
        if any(x.__class__ is not int and not isinstance(x, int) for x in flat[k:k + RULE_WIDTH]):
            raise ExchangeError(Reason.INVALID_DERISK_RULE, "ints only")
        r = DeriskRule(*(int(x) for x in flat[k:k + RULE_WIDTH]))
        _check_rule(r, engine)
        rules.append(r)
    return tuple(rules)


def _check_rule(r: DeriskRule, engine) -> None:
    def bad(why: str):
        raise ExchangeError(Reason.INVALID_DERISK_RULE, why)

    def perp(mid: int) -> bool:
        m = engine._markets.get(mid)
        return m is not None and m.kind is MarketKind.PERP

    if r.condition in (AVAILABLE_OPEN_BELOW, AVAILABLE_LIQ_BELOW):
        if r.subject != 0:
            bad("margin conditions take subject 0")
    elif r.condition in (MARK_ABOVE, MARK_BELOW):
        if not perp(r.subject) or r.threshold <= 0:
            bad("mark conditions take a perp market and a positive price")
    else:
        bad("unknown condition")
    if r.threshold < 0:
        bad("negative threshold")
    if r.action == CANCEL_ALL:
        if r.target or r.amount:
            bad("CANCEL_ALL takes no target or amount")
    elif r.action == REDUCE_PERP:
        if not perp(r.target) or not 0 < r.amount <= PPM:
            bad("REDUCE_PERP takes a perp market and 1..1e6 ppm")
    elif r.action == SELL_SPOT:
        if r.target not in engine._asset_index or r.amount <= 0:
            bad("SELL_SPOT takes an asset and a positive amount")
    elif r.action == REPAY_LOANS:
        if r.target not in engine._asset_index or r.amount:
            bad("REPAY_LOANS takes an asset")
    else:
        bad("unknown action")


def _restore_marks(m: Marks, pending: set, last_batch: int, last_marks: dict) -> None:
    m.pending, m.last_batch, m.last_marks = pending, last_batch, last_marks


def _restore_totals(w: Watch, totals) -> None:
    """The undo of a change of a watch's totals alone (reband)."""
    w.totals = totals


def _unmark(m: Marks, address: bytes) -> None:
    m.pending.discard(address)


def _coarse(bands: dict, prices: dict) -> dict:
    """``bands`` narrowed onto a coarse grid, so that the small changes most
    commands make to an account leave its index entries as they are (an
    index update is two sorted-list operations per end that moved).

    Per finite end at distance ``d`` from the current price ``p`` (``lo``
    above 0, ``hi`` below UNBOUNDED), with ``g = 2**(bit_length(d) - 6)``
    (1/64 to 1/32 of ``d``; 1 when ``d < 64``): ``lo`` is rounded up and
    ``hi`` down to a multiple of ``g``. Both only move inward, by less than
    ``g <= d/32``, so ``lo <= p <= hi`` still holds and every price in the
    new band was in the old one: the band stays safe, and an account is at
    worst looked at a little before its exact threshold."""
    out = {}
    for a, band in bands.items():
        p = prices.get(a)
        out[a] = band if p is None else _coarse_band(band[0], band[1], p)
    return out


def _coarse_band(lo: int, hi: int, p: int) -> tuple:
    """One band of ``_coarse`` (``p``: the price it was made at)."""
    if lo == hi:
        return lo, hi
    if lo > 0:
        d = p - lo
        if d >= 64:
            g = 1 << (d.bit_length() - 6)
            lo = -(-lo // g) * g
    if hi < UNBOUNDED:
        d = hi - p
        if d >= 64:
            g = 1 << (d.bit_length() - 6)
            hi = hi // g * g
    return lo, hi


def _totals(a: Account) -> tuple:
    """Free + held per asset: what the bands depend on among the account's balances."""
    return tuple(map(int.__add__, a.available, a.reserved))

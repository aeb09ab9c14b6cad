"""The portfolio risk model: one account's equity and available margin, computed
on the whole portfolio (spot, perps, loans), and the threshold index that lets an
oracle update visit only the accounts it matters to.

Pure arithmetic on ints: no engine state, no floats, no clock. The engine (perps /
lending adapters) builds a ``Portfolio`` from an account and calls
``RiskModel.evaluate``; a check costs O(holdings + exposed underlyings^2), never a
pass over other accounts.

Units (part2-shared.md): amounts in smallest units; a price is quote smallest
units per ONE WHOLE token, ``value(amount) = amount * price // 10**decimals``;
shocks, credit factors and correlations are ppm (``PPM`` = 1,000,000). Every
rounding goes against the account: what it owns is floored, what it owes, its
deductions and its scenario losses are ceiled (``x // s`` floors toward -inf,
so ``(-owed * p) // s`` is minus the ceiling of what is owed).

The model, per level (``open`` for new risk, the smaller ``liq`` shock for
liquidation)::

    equity    = sum value(balances)                           (signed)
              + sum perp (size * mark // 10**d - entry_value - funding owed)
              + sum value(lent) - sum value(borrowed owed now)
    deductions= sum (value(lent) - value(lent) * credit_factor)   (haircut)
              + sum value(interest still to accrue to each borrowing's term)
    available = equity - deductions - loss(level)

    delta_u   = balance_u + sum perp sizes_u + lent_u - borrowed_u   (base units)
    e_u       = delta_u * price_u * shock_u / (PPM * 10**d_u)        (exact rational)
    loss      = ceil( sqrt( max(0, sum_ij rho_ij e_i e_j) ) ),  rho_uu = 1

``e_u`` is the worst loss of underlying ``u`` alone over its scenario grid
(``scenarios`` evenly spaced moves from -shock to +shock), signed by its
direction: the value of a delta-linear position is linear in the price, so its
worst grid point is always an endpoint, -shock for a net long and +shock for a
net short (``scenario_grid`` and the reference test evaluate the grid point by
point and agree). A spot long and a perp short of the same size give
``delta_u = 0``: they offset exactly. Underlyings combine through the
configured correlation matrix (PSD is checked at construction), the SPAN /
portfolio-margin way; the quadratic form is evaluated exactly on integers
scaled to the largest ``decimals``, then ``ceil(sqrt)`` exactly
(``ceil(sqrt(x)) = ceil(sqrt(ceil(x)))`` for real x >= 0).

The loss grows when all shocks grow in proportion (it is homogeneous in
them); one asset's shock alone can lower it when that asset hedges another
through a correlation (|x - y| with rho = 1), which is the point of netting.

``binding`` is (asset, move ppm) of the largest single-underlying opening-level
loss (ties: lowest asset), None if there is no loss. ``naive_open`` /
``naive_liq`` are what per-position margin without netting would require:
``sum |amount| * price * shock`` over every position (a side-by-side figure: the
naive available margin is ``equity - deductions - naive_open``).

The quote asset's value is its amount (its price is 10**quote_decimals), so it
never needs a price and carries no scenario loss.

``safe_band`` and ``ThresholdIndex`` are documented where they are defined.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product
from math import isqrt
from typing import NamedTuple

from sortedcontainers import SortedList

PPM = 1_000_000
OPEN = "open"
LIQ = "liq"
UNBOUNDED = 1 << 256  # a band's ``hi`` when no rise can ever breach the floor
# Up to this many perp markets with a choice of side (open orders on both sides, or
# on one side of a position), every combination is evaluated (2**k); past it, a bound.
EXACT_CHOICES = 3


class UnderlyingRisk(NamedTuple):
    """One asset's risk parameters (config ``[[exchange.assets]]``)."""

    decimals: int
    shock_open: int = 150_000  # ppm price move assumed against the net exposure for new risk
    shock_liq: int = 100_000  # ppm, the smaller move that decides liquidation
    credit_factor: int = 980_000  # ppm of a lender-side loan counted as collateral
    scenarios: int = 7  # points of the grid from -shock to +shock


class Portfolio:
    """What one account holds, in the model's terms (all signed ints):

    balances  {asset: amount}            spot balances (free + held), signed
    perps     [(asset, size, entry_value, mark, funding_owed)]
              size in base units (+ long), entry value in quote units (+ paid),
              mark per whole token, funding owed in quote units (+ the account pays)
    lent      [(asset, amount now)]      principal + interest earned so far
    borrowed  [(asset, owed now, interest to term)]
    choices   [(asset, value, low, high)]  a perp position with open orders:
              its value in quote units and its size anywhere from low to
              high (the open orders' what-if, see RiskModel._worst)
    """

    __slots__ = ("balances", "perps", "lent", "borrowed", "choices")

    def __init__(self, balances=None, perps=(), lent=(), borrowed=(), choices=()) -> None:
        self.balances = balances if balances is not None else {}
        self.perps = perps
        self.lent = lent
        self.borrowed = borrowed
        # Perp positions with open orders: a known value (the orders' profits
        # left out, their losses and fees in) and a size anywhere in a range
        # (any of the orders may fill): [(asset, value, low size, high size)]
        # (perps.PerpClearing._what_if; RiskModel._worst takes the worst)
        self.choices = choices

    def __repr__(self) -> str:
        return (f"Portfolio(balances={self.balances!r}, perps={self.perps!r}, "
                f"lent={self.lent!r}, borrowed={self.borrowed!r}, choices={self.choices!r})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Portfolio) and (
            (self.balances, list(self.perps), list(self.lent), list(self.borrowed), list(self.choices))
            == (other.balances, list(other.perps), list(other.lent), list(other.borrowed), list(other.choices)))


class Margin(NamedTuple):
    """The result of ``RiskModel.evaluate`` (quote units).

    ``available_x = equity - deductions - loss_x``; ``naive_x`` is the
    per-position requirement without netting, to compare with ``loss_x``."""

    equity: int
    available_open: int
    available_liq: int
    binding: tuple | None  # (asset, move ppm) of the largest single-underlying loss
    naive_open: int
    naive_liq: int
    loss_open: int = 0  # the portfolio's scenario loss at the opening level
    loss_liq: int = 0
    deductions: int = 0  # lent haircut + interest to term of borrowings


def scenario_grid(shock: int, scenarios: int) -> list[int]:
    """The grid's price moves in ppm: ``scenarios`` points evenly spaced from
    -shock to +shock (rounded toward -inf between the endpoints, which are
    exact). Fewer than 2 points still means both endpoints: a one-point grid
    would leave one direction without margin."""
    n = max(2, scenarios)
    return [-shock + (2 * shock * k) // (n - 1) for k in range(n)]


def is_psd(matrix: list[list[int]]) -> bool:
    """Exact positive-semidefiniteness test of a symmetric integer matrix
    (symmetric Gaussian elimination on Fractions; a zero pivot requires its
    whole remaining row to be zero)."""
    a = [[Fraction(x) for x in row] for row in matrix]
    n = len(a)
    for k in range(n):
        pivot = a[k][k]
        if pivot < 0:
            return False
        if pivot == 0:
            if any(a[k][j] != 0 for j in range(k + 1, n)):
                return False
            continue
        for i in range(k + 1, n):
            f = a[i][k] / pivot
            if f:
                for j in range(k + 1, n):
                    a[i][j] -= f * a[k][j]
    return True


class RiskModel:
    """``RiskModel(quote, underlyings, correlations)``: ``underlyings`` maps every
    asset index (the quote asset may be included: its decimals are unused, its
    credit factor applies to quote lent) to ``UnderlyingRisk``;
    ``correlations`` maps an asset pair ``(i, j)`` (either order) to rho in ppm.
    Raises ValueError on an out-of-range rho or a correlation matrix that is
    not positive semidefinite (the loss would not be a seminorm, and
    ``safe_band``'s proof needs one)."""

    __slots__ = ("quote", "underlyings", "correlations", "_p", "_rho", "_quote_cf", "_den2")

    def __init__(self, quote: int, underlyings: dict, correlations: dict | None = None) -> None:
        self.quote = quote
        self.underlyings = dict(underlyings)
        rho: dict = {}
        for (i, j), r in sorted((correlations or {}).items()):
            if i == j or i == quote or j == quote:
                raise ValueError(f"correlation ({i}, {j}): needs two distinct non-quote assets")
            if i not in self.underlyings or j not in self.underlyings:
                raise ValueError(f"correlation ({i}, {j}): unknown asset")
            if not -PPM <= r <= PPM:
                raise ValueError(f"correlation ({i}, {j}): rho {r} outside -{PPM}..{PPM}")
            if rho.get((i, j), r) != r:
                raise ValueError(f"correlation ({i}, {j}) given twice with different values")
            rho[(i, j)] = rho[(j, i)] = r
        self.correlations = {k: v for k, v in rho.items() if k[0] < k[1]}
        assets = sorted(a for a in self.underlyings if a != quote)
        if not is_psd([[PPM if i == j else rho.get((i, j), 0) for j in assets] for i in assets]):
            raise ValueError("correlation matrix is not positive semidefinite")
        top = max((self.underlyings[a].decimals for a in assets), default=0)
        # per asset: (10**d, shock_open, shock_liq, credit factor, PPM * 10**d,
        # shock_open and shock_liq times the factor that brings 10**d to
        # 10**top, for the correlated form)
        self._p = {}
        for a in assets:
            u = self.underlyings[a]
            if not (0 <= u.shock_liq <= u.shock_open < PPM and 0 <= u.credit_factor <= PPM):
                raise ValueError(f"asset {a}: shocks / credit factor out of range")
            scale = 10 ** u.decimals
            widen = 10 ** (top - u.decimals)
            self._p[a] = (scale, u.shock_open, u.shock_liq, u.credit_factor, PPM * scale,
                          u.shock_open * widen, u.shock_liq * widen)
        self._rho = {k: 2 * v for k, v in rho.items()}  # both orders, doubled for i<j sums
        q = self.underlyings.get(quote)
        self._quote_cf = q.credit_factor if q is not None else PPM
        # loss^2 = sum rho_ij m_i m_j / (PPM * (PPM * 10**top)**2), m = delta * p * shock * factor
        self._den2 = PPM * (PPM * 10 ** top) ** 2

    @classmethod
    def from_config(cls, config) -> "RiskModel":
        """From an ``ExchangeConfig``: the quote is the quote asset of its spot
        and perp markets (part 2 margins everything in that one asset; the
        lowest asset id if several), every asset's risk parameters, the
        configured correlations."""
        quotes = sorted({m.quote for m in config.markets if m.base != m.quote})
        quote = quotes[0] if quotes else config.assets[0].id
        underlyings = {a.id: UnderlyingRisk(a.decimals, a.shock_open, a.shock_liq, a.credit_factor,
                                            a.scenarios) for a in config.assets}
        correlations = {(c.a, c.b): c.rho for c in config.correlations}
        return cls(quote, underlyings, correlations)

    # ==== evaluate ============================================================

    def evaluate(self, portfolio: Portfolio, prices) -> Margin:
        """Equity and available margin at both levels (see the module map).
        ``prices[a]`` is needed for every non-quote asset the portfolio holds
        (KeyError otherwise); perps are valued at their own mark.

        The hot path of every pre-trade check: one pass over the holdings,
        then one over the underlyings; the correlated form only when two or
        more underlyings are exposed.

        With ``choices`` (open orders assumed filled), the Margin of the
        combination of sides that leaves the lowest opening-level available
        margin (``_worst``); past ``EXACT_CHOICES`` of them, that of the sides
        with the lower equity each, its opening figure lowered to ``_worst``'s
        bound."""
        if portfolio.choices:
            available, corner = self._worst(portfolio, prices, 1, 5)
            margin = self.evaluate(self._concrete(portfolio, corner, prices), prices)
            return margin if margin.available_open == available else margin._replace(available_open=available)
        quote = self.quote
        params = self._p
        equity = 0
        deductions = 0
        acc: dict = {}  # per underlying [net exposure, sum of |position|], base units
        for a, amount in portfolio.balances.items():
            if a == quote:
                equity += amount
            elif amount:
                equity += amount * prices[a] // params[a][0]  # floor: against the account either sign
                e = acc.get(a)
                if e is None:
                    acc[a] = [amount, abs(amount)]
                else:
                    e[0] += amount
                    e[1] += abs(amount)
        for a, size, entry, mark, owed in portfolio.perps:
            equity += size * mark // params[a][0] - entry - owed
            e = acc.get(a)
            if e is None:
                acc[a] = [size, abs(size)]
            else:
                e[0] += size
                e[1] += abs(size)
        for a, amount in portfolio.lent:
            if a == quote:
                equity += amount
                deductions += amount - amount * self._quote_cf // PPM  # credited part floored
            else:
                pa = params[a]
                v = amount * prices[a]
                value = v // pa[0]
                equity += value
                deductions += value - v * pa[3] // pa[4]  # credited part floored
                e = acc.get(a)
                if e is None:
                    acc[a] = [amount, amount]
                else:
                    e[0] += amount
                    e[1] += amount
        for a, owed, interest in portfolio.borrowed:
            if a == quote:
                equity -= owed
                deductions += interest
            else:
                p = prices[a]
                scale = params[a][0]
                equity += (-owed * p) // scale  # minus the ceiling of what is owed
                deductions -= (-interest * p) // scale  # ceiling
                e = acc.get(a)
                if e is None:
                    acc[a] = [-owed, owed]
                else:
                    e[0] -= owed
                    e[1] += owed
        naive_open = naive_liq = 0
        exposed = []
        for a, (d, g) in acc.items():
            pa = params[a]
            p = prices[a]
            gp = g * p
            naive_open -= (-gp * pa[1]) // pa[4]  # ceiling
            naive_liq -= (-gp * pa[2]) // pa[4]
            if d:
                exposed.append((a, d * p, pa))
        base = equity - deductions
        if not exposed:
            return Margin(equity, base, base, None, naive_open, naive_liq, 0, 0, deductions)
        if len(exposed) == 1:
            a, n, pa = exposed[0]
            so = pa[1]
            if n > 0:
                loss_open = -(-n * so // pa[4])
                loss_liq = -(-n * pa[2] // pa[4])
                binding = (a, -so) if loss_open else None
            else:
                loss_open = -(n * so // pa[4])
                loss_liq = -(n * pa[2] // pa[4])
                binding = (a, so) if loss_open else None
        elif len(exposed) == 2:
            # the common two-underlying case (ETH and BTC), inlined
            (a1, n1, p1), (a2, n2, p2) = exposed
            if a2 < a1:
                a1, n1, p1, a2, n2, p2 = a2, n2, p2, a1, n1, p1
            s1 = -(-abs(n1) * p1[1] // p1[4])
            s2 = -(-abs(n2) * p2[1] // p2[4])
            if s2 > s1:  # ties keep the lower asset
                binding = (a2, -p2[1] if n2 > 0 else p2[1])
            else:
                binding = (a1, -p1[1] if n1 > 0 else p1[1]) if s1 else None
            r = self._rho.get((a1, a2), 0)
            den2 = self._den2
            o1 = n1 * p1[5]
            o2 = n2 * p2[5]
            q = (o1 * o1 + o2 * o2) * PPM + r * o1 * o2
            loss_open = 0
            if q > 0:  # ceil(sqrt(q / den2)) = ceil(sqrt(ceil(q / den2))), exactly
                t = -(-q // den2)
                loss_open = isqrt(t)
                if loss_open * loss_open < t:
                    loss_open += 1
            o1 = n1 * p1[6]
            o2 = n2 * p2[6]
            q = (o1 * o1 + o2 * o2) * PPM + r * o1 * o2
            loss_liq = 0
            if q > 0:
                t = -(-q // den2)
                loss_liq = isqrt(t)
                if loss_liq * loss_liq < t:
                    loss_liq += 1
        else:
            loss_open, loss_liq, binding = self._correlated(exposed)
        return Margin(equity, base - loss_open, base - loss_liq, binding,
                      naive_open, naive_liq, loss_open, loss_liq, deductions)

    def available_open(self, portfolio: Portfolio, prices) -> int:
        """``evaluate(portfolio, prices).available_open``, exactly (the same
        sums, the same roundings, KeyError for the same missing price), for
        the pre-trade checks, which need nothing else: no liquidation level,
        naive margin, binding scenario or Margin tuple. Kept equal to
        ``evaluate`` by tests/exchange/test_fast_checks.py."""
        return self._available(portfolio, prices, 1, 5)

    def available_liq(self, portfolio: Portfolio, prices) -> int:
        """``evaluate(portfolio, prices).available_liq``, exactly (re-banding)."""
        return self._available(portfolio, prices, 2, 6)

    def _available(self, portfolio: Portfolio, prices, shock_at: int, widened_at: int, floor=None) -> int:
        """One level's available margin; ``shock_at`` / ``widened_at`` index
        the level's shock and its widened form in ``_p``. With a ``floor``
        (a pre-trade check asks "at least 0?"), a portfolio with choices may
        answer with a lower bound at or above the floor instead of the exact
        figure (below the floor the figure is exact)."""
        if portfolio.choices:
            return self._worst(portfolio, prices, shock_at, widened_at, floor)[0]
        equity, deductions, delta = self._holdings(portfolio.balances.items(), portfolio.perps, portfolio.lent,
                                                   portfolio.borrowed, prices)
        return equity - deductions - self._loss(delta, prices, shock_at, widened_at)

    def _holdings(self, balances, perps, lent, borrowed, prices) -> tuple:
        """``(equity, deductions, delta)`` of a portfolio's balances (``(asset,
        amount)`` pairs, each asset once: its ``balances.items()``), perp positions and loans
        (its choices left out): ``_available`` before the loss; ``delta`` is
        the net exposure per underlying, base units. Three hand copies carry
        this arithmetic: the pre-trade check's fast path
        (perps.PerpClearing._floor_available, with ``_loss_cap``'s;
        tests/exchange/test_floor_available.py), ``liq_band``'s hot path and
        the re-banding's one pass (liquidation.Solvency._liq_fast, with
        ``_bands``' and ``_loss``'; tests/exchange/test_liq_fast.py): change
        them all."""
        quote = self.quote
        params = self._p
        equity = 0
        deductions = 0
        delta: dict = {}  # per underlying: net exposure, base units
        get = delta.get
        for a, amount in balances:  # each asset once, and first: its delta is its balance
            if a == quote:
                equity += amount
            elif amount:
                equity += amount * prices[a] // params[a][0]
                delta[a] = amount
        for a, size, entry, mark, owed in perps:
            equity += size * mark // params[a][0] - entry - owed
            delta[a] = get(a, 0) + size
        for a, amount in lent:
            if a == quote:
                equity += amount
                deductions += amount - amount * self._quote_cf // PPM
            else:
                pa = params[a]
                v = amount * prices[a]
                value = v // pa[0]
                equity += value
                deductions += value - v * pa[3] // pa[4]
                delta[a] = get(a, 0) + amount
        for a, owed, interest in borrowed:
            if a == quote:
                equity -= owed
                deductions += interest
            else:
                p = prices[a]
                scale = params[a][0]
                equity += (-owed * p) // scale
                deductions -= (-interest * p) // scale
                delta[a] = get(a, 0) - owed
        return equity, deductions, delta

    def _worst(self, portfolio: Portfolio, prices, shock_at: int, widened_at: int, floor=None) -> tuple:
        """``(available, corner)`` of a portfolio with ``choices`` - perp
        positions whose value is known (``value``, its open orders' profits
        left out, their losses in) and whose size lies anywhere from ``low``
        to ``high`` (any of its open orders may fill): the lowest available
        margin over all of them. The loss is convex in the sizes, so its
        largest value is at a corner of the box; by exact enumeration of the
        corners up to ``EXACT_CHOICES`` choices (2**k losses, the first of
        equal maxima kept), past that an upper bound of the loss
        (``_loss_bound``, corner None). With a ``floor``, first a cheaper
        bound (``_loss_cap``): at or above the floor, it answers (corner
        None)."""
        equity, deductions, delta = self._holdings(portfolio.balances.items(), portfolio.perps, portfolio.lent,
                                                   portfolio.borrowed, prices)  # (its choices left out)
        base = equity - deductions
        choices = portfolio.choices
        if floor is not None:
            # The checks' hot path: the pass over the choices gathers the
            # exposure ranges the cheap bound needs (options only past it).
            ranges: dict = {}  # per underlying with options: the range of its exposure (ranges add up)
            for asset, value, low, high in choices:
                base += value
                was = ranges.get(asset)
                if was is None:
                    d = delta.get(asset, 0)
                    ranges[asset] = [d + low, d + high]
                else:
                    was[0] += low
                    was[1] += high
            low_bound = base - self._loss_cap(delta, ranges, prices, shock_at)
            if low_bound >= floor:
                return low_bound, None
            options = [(asset, low, high) for asset, _, low, high in choices]
        else:
            options = []
            for asset, value, low, high in choices:
                base += value
                options.append((asset, low, high))
        if len(options) > EXACT_CHOICES:
            return base - self._loss_bound(delta, options, prices, widened_at), None
        loss = self._loss
        get = delta.get
        d = dict(delta)
        worst = None
        for corner in product(*[(low, high) if low != high else (low,) for _, low, high in options]):
            for asset, _, _ in options:
                d[asset] = get(asset, 0)
            for (asset, _, _), size in zip(options, corner):
                d[asset] += size
            x = loss(d, prices, shock_at, widened_at)
            if worst is None or x > worst[0]:
                worst = (x, corner)
        return base - worst[0], worst[1]

    def _concrete(self, portfolio: Portfolio, corner, prices) -> Portfolio:
        """``portfolio`` with its choices settled as plain perp positions at
        ``corner``'s sizes (None: the size of larger magnitude), valued at the
        price (their entry value set so that each one's value is its choice's)."""
        perps = list(portfolio.perps)
        params = self._p
        for i, (asset, value, low, high) in enumerate(portfolio.choices):
            size = corner[i] if corner is not None else (low if abs(low) > abs(high) else high)
            price = prices[asset]
            perps.append((asset, size, size * price // params[asset][0] - value, price, 0))
        return Portfolio(portfolio.balances, perps, portfolio.lent, portfolio.borrowed)

    def _loss_cap(self, delta: dict, ranges: dict, prices, shock_at: int) -> int:
        """A cheap upper bound of ``_loss`` over every size in the options'
        ranges added to ``delta`` (``ranges``: per underlying with options,
        [lowest, highest] exposure, ``delta`` included): the sum over
        underlyings of each one's single-underlying loss at its largest
        |exposure| (the loss is sqrt(e^T R e) with |rho| <= 1, at most
        sum |e_u|; an underlying with several options ranges over the sum of
        their ranges). Prices are read in ``delta``'s order, then the other
        ranges' (as ``_loss`` reads them: the same missing one raises)."""
        params = self._p
        cap = 0
        seen = 0  # ranges of underlyings in delta
        for a, d in delta.items():
            pa = params[a]
            p = prices[a]  # (every exposed underlying's price is read, as _loss reads it)
            r = ranges.get(a)
            if r is None:
                x = d if d >= 0 else -d
            else:
                seen += 1
                x, y = r
                x = x if x >= 0 else -x
                if y > x or -y > x:
                    x = y if y >= 0 else -y
            if x:
                cap += -(-x * p * pa[shock_at] // pa[4])
        if seen < len(ranges):  # underlyings exposed only through options
            for a, (x, y) in ranges.items():
                if a not in delta:
                    pa = params[a]
                    p = prices[a]
                    x = x if x >= 0 else -x
                    if y > x or -y > x:
                        x = y if y >= 0 else -y
                    if x:
                        cap += -(-x * p * pa[shock_at] // pa[4])
        return cap

    def _loss_bound(self, delta: dict, options: list, prices, widened_at: int) -> int:
        """An upper bound of ``_loss`` over every corner of the options' size
        ranges added to ``delta`` (the loss is convex: its maximum over the
        ranges is at a corner); ``_worst`` past ``EXACT_CHOICES``."""
        candidates = {a: [d] for a, d in delta.items()}
        for asset, low, high in options:
            base = candidates.get(asset, [0])
            candidates[asset] = [b + size for b in base for size in (low, high)]
        params = self._p
        o = {a: [x * prices[a] * params[a][widened_at] for x in xs] for a, xs in candidates.items()}
        q = PPM * sum(max(v * v for v in vs) for vs in o.values())
        keys = sorted(o)
        rho = self._rho
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                r = rho.get((a, b))
                if r:
                    q += max(r * x * y for x in o[a] for y in o[b])
        if q <= 0:
            return 0
        t = -(-q // self._den2)
        loss = isqrt(t)
        return loss + 1 if loss * loss < t else loss

    def _loss(self, delta: dict, prices, shock_at: int, widened_at: int) -> int:
        """One level's scenario loss of the net exposures ``delta``
        ({underlying: base units}); KeyError for an underlying without a price."""
        params = self._p
        # The first two exposed underlyings in locals (the usual case), a list past them.
        a1 = a2 = exposed = None
        n1 = n2 = 0
        for a, d in delta.items():
            p = prices[a]  # evaluate reads every exposed underlying's price, zero net or not
            if d:
                if a1 is None:
                    a1, n1 = a, d * p
                elif a2 is None:
                    a2, n2 = a, d * p
                elif exposed is None:
                    exposed = [(a1, n1, params[a1]), (a2, n2, params[a2]), (a, d * p, params[a])]
                else:
                    exposed.append((a, d * p, params[a]))
        if a1 is None:
            return 0
        if a2 is None:
            pa = params[a1]
            so = pa[shock_at]
            return -(-n1 * so // pa[4]) if n1 > 0 else -(n1 * so // pa[4])
        if exposed is None:
            r = self._rho.get((a1, a2), 0)
            o1 = n1 * params[a1][widened_at]
            o2 = n2 * params[a2][widened_at]
            q = (o1 * o1 + o2 * o2) * PPM + r * o1 * o2
        else:
            rho = self._rho
            m = [(a, n * pa[widened_at]) for a, n, pa in exposed]
            q = sum(o * o for _, o in m) * PPM
            k = len(m)
            for i in range(k):
                ai, oi = m[i]
                for j in range(i + 1, k):
                    r = rho.get((ai, m[j][0]))
                    if r:
                        q += r * oi * m[j][1]
        if q <= 0:
            return 0
        t = -(-q // self._den2)  # ceil(sqrt(q / den2)) = ceil(sqrt(ceil(q / den2))), exactly
        loss = isqrt(t)
        if loss * loss < t:
            loss += 1
        return loss

    def liq_band(self, portfolio: Portfolio, prices, marks=(), held_back: bool = False) -> tuple[int, dict]:
        """``(available_liq(p, prices), safe_band(p, prices, LIQ, 0, available=that, marks=marks))``
        (the re-banding of an account without a de-risk policy needs both;
        tests/exchange/test_fast_checks.py). ``held_back``: the bands leave
        ``held_back(available)`` of the slack unused (for drift, the caller's)."""
        if portfolio.choices:
            available = self._available(portfolio, prices, 2, 6)
            delta, haircut, sites = self._exposures(portfolio)
            banded = available - held_back_of(available, 0) if held_back else available
            return available, self._bands(delta, haircut, sites, prices, banded, 0, 2, marks)
        # _holdings' figures and _exposures' haircut and rounding sites in one
        # pass (the same sums, dicts in the same order; Solvency._liq_fast has
        # its own copy of this, for the re-banding).
        quote = self.quote
        params = self._p
        equity = 0
        deductions = 0
        delta: dict = {}
        haircut: dict = {}
        sites: dict = {}
        get = delta.get
        for a, amount in portfolio.balances.items():  # each asset once, and first
            if a == quote:
                equity += amount
            elif amount:
                equity += amount * prices[a] // params[a][0]
                delta[a] = amount
                sites[a] = 1
        for a, size, entry, mark, owed in portfolio.perps:
            equity += size * mark // params[a][0] - entry - owed
            delta[a] = get(a, 0) + size
            sites[a] = sites.get(a, 0) + 1
        for a, amount in portfolio.lent:
            if a == quote:
                equity += amount
                deductions += amount - amount * self._quote_cf // PPM
            else:
                pa = params[a]
                v = amount * prices[a]
                value = v // pa[0]
                equity += value
                deductions += value - v * pa[3] // pa[4]
                delta[a] = get(a, 0) + amount
                haircut[a] = haircut.get(a, 0) + amount * (PPM - pa[3])
                sites[a] = sites.get(a, 0) + 2  # the value floor and the credited-part floor
        for a, owed, interest in portfolio.borrowed:
            if a == quote:
                equity -= owed
                deductions += interest
            else:
                p = prices[a]
                scale = params[a][0]
                equity += (-owed * p) // scale
                deductions -= (-interest * p) // scale
                delta[a] = get(a, 0) - owed
                haircut[a] = haircut.get(a, 0) + interest * PPM
                sites[a] = sites.get(a, 0) + 2
        available = equity - deductions - self._loss(delta, prices, 2, 6)
        banded = available - held_back_of(available, 0) if held_back else available
        return available, self._bands(delta, haircut, sites, prices, banded, 0, 2, marks)

    def _correlated(self, exposed) -> tuple:
        """Losses at both levels and the binding scenario of two or more
        exposed underlyings ``[(asset, delta * price, params)]``: the exact
        quadratic form on integers scaled to the largest decimals."""
        exposed.sort()
        best = 0
        binding = None
        m_open = []
        m_liq = []
        for a, n, pa in exposed:
            so = pa[1]
            single = -(-abs(n) * so // pa[4])
            if single > best:  # strict: ties keep the lowest asset
                best = single
                binding = (a, -so if n > 0 else so)
            m_open.append(n * pa[5])
            m_liq.append(n * pa[6])
        rho = self._rho
        if len(exposed) == 2:
            o1, o2 = m_open
            l1, l2 = m_liq
            r = rho.get((exposed[0][0], exposed[1][0]), 0)
            q_open = (o1 * o1 + o2 * o2) * PPM + r * o1 * o2
            q_liq = (l1 * l1 + l2 * l2) * PPM + r * l1 * l2
        else:
            q_open = sum(m * m for m in m_open) * PPM
            q_liq = sum(m * m for m in m_liq) * PPM
            k = len(exposed)
            for i in range(k):
                ai = exposed[i][0]
                for j in range(i + 1, k):
                    r = rho.get((ai, exposed[j][0]))
                    if r:
                        q_open += r * m_open[i] * m_open[j]
                        q_liq += r * m_liq[i] * m_liq[j]
        den2 = self._den2
        # ceil(sqrt(q / den2)) = ceil(sqrt(ceil(q / den2))), exactly
        loss_open = loss_liq = 0
        if q_open > 0:
            t = -(-q_open // den2)
            loss_open = isqrt(t)
            if loss_open * loss_open < t:
                loss_open += 1
        if q_liq > 0:
            t = -(-q_liq // den2)
            loss_liq = isqrt(t)
            if loss_liq * loss_liq < t:
                loss_liq += 1
        return loss_open, loss_liq, binding

    # ==== safe band ===========================================================

    def safe_band(self, portfolio: Portfolio, prices, level: str = OPEN, floor: int = 0,
                  margin: Margin | None = None, available: int | None = None, marks=()) -> dict:
        """Per exposed underlying ``u`` a price range ``(lo, hi)`` (inclusive)
        such that, for EVERY price vector with each ``p_u`` in its own range,
        available margin at ``level`` stays ``> floor``. Each perp's mark is
        assumed to move with its underlying's price one for one (exact for
        ``mark = "oracle"``), except the perps listed in ``marks``
        (``[(key, asset, size, mark)]``: a market whose mark is a median, which
        moves on its own - the book, the last trade): each gets an axis of its
        own, ``bands[key]`` a range of its MARK, and its size leaves the PnL
        slope of its underlying (it stays in the shock term, which is taken at
        the oracle price). Every axis, underlying or mark, is then one more
        ``u`` of the proof below with ``Knum = |size| * PPM`` (its value
        ``size * mark`` moves with the mark alone; its rounding site is already
        counted under its underlying); ``hi == UNBOUNDED`` / ``lo == 0`` mean no move
        that way can breach. If the margin is not above the floor even now
        (or the slack is used up by rounding), every band is ``(p, p)``:
        any move re-visits the account. ``margin``: this portfolio's
        ``evaluate(portfolio, prices)`` if the caller has it already; or
        ``available``: its available margin at ``level``.

        Proof (P0 = ``prices``, P any vector in the bands, A = available):

        1. Per underlying, the computed terms are ``f_u(p) = F_u(p) - eps_u(p)``
           where ``F_u`` is the exact (unrounded) value, linear in ``p`` with
           slope ``(delta_u*PPM - lent_u*(PPM - cf_u) - interest_u*PPM) /
           (PPM*10**d_u)`` (balance, perp sizes, lent and owed move with p;
           the credited part of lent at cf; interest to term is subtracted),
           and each of the ``R_u`` rounding sites (one per balance and perp,
           two per lent and per borrowing - one too many for lent, which only
           rounds its credited part) rounds against the account by less than 1,
           so ``0 <= eps_u < R_u``. Hence
           ``f_u(p0) - f_u(p) < |slope_u| * |p - p0| + R_u``.
           Quote-only terms do not depend on prices.
        2. The exact loss ``Lx(e) = sqrt(e^T R e)`` with R PSD and unit
           diagonal is a seminorm, so ``|Lx(e) - Lx(e')| <= Lx(e - e') <=
           sum_u |e_u - e'_u| * Lx(unit_u) = sum_u |e_u - e'_u|``; ``e_u`` is
           linear in ``p_u``: ``|de_u| = |delta_u| * shock_u * |dp_u| /
           (PPM*10**d_u)``. The computed loss is ``ceil(Lx)``, so
           ``loss(P) - loss(P0) < sum_u |de_u| + 1``.
        3. With ``K_u = Knum_u / (PPM*10**d_u)``, ``Knum_u = |delta_u*PPM -
           lent_u*(PPM-cf_u) - interest_u*PPM| + |delta_u|*shock_u`` (>= the
           two slopes): ``A(P0) - A(P) < sum_u (K_u*|dp_u| + R_u) + 1``.
        4. Slack ``S = A(P0) - floor``, budget ``B = S - 1 - sum_u R_u``,
           N = number of underlyings with ``Knum_u > 0``, ``b = B // N``;
           ``|dp_u| <= b * PPM * 10**d_u // Knum_u`` gives
           ``K_u*|dp_u| <= b`` so ``A(P0) - A(P) < N*b + sum R_u + 1 <= S``,
           i.e. ``A(P) > floor``. Underlyings with ``Knum_u = 0`` cannot
           move A (beyond the rounding already counted): unbounded. If
           ``B < 0`` the bands are ``(p, p)``: only P0 itself, where
           ``A > floor`` because ``S > 0``. QED.
        """
        if level not in (OPEN, LIQ):
            raise ValueError(f"level must be {OPEN!r} or {LIQ!r}")
        if available is None:
            if margin is None:
                margin = self.evaluate(portfolio, prices)
            available = margin.available_open if level == OPEN else margin.available_liq
        delta, haircut, sites = self._exposures(portfolio)
        return self._bands(delta, haircut, sites, prices, available, floor, 1 if level == OPEN else 2, marks)

    def _exposures(self, portfolio: Portfolio) -> tuple[dict, dict, dict]:
        """safe_band's per-underlying sums: net exposure (base units), haircut
        (``lent_u * (PPM - cf_u) + interest_u * PPM``) and rounding sites."""
        quote = self.quote
        params = self._p
        delta: dict = {}
        haircut: dict = {}
        sites: dict = {}
        for a, amount in portfolio.balances.items():
            if a != quote and amount:
                delta[a] = delta.get(a, 0) + amount
                sites[a] = sites.get(a, 0) + 1
        for a, size, _, _, _ in portfolio.perps:
            delta[a] = delta.get(a, 0) + size
            sites[a] = sites.get(a, 0) + 1
        for a, amount in portfolio.lent:
            if a != quote:
                delta[a] = delta.get(a, 0) + amount
                haircut[a] = haircut.get(a, 0) + amount * (PPM - params[a][3])
                sites[a] = sites.get(a, 0) + 2  # the value floor and the credited-part floor
        for a, owed, interest in portfolio.borrowed:
            if a != quote:
                delta[a] = delta.get(a, 0) - owed
                haircut[a] = haircut.get(a, 0) + interest * PPM
                sites[a] = sites.get(a, 0) + 2
        return delta, haircut, sites

    def _bands(self, delta: dict, haircut: dict, sites: dict, prices, available: int, floor: int,
               shock_at: int, marks=()) -> dict:
        """safe_band's ranges from its per-underlying sums (see its proof);
        ``marks``: safe_band's median-mark axes."""
        params = self._p
        bands: dict = {}
        if not sites:
            return bands
        slack = available - floor
        budget = slack - 1 - sum(sites.values())
        if slack <= 0 or budget < 0:  # no room: every band is the price (a mark axis: the mark) itself
            for a in sorted(sites):
                p = prices[a]
                bands[a] = (p, p)
            for key, _, _, mark in marks:
                bands[key] = (mark, mark)
            return bands
        pnl = delta
        if marks:  # a median mark's perp moves with its own axis, not its underlying's price
            pnl = dict(delta)
            for _, a, size, _ in marks:
                pnl[a] -= size
        knum = {}
        sensitive = len(marks)
        for a in sites:
            d = delta.get(a, 0)
            k = abs(pnl.get(a, 0) * PPM - haircut.get(a, 0)) + abs(d) * params[a][shock_at]
            knum[a] = k
            if k:
                sensitive += 1
        share = budget // sensitive if sensitive else 0  # (unused when nothing is sensitive)
        for a in sorted(sites):
            p = prices[a]
            k = knum[a]
            if not k:
                bands[a] = (0, UNBOUNDED)
            else:
                move = share * params[a][4] // k
                bands[a] = (p - move if p > move else 0, p + move)
        for key, a, size, mark in marks:
            move = share * params[a][4] // (abs(size) * PPM)
            bands[key] = (mark - move if mark > move else 0, mark + move)
        return bands


def held_back_of(available: int, floor: int) -> int:
    """The part of the slack above ``floor`` that price bands leave for drift
    (funding payments that change no object): half of it."""
    slack = available - floor
    return slack // 2 if slack > 0 else 0


# ==== threshold index =========================================================


def _retrigger(lists: dict, asset, key, old, new) -> None:
    """Move ``key``'s trigger on ``asset`` in one side's sorted lists from
    ``old`` to ``new`` (either None: none stored)."""
    if old is not None:
        lists[asset].remove((old, key))
    if new is not None:
        sl = lists.get(asset)
        if sl is None:
            sl = lists[asset] = SortedList()
        sl.add((new, key))


class ThresholdIndex:
    """Accounts indexed by the prices at which they must be looked at again.

    Per asset two SortedLists of ``(trigger price, key)``: the band lows
    (breached by a fall) and highs (breached by a rise). ``set(key, bands)``
    replaces a key's triggers (``bands``: {asset: (lo, hi)} from
    ``safe_band``; ``lo <= 0`` and ``hi >= UNBOUNDED`` are not stored, no move
    reaches them); ``discard(key)`` forgets it. ``crossed(asset, old, new)``
    returns, in sorted key order, the keys whose band the move left: a fall
    crosses ``lo`` when ``new < lo <= old``, a rise crosses ``hi`` when
    ``old <= hi < new`` (a band is inclusive; a ``(p, p)`` band is left by any
    move). O(log n + crossed) to find them (plus sorting the crossed keys).
    Crossed keys stay indexed: the caller re-evaluates them and ``set``s their
    new bands. Keys must be mutually comparable (addresses)."""

    __slots__ = ("_low", "_high", "_keys")

    def __init__(self) -> None:
        self._low: dict = {}
        self._high: dict = {}
        self._keys: dict = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keys

    def bands(self, key) -> dict:
        """The triggers stored for ``key`` ({asset: (lo or None, hi or None)})."""
        return dict(self._keys.get(key, {}))

    def set(self, key, bands: dict) -> None:
        old = self._keys.get(key) or {}
        low, high = self._low, self._high
        new = {}
        for a, (lo, hi) in bands.items():
            lo = lo if lo > 0 else None
            hi = hi if hi < UNBOUNDED else None
            was = old.get(a)
            olo, ohi = was if was is not None else (None, None)
            if lo != olo:
                _retrigger(low, a, key, olo, lo)
            if hi != ohi:
                _retrigger(high, a, key, ohi, hi)
            if lo is not None or hi is not None:
                new[a] = (lo, hi)
        for a, (olo, ohi) in old.items():
            if a not in bands:
                if olo is not None:
                    low[a].remove((olo, key))
                if ohi is not None:
                    high[a].remove((ohi, key))
        if new:
            self._keys[key] = new
        else:
            self._keys.pop(key, None)

    def discard(self, key) -> None:
        old = self._keys.pop(key, None)
        if old:
            for a, (lo, hi) in old.items():
                if lo is not None:
                    self._low[a].remove((lo, key))
                if hi is not None:
                    self._high[a].remove((hi, key))

    def outside(self, asset, value: int) -> list:
        """The keys whose band on ``asset`` does not hold ``value`` (``lo >
        value`` or ``hi < value``), in sorted key order: for an axis whose bands
        were set at different values (a median mark, read live when each account
        was re-banded), where "crossed since the last value" would miss a band
        the last value was already outside of."""
        hits: set = set()
        sl = self._low.get(asset)
        if sl:
            hits.update(key for _, key in sl.irange((value + 1,), None))
        sl = self._high.get(asset)
        if sl:
            hits.update(key for _, key in sl.irange(None, (value,), inclusive=(True, False)))
        return sorted(hits)

    def crossed(self, asset, old: int, new: int) -> list:
        if new < old:
            sl = self._low.get(asset)
            if not sl:
                return []
            # lo in (new, old]: a 1-tuple sorts before every (price, key)
            hits = sl.irange((new + 1,), (old + 1,), inclusive=(True, False))
        elif new > old:
            sl = self._high.get(asset)
            if not sl:
                return []
            hits = sl.irange((old,), (new,), inclusive=(True, False))
        else:
            return []
        return sorted([key for _, key in hits])

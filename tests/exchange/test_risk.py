"""The portfolio risk model (exchange/risk.py): the basis trade of issue #6,
correlations, exact rounding against the account, a differential test against a
point-by-point Fraction reference (the literal scenario grid), hypothesis
properties (monotone in the shocks, hedges net to zero at any scale, safe_band
soundness) and the threshold index against a brute-force model."""

from __future__ import annotations

from fractions import Fraction
from math import isqrt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange.risk import (
    LIQ, OPEN, PPM, UNBOUNDED, Margin, Portfolio, RiskModel, ThresholdIndex, UnderlyingRisk,
    is_psd, scenario_grid,
)
from exchange_helpers import default_doc

USDC, WETH, WBTC, LINK = 0, 1, 2, 3
USD = 10**6
ETH = 10**18
BTC = 10**8
ETH_PX = 3000 * USD  # quote units per whole token
BTC_PX = 60_000 * USD
DECIMALS = {USDC: 6, WETH: 18, WBTC: 8, LINK: 18}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def model(rho: int | None = None, shock_open=150_000, shock_liq=100_000, credit_factor=980_000,
          scenarios=7) -> RiskModel:
    und = {USDC: UnderlyingRisk(6, 0, 0, credit_factor, scenarios),
           WETH: UnderlyingRisk(18, shock_open, shock_liq, credit_factor, scenarios),
           WBTC: UnderlyingRisk(8, shock_open, shock_liq, credit_factor, scenarios)}
    return RiskModel(USDC, und, {} if rho is None else {(WETH, WBTC): rho})


def worth(usd: int, price: int, decimals: int = 18) -> int:
    """Base units worth ``usd`` whole dollars at ``price`` (floored)."""
    return usd * USD * 10**decimals // price


# ==== the basis trade (issue #6) =============================================

# 100 USDC of the account's own, 900 USDC borrowed for 10 days at 10 %/year,
# 1,000 USDC of spot ETH bought, 1,000 USDC of ETH perp shorted, ETH at 3,000.
SPOT = worth(1000, ETH_PX)  # 0.333... WETH
INTEREST = 900 * USD * 100_000_000 * 864_000 // (10**9 * 31_536_000) + 1  # ceil-ish, ~2.47 USDC
PERP_ENTRY = -(SPOT * ETH_PX // ETH)  # a short's entry value: minus what it received


def basis(price: int = ETH_PX) -> Portfolio:
    return Portfolio(balances={USDC: 100 * USD + 900 * USD - 1000 * USD, WETH: SPOT},
                     perps=[(WETH, -SPOT, PERP_ENTRY, price, 0)],
                     borrowed=[(USDC, 900 * USD, INTEREST)])


def test_basis_trade_is_allowed_and_survives_thirty_percent_moves():
    m = model()
    now = m.evaluate(basis(), {WETH: ETH_PX})
    assert now.loss_open == now.loss_liq == 0 and now.binding is None  # the legs offset exactly
    assert 99 * USD < now.equity <= 100 * USD
    assert now.available_open == now.equity - INTEREST > 95 * USD
    # the naive per-position view would need 15 % of each leg (spot, perp) - more than the equity
    assert now.naive_open == 300 * USD
    assert now.equity - now.deductions - now.naive_open < 0
    for move in (-300_000, -150_000, 0, 150_000, 300_000):
        p = ETH_PX * (PPM + move) // PPM
        after = m.evaluate(basis(p), {WETH: p})
        assert after.available_liq > 0, move
        assert after.available_open > 0, move
        assert abs(after.equity - now.equity) <= 2  # only rounding moves it


def test_unhedged_legs_are_rejected_at_the_opening_level():
    m = model()
    prices = {WETH: ETH_PX}
    spot_with_borrow = Portfolio(balances={USDC: 0, WETH: SPOT}, borrowed=[(USDC, 900 * USD, INTEREST)])
    perp_alone = Portfolio(balances={USDC: 100 * USD}, perps=[(WETH, -SPOT, PERP_ENTRY, ETH_PX, 0)])
    for p in (spot_with_borrow, perp_alone):
        margin = m.evaluate(p, prices)
        assert 99 * USD < margin.equity <= 100 * USD
        assert margin.loss_open == 150 * USD  # 15 % of 1,000 USDC, ceiled
        assert margin.available_open < 0
        assert margin.available_liq <= 0  # 10 % of 1,000 takes all of it
    assert m.evaluate(spot_with_borrow, prices).binding == (WETH, -150_000)  # a long fears the fall
    assert m.evaluate(perp_alone, prices).binding == (WETH, 150_000)


def test_margin_identity_and_levels():
    m = model()
    p = Portfolio(balances={USDC: 5000 * USD, WETH: 2 * ETH}, lent=[(USDC, 1000 * USD)],
                  borrowed=[(WETH, ETH // 2, ETH // 1000)])
    r = m.evaluate(p, {WETH: ETH_PX})
    assert r.equity == 5000 * USD + 6000 * USD + 1000 * USD - 1500 * USD
    assert r.deductions == 20 * USD + 3 * USD  # 2 % of the lent USDC + 0.001 ETH interest
    assert r.loss_open == 675 * USD and r.loss_liq == 450 * USD  # 1.5 ETH net long
    assert r.available_open == r.equity - r.deductions - r.loss_open
    assert r.available_liq == r.equity - r.deductions - r.loss_liq
    assert r.naive_open == 1125 * USD  # 15 % of 2.5 ETH gross: the borrow is charged, not netted


# ==== correlations ============================================================

ETH_2K, BTC_50K = 2000 * USD, 50_000 * USD
PAIR_PRICES = {WETH: ETH_2K, WBTC: BTC_50K}
# long 1,000 USDC of ETH, short 1,000 USDC of BTC: e = (+150, -150) USDC at the opening shock
PAIR = Portfolio(balances={USDC: 10_000 * USD, WETH: ETH // 2, WBTC: -(2 * BTC // 100)})


def expected_loss(rho_ppm: int) -> int:
    e = 150 * USD
    q = Fraction(2 * e * e) - Fraction(2 * rho_ppm * e * e, PPM)
    n = isqrt(q.numerator // q.denominator)
    while n * n < q:
        n += 1
    return n


def test_correlation_between_uncorrelated_and_perfect():
    loss = {rho: model(rho).evaluate(PAIR, PAIR_PRICES).loss_open for rho in (0, 800_000, PPM)}
    assert loss[800_000] == expected_loss(800_000) == 94_868_330  # 150 * sqrt(0.4), ceiled
    assert loss[0] == expected_loss(0) == 212_132_035  # 150 * sqrt(2), ceiled
    assert loss[PPM] == 0  # perfectly correlated: the short BTC hedges the long ETH
    assert loss[PPM] < loss[800_000] < loss[0]
    # same direction: correlation adds risk instead
    same = Portfolio(balances={USDC: 10_000 * USD, WETH: ETH // 2, WBTC: 2 * BTC // 100})
    assert model(800_000).evaluate(same, PAIR_PRICES).loss_open > model(0).evaluate(same, PAIR_PRICES).loss_open
    assert model(PPM).evaluate(same, PAIR_PRICES).loss_open == 300 * USD
    assert model(800_000).evaluate(PAIR, PAIR_PRICES).binding == (WETH, -150_000)  # tie: lowest asset


def test_correlation_validation():
    und = {USDC: UnderlyingRisk(6, 0, 0), WETH: UnderlyingRisk(18), WBTC: UnderlyingRisk(8), 3: UnderlyingRisk(18)}
    with pytest.raises(ValueError, match="semidefinite"):
        RiskModel(USDC, und, {(WETH, WBTC): PPM, (WETH, 3): PPM, (WBTC, 3): -PPM})
    with pytest.raises(ValueError, match="outside"):
        RiskModel(USDC, und, {(WETH, WBTC): PPM + 1})
    with pytest.raises(ValueError, match="quote"):
        RiskModel(USDC, und, {(USDC, WBTC): 0})
    ok = RiskModel(USDC, und, {(WBTC, WETH): 500_000, (WETH, 3): 900_000, (WBTC, 3): 500_000})
    assert ok.correlations == {(WETH, WBTC): 500_000, (WETH, 3): 900_000, (WBTC, 3): 500_000}
    assert is_psd([[1, 1], [1, 1]]) and not is_psd([[1, 2], [2, 1]]) and not is_psd([[0, 1], [1, 0]])


def test_from_default_config():
    cfg = ex.load(default_doc())
    m = RiskModel.from_config(cfg)
    assert m.quote == cfg.asset("USDC").id
    weth, wbtc = cfg.asset("WETH").id, cfg.asset("WBTC").id
    assert m.underlyings[weth] == UnderlyingRisk(18, 150_000, 100_000, 980_000, 7)
    assert m.correlations == {(min(weth, wbtc), max(weth, wbtc)): 800_000}


# ==== rounding: always against the account ===================================


def test_rounding_goes_against_the_account():
    m = model()
    prices = {WETH: ETH_PX}
    one_wei_long = m.evaluate(Portfolio(balances={WETH: 1}), prices)
    assert one_wei_long.equity == 0  # 3e-9 USDC of value floors to 0
    assert one_wei_long.loss_open == 1 and one_wei_long.available_open == -1  # loss ceils to 1
    assert one_wei_long.naive_open == 1 and one_wei_long.naive_liq == 1
    assert m.evaluate(Portfolio(balances={WETH: -1}), prices).equity == -1  # a debt ceils
    short = m.evaluate(Portfolio(perps=[(WETH, -1, 0, ETH_PX, 0)]), prices)
    assert short.equity == -1
    borrow = m.evaluate(Portfolio(borrowed=[(WETH, 1, 1)]), prices)
    assert borrow.equity == -1 and borrow.deductions == 1
    lent = m.evaluate(Portfolio(lent=[(USDC, 1)]), prices)
    assert lent.equity == 1 and lent.deductions == 1  # 0.98 credited floors to 0
    lent_eth = m.evaluate(Portfolio(lent=[(WETH, 10**9)]), prices)  # 3 USDC units of value
    assert lent_eth.equity == 3 and lent_eth.deductions == 1  # credited 2.94 floors to 2
    # the correlated square root ceils too: e ~ (1, 1) units uncorrelated -> sqrt(2) -> 2
    tiny = Portfolio(balances={WETH: 2_222_222_223, WBTC: 1})
    r = model(0).evaluate(tiny, {WETH: ETH_PX, WBTC: 666_666_667})
    assert r.loss_open == 2 and r.equity == 6 + 6  # 6.67 and 6.67 floor
    assert model(PPM).evaluate(tiny, {WETH: ETH_PX, WBTC: 666_666_667}).loss_open == 3  # 2.0000..1 ceils


def test_scenario_grid():
    assert scenario_grid(150_000, 7) == [-150_000, -100_000, -50_000, 0, 50_000, 100_000, 150_000]
    assert scenario_grid(100_000, 4)[0] == -100_000 and scenario_grid(100_000, 4)[-1] == 100_000
    assert scenario_grid(100_000, 1) == [-100_000, 100_000]


# ==== differential test against a point-by-point Fraction reference ============


def reference(m: RiskModel, p: Portfolio, prices: dict) -> Margin:
    """Per position, exact Fractions, the scenario grid evaluated point by point,
    the correlation matrix as a full double sum; rounding applied once per
    position (floor what is owned, ceil what is owed / deducted / lost)."""
    import math

    def value(asset, amount, price=None):
        if asset == USDC:
            return Fraction(amount)
        return Fraction(amount * (prices[asset] if price is None else price), 10 ** DECIMALS[asset])

    equity = 0
    deductions = 0
    delta = {}
    gross = {}
    for a, amt in p.balances.items():
        equity += math.floor(value(a, amt))
        if a != USDC and amt:
            delta[a] = delta.get(a, 0) + amt
            gross[a] = gross.get(a, 0) + abs(amt)
    for a, size, entry, mark, owed in p.perps:
        equity += math.floor(value(a, size, mark)) - entry - owed
        delta[a] = delta.get(a, 0) + size
        gross[a] = gross.get(a, 0) + abs(size)
    for a, amt in p.lent:
        v = value(a, amt)
        cf = m.underlyings[a].credit_factor
        equity += math.floor(v)
        deductions += math.floor(v) - math.floor(v * cf / PPM)
        if a != USDC:
            delta[a] = delta.get(a, 0) + amt
            gross[a] = gross.get(a, 0) + amt
    for a, owed, interest in p.borrowed:
        equity -= math.ceil(value(a, owed))
        deductions += math.ceil(value(a, interest))
        if a != USDC:
            delta[a] = delta.get(a, 0) - owed
            gross[a] = gross.get(a, 0) + owed

    def loss(level):
        signed = {}
        best = (0, None)
        for a in sorted(delta):
            u = m.underlyings[a]
            shock = u.shock_open if level == OPEN else u.shock_liq
            grid = scenario_grid(shock, u.scenarios)
            worst_move = max(grid, key=lambda mv: (-delta[a] * mv, -mv if delta[a] > 0 else mv))
            worst = -value(a, delta[a]) * Fraction(worst_move, PPM)
            if worst > 0:
                signed[a] = worst if worst_move < 0 else -worst
                if math.ceil(worst) > best[0]:
                    best = (math.ceil(worst), (a, worst_move))
        q = Fraction(0)
        for i in signed:
            for j in signed:
                rho = PPM if i == j else m.correlations.get((min(i, j), max(i, j)), 0)
                q += Fraction(rho, PPM) * signed[i] * signed[j]
        n = 0 if q <= 0 else isqrt(math.floor(q))
        while n * n < q:
            n += 1
        return n, best[1]

    lo, binding = loss(OPEN)
    ll, _ = loss(LIQ)
    naive = {}
    for level in (OPEN, LIQ):
        naive[level] = sum(math.ceil(value(a, g) * Fraction(
            m.underlyings[a].shock_open if level == OPEN else m.underlyings[a].shock_liq, PPM))
            for a, g in gross.items())
    return Margin(equity, equity - deductions - lo, equity - deductions - ll, binding,
                  naive[OPEN], naive[LIQ], lo, ll, deductions)


PRICE_RANGE = {WETH: (10 * USD, 100_000 * USD), WBTC: (100 * USD, 1_000_000 * USD), LINK: (1, 1000 * USD)}
AMOUNT = {USDC: 10**12, WETH: 10**21, WBTC: 10**9, LINK: 10**24}


@st.composite
def portfolios(draw, assets=(USDC, WETH, WBTC)):
    prices = {a: draw(st.integers(*PRICE_RANGE[a])) for a in assets if a != USDC}
    amount = lambda a, lo=None: st.integers(-AMOUNT[a] if lo is None else lo, AMOUNT[a])  # noqa: E731
    balances = {a: draw(amount(a)) for a in draw(st.lists(st.sampled_from(assets), unique=True, max_size=3))}
    perps = []
    for a in draw(st.lists(st.sampled_from([x for x in assets if x != USDC] or [WETH]), max_size=2)):
        if a not in assets:
            break
        size = draw(amount(a))
        mark = prices[a] + draw(st.integers(-prices[a] // 100, prices[a] // 100))
        entry = size * draw(st.integers(*PRICE_RANGE[a])) // 10 ** DECIMALS[a]
        perps.append((a, size, entry, mark, draw(st.integers(-10**9, 10**9))))
    lent = [(a, draw(amount(a, 0))) for a in draw(st.lists(st.sampled_from(assets), max_size=2))]
    borrowed = [(a, draw(amount(a, 0)), draw(st.integers(0, AMOUNT[a] // 100)))
                for a in draw(st.lists(st.sampled_from(assets), max_size=2))]
    return Portfolio(balances, perps, lent, borrowed), prices


RHOS = st.sampled_from([None, -PPM, -500_000, 0, 300_000, 800_000, PPM])


@SETTINGS
@given(portfolios(), RHOS, st.integers(1, 11))
def test_evaluate_equals_the_reference(case, rho, scenarios):
    p, prices = case
    m = model(rho, scenarios=scenarios)
    assert m.evaluate(p, prices) == reference(m, p, prices)


@SETTINGS
@given(portfolios(assets=(USDC, WETH, WBTC, LINK)), st.sampled_from([-PPM, -400_000, 0, 500_000, 900_000, PPM]),
       st.sampled_from([-PPM, -400_000, 0, 500_000, 900_000, PPM]), st.sampled_from([-400_000, 0, 500_000, PPM]),
       st.integers(0, 400_000))
def test_three_underlyings_equal_the_reference(case, r12, r13, r23, link_shock):
    p, prices = case
    rho = {(WETH, WBTC): r12, (WETH, LINK): r13, (WBTC, LINK): r23}
    if not is_psd([[PPM, r12, r13], [r12, PPM, r23], [r13, r23, PPM]]):
        with pytest.raises(ValueError):
            RiskModel(USDC, {**model().underlyings, LINK: UnderlyingRisk(18)}, rho)
        return
    und = {**model().underlyings, LINK: UnderlyingRisk(18, link_shock, link_shock // 2, 900_000, 5)}
    m = RiskModel(USDC, und, rho)
    assert m.evaluate(p, prices) == reference(m, p, prices)


# ==== properties ===============================================================


@SETTINGS
@given(portfolios(), RHOS, st.integers(0, 333_333), st.integers(0, 333_333), st.integers(1, 3))
def test_margin_is_monotone_in_the_shocks(case, rho, a, b, k):
    p, prices = case
    shock_open, shock_liq = max(a, b), min(a, b)
    base = model(rho, shock_open, shock_liq)
    larger = model(rho, shock_open * k, shock_liq * k)  # all shocks scaled together
    r, s = base.evaluate(p, prices), larger.evaluate(p, prices)
    assert s.available_open <= r.available_open and s.available_liq <= r.available_liq
    assert r.available_open <= r.available_liq  # shock_liq <= shock_open, same proportion per asset
    assert s.naive_open >= r.naive_open and r.naive_open >= r.naive_liq
    # without correlations each asset's shock alone is monotone too
    und = dict(model(None, shock_open, shock_liq).underlyings)
    und[WBTC] = und[WBTC]._replace(shock_open=min(999_999, shock_open * k))
    assert RiskModel(USDC, und).evaluate(p, prices).available_open <= model(None, shock_open, shock_liq).evaluate(
        p, prices).available_open


@SETTINGS
@given(st.integers(1, 10**6), st.integers(1, 10**4), st.integers(*PRICE_RANGE[WETH]),
       st.integers(*PRICE_RANGE[WBTC]), RHOS)
def test_hedged_portfolio_has_no_scenario_loss_at_any_scale(k, j, eth_px, btc_px, rho):
    eth, btc = k * 10**15, j * 10**5
    p = Portfolio(balances={USDC: 1, WETH: eth, WBTC: -btc},
                  perps=[(WETH, -eth, -(eth * eth_px // ETH), eth_px, 0),
                         (WBTC, btc, btc * btc_px // BTC, btc_px, 0)])
    r = model(rho).evaluate(p, {WETH: eth_px, WBTC: btc_px})
    assert r.loss_open == r.loss_liq == 0 and r.binding is None
    assert r.naive_open > 0  # per-position margin would charge both legs twice
    assert r.available_open == r.available_liq == r.equity - r.deductions


def move_to(p: Portfolio, new_prices: dict, old_prices: dict) -> Portfolio:
    """The same holdings with each perp's mark moved as much as its price."""
    perps = [(a, size, entry, mark + new_prices[a] - old_prices[a], owed) for a, size, entry, mark, owed in p.perps]
    return Portfolio(p.balances, perps, p.lent, p.borrowed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(portfolios(), RHOS, st.sampled_from([OPEN, LIQ]), st.integers(0, 10**12), st.data())
def test_safe_band_is_sound(case, rho, level, cushion, data):
    p, prices = case
    m = model(rho)
    r = m.evaluate(p, prices)
    available = r.available_open if level == OPEN else r.available_liq
    floor = available - 1 - cushion  # slack >= 1
    bands = m.safe_band(p, prices, level, floor)
    new = dict(prices)
    for a, (lo, hi) in bands.items():
        assert lo <= prices[a] <= hi
        hi = min(hi, prices[a] * 20)
        new[a] = data.draw(st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi)))
    moved = m.evaluate(move_to(p, new, prices), new)
    assert (moved.available_open if level == OPEN else moved.available_liq) > floor


def test_safe_band_examples():
    m = model()
    prices = {WETH: ETH_PX}
    # hedged: only the 10 % ... interest and rounding move it, the band is wide
    (lo, hi), = m.safe_band(basis(), prices, LIQ).values()
    assert lo == 0 and hi == UNBOUNDED
    # a plain long with cash: the exact breach of the liquidation level is where
    # cash + delta*p*(1 - 10 %) = 0; the band stays above it and covers most of the way
    long = Portfolio(balances={USDC: -2000 * USD, WETH: ETH})
    (lo, hi), = m.safe_band(long, prices, LIQ).values()
    breach = Fraction(2000 * USD, Fraction(9, 10))  # 2,222.2 USDC
    assert breach < lo < ETH_PX and hi > ETH_PX
    assert (ETH_PX - lo) >= Fraction(7, 10) * (ETH_PX - breach)
    assert m.evaluate(Portfolio({USDC: -2000 * USD, WETH: ETH}), {WETH: lo}).available_liq > 0
    assert m.safe_band(long, prices, LIQ, 0, m.evaluate(long, prices)) == {WETH: (lo, hi)}
    # already under the floor: any move revisits it
    assert m.safe_band(long, prices, OPEN, floor=10**12) == {WETH: (ETH_PX, ETH_PX)}
    assert m.safe_band(Portfolio({USDC: 5}), prices) == {}
    with pytest.raises(ValueError):
        m.safe_band(long, prices, "maintenance")


# ==== threshold index ==========================================================


def test_threshold_index_basics():
    idx = ThresholdIndex()
    idx.set(b"b", {WETH: (90, 110), WBTC: (0, UNBOUNDED)})
    idx.set(b"a", {WETH: (95, 105)})
    idx.set(b"c", {WETH: (100, 100)})  # unsafe: any move
    assert len(idx) == 3 and idx.bands(b"b") == {WETH: (90, 110)}  # unbounded sides are not stored
    assert idx.crossed(WETH, 100, 100) == []
    assert idx.crossed(WETH, 100, 99) == [b"c"]
    assert idx.crossed(WETH, 100, 95) == [b"c"]  # 95 is still inside a's band (inclusive)
    assert idx.crossed(WETH, 100, 94) == [b"a", b"c"]
    assert idx.crossed(WETH, 100, 10) == [b"a", b"b", b"c"]
    assert idx.crossed(WETH, 100, 106) == [b"a", b"c"]
    assert idx.crossed(WBTC, 1, 10**30) == []
    idx.set(b"a", {WETH: (50, 150)})
    assert idx.crossed(WETH, 100, 94) == [b"c"]
    idx.discard(b"c")
    idx.discard(b"zzz")
    assert idx.crossed(WETH, 100, 89) == [b"b"] and b"c" not in idx
    idx.set(b"b", {})
    assert len(idx) == 1 and idx.crossed(WETH, 100, 1) == [b"a"]


KEYS = st.sampled_from([bytes([i]) * 20 for i in range(8)])
BAND = st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda t: (min(t), max(t) if max(t) < 40 else UNBOUNDED))
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), KEYS, st.dictionaries(st.sampled_from([WETH, WBTC]), BAND, max_size=2)),
    st.tuples(st.just("discard"), KEYS),
    st.tuples(st.just("crossed"), st.sampled_from([WETH, WBTC]), st.integers(0, 41), st.integers(0, 41)),
), max_size=40)


@SETTINGS
@given(OPS)
def test_threshold_index_matches_brute_force(ops):
    idx = ThresholdIndex()
    model_bands: dict = {}
    for op in ops:
        if op[0] == "set":
            idx.set(op[1], op[2])
            model_bands[op[1]] = dict(op[2])
        elif op[0] == "discard":
            idx.discard(op[1])
            model_bands.pop(op[1], None)
        else:
            _, asset, old, new = op
            expect = sorted(k for k, bands in model_bands.items() if asset in bands and (
                (new < old and new < bands[asset][0] <= old) or (new > old and old <= bands[asset][1] < new)))
            assert idx.crossed(asset, old, new) == expect


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(portfolios(assets=(USDC, WETH)), min_size=1, max_size=12), st.integers(*PRICE_RANGE[WETH]),
       st.integers(*PRICE_RANGE[WETH]))
def test_oracle_update_visits_every_account_it_puts_at_risk(cases, old_eth, new_eth):
    """End to end: accounts indexed by their liquidation-level bands at one
    ETH price; after a move, every account the index does not return still
    has liquidation-level margin > 0."""
    m = model()
    idx = ThresholdIndex()
    accounts: dict = {}
    old = {WETH: old_eth}
    for i, (p, prices) in enumerate(cases):
        p = move_to(p, old, prices)
        if m.evaluate(p, old).available_liq > 0:
            key = i.to_bytes(20, "big")
            idx.set(key, m.safe_band(p, old, LIQ))
            accounts[key] = p
    crossed = set(idx.crossed(WETH, old_eth, new_eth))
    new = {WETH: new_eth}
    for key, p in accounts.items():
        if key not in crossed:
            assert m.evaluate(move_to(p, new, old), new).available_liq > 0

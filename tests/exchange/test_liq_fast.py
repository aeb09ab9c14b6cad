"""The re-banding's one-pass figures (liquidation.Solvency._liq_fast: an
exposed account without a de-risk policy, at every Tick for every account a
block touched) against their composition of the general parts
(``_liq_slow``: portfolio_of, _drift, RiskModel.liq_band, the time axis and
the coarse grid): after every command of random streams - spot with
automatic borrowing of USDC and WETH, perps on an oracle-marked and a
median-marked market, lending, repayments, withdrawals, oracle moves, Ticks
days apart (loans mature, roll over or fall overdue), reverted commands -
both give the same (available_liq, bands) for every exposed account, with
and without every asset priced; and at the liquidation edge, where the coarse
grid no longer hides a unit's difference in a band."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange.liquidation import _totals
from exchange_helpers import CTX, USD, USDC, WETH
from test_fast_checks import _apply
from test_floor_available import BTC_LOT, BTC_MID, BTC_PERP, WBTC, btc_book
from test_portfolio_properties import LENDER, TRADERS, USDC_LEND, WETH_LEND, _command, _setup, step


def _exposed_setup(config):
    """_setup, and one trader exposed from the start (a USDC borrowing)."""
    e = _setup(config)
    e.apply(ex.PlaceOrder(TRADERS[0], USDC_LEND, ex.Side.BUY, 100_000_000, 100 * USD,
                          time_in_force=ex.TimeInForce.IOC), CTX)
    return e


def _compare(e, now: int) -> int:
    """Asserts fast == slow for every exposed account; returns how many."""
    solvency = e._parts["solvency"]
    compared = 0
    for address in [*TRADERS, LENDER]:
        a = e._accounts.get(address)
        if a is None or not a.exists or not solvency._exposed(a):
            continue
        marks = solvency._median_marks(a) if solvency.median else ()
        slow = solvency._liq_slow(a, now, marks)
        assert solvency._liq_fast(a, now, marks, _totals(a)) == slow
        # inside a batch: the median marks and the perp markets' terms read once
        inside = []
        solvency._with_live_marks(lambda: inside.append(solvency._liq_fast(a, now, marks, _totals(a))))
        assert inside == [slow]
        compared += slow is not None
    return compared


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(step, st.integers(0, 9)), min_size=5, max_size=40), st.booleans())
def test_liq_fast_equals_the_composed_figures(config, steps, btc_priced):
    e = _exposed_setup(config)
    if btc_priced:
        e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    oracle = 2000 * USD
    now, block = CTX.timestamp, CTX.block_number
    assert _compare(e, now) == 1  # the borrower (not vacuous)
    for (action, trader, side, offset, size, flag), roll in steps:
        made = _command(e, config, action, TRADERS[trader], side, offset, size, flag, oracle, now)
        if made is not None:
            command = made[0]
            if action == 1:
                # a Tick: minutes apart, or days (loans reach their maturity)
                now += 600 * (1 + abs(offset)) if roll < 7 else 86_400 * (1 + roll)
                block += 1
            if _apply(e, command, ex.Context(block, now), undo=roll == 1) and action == 0:
                oracle = command.price
        _compare(e, now)


_BTC_STEP = st.tuples(st.integers(0, 6), st.integers(0, 2), st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
                      st.integers(-40, 40), st.integers(1, 60), st.integers(0, 9))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.lists(_BTC_STEP, min_size=3, max_size=25))
def test_liq_fast_on_a_median_marked_market(config, steps):
    """Positions on BTC-PERP (a median mark: its own axis in the bands) beside
    spot WBTC and USDC debt."""
    e = btc_book(_exposed_setup(config), config)
    btc_oracle = 60_000 * USD
    now, block = CTX.timestamp, CTX.block_number
    compared = 0
    for kind, trader, side, offset, lots, roll in steps:
        who = TRADERS[trader]
        if kind == 0:  # a BTC-PERP order that may rest or cross
            command = ex.PlaceOrder(who, BTC_PERP, side, BTC_MID + 500 * offset, lots * BTC_LOT)
        elif kind == 1:  # a BTC-PERP take (sets the last trade)
            price = BTC_MID + 5000 if side == ex.Side.BUY else BTC_MID - 5000
            command = ex.PlaceOrder(who, BTC_PERP, side, price, lots * BTC_LOT, time_in_force=ex.TimeInForce.IOC)
        elif kind == 2:  # borrow USDC
            command = ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, 100_000_000, lots * 100 * USD,
                                    time_in_force=ex.TimeInForce.IOC)
        elif kind == 3:  # withdraw USDC, maybe past the free balance
            command = ex.Withdraw(who, USDC, lots * 10 * USD)
        elif kind == 4:  # the WBTC oracle moves (the median's other inputs stay)
            btc_oracle = max(1000 * USD, btc_oracle + offset * 150 * USD)
            command = ex.SetOraclePrice(config.oracle, WBTC, btc_oracle)
        elif kind == 5:
            command = ex.CancelAll(who, BTC_PERP if roll % 2 else None)
        else:  # funding and time
            now += 600 * (1 + abs(offset))
            block += 1
            command = ex.Tick()
        _apply(e, command, ex.Context(block, now), undo=roll == 1)
        compared += _compare(e, now)
    assert compared


def test_liq_fast_with_an_overdue_borrowing(config):
    """A borrowing that matured with nothing to repay it and no offer to roll
    it onto is overdue: its interest drifts (_overdue_drift), in USDC and in
    WETH; the one-pass figures still equal the composed ones."""
    e = _setup(config)
    who = TRADERS[0]
    now = CTX.timestamp
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    e.apply(ex.Deposit(who, WBTC, 10**8), CTX)  # the collateral: 1 WBTC
    e.apply(ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, 100_000_000, 800 * USD,
                          time_in_force=ex.TimeInForce.IOC), CTX)
    e.apply(ex.PlaceOrder(who, WETH_LEND, ex.Side.BUY, 100_000_000, 2 * 10**17,  # 0.2 WETH
                          time_in_force=ex.TimeInForce.IOC), CTX)
    e.apply(ex.Withdraw(who, USDC, 1300 * USD), CTX)  # all of it
    e.apply(ex.Withdraw(who, WETH, 12 * 10**17), CTX)  # all of it
    e.apply(ex.CancelAll(LENDER), CTX)  # nothing to roll onto
    assert _compare(e, now) == 1
    later = now + 11 * 86_400
    e.apply(ex.Tick(), ex.Context(CTX.block_number + 1, later))
    assert e.lending.overdue and all(loan.overdue for loan in e._accounts[who].loans.values())
    for step in range(3):
        assert _compare(e, later + step * 3_600) == 1


def _edge_slack(e, address: bytes, now: int) -> int | None:
    solvency = e._parts["solvency"]
    a = e._accounts[address]
    marks = solvency._median_marks(a) if solvency.median else ()
    found = solvency._liq_slow(a, now, marks)
    return None if found is None else found[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                              HealthCheck.function_scoped_fixture])
@given(st.integers(1, 12), st.integers(0, 9), st.integers(11, 14), st.booleans(), st.sampled_from([0, 1, 30]),
       st.integers(-30, 30))
def test_liq_fast_at_the_liquidation_edge(config, borrow_tenths, lend_tenths, perp_tenths, short, days, btc_lots):
    """Near available_liq = 0 the slack is a few units, so the bands are a few
    units wide and the coarse grid leaves them as they are (g = 1): every
    rounding site and the haircut of lent and borrowed WETH show in the bands
    (far from it the grid hides a unit's difference). The trader borrows WETH
    from the lender, lends some to another trader, and takes an ETH-PERP
    position larger than its holdings (and maybe a BTC-PERP one: a median
    mark's axis); the WETH oracle is walked to where its available_liq
    changes sign, and both figures compared around that price."""
    e = _setup(config)
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)  # every asset priced: the fast path
    who = TRADERS[0]
    ioc = ex.TimeInForce.IOC
    e.apply(ex.PlaceOrder(who, WETH_LEND, ex.Side.BUY, 100_000_000, borrow_tenths * 10**17, time_in_force=ioc), CTX)
    if lend_tenths:  # below the lender's 30 %: the other trader takes this offer
        e.apply(ex.PlaceOrder(who, WETH_LEND, ex.Side.SELL, 20_000_000, lend_tenths * 10**17), CTX)
        e.apply(ex.PlaceOrder(TRADERS[1], WETH_LEND, ex.Side.BUY, 20_000_000, lend_tenths * 10**17,
                              time_in_force=ioc), CTX)
    side = ex.Side.SELL if short else ex.Side.BUY
    price = 1900 * 1000 if short else 2100 * 1000  # per 0.001 WETH lot, past the lender's quotes
    e.apply(ex.PlaceOrder(who, 2, side, price, perp_tenths * 10**17, time_in_force=ioc), CTX)
    if btc_lots:
        e.apply(ex.Deposit(LENDER, WBTC, 10**9), CTX)
        e.apply(ex.PlaceOrder(LENDER, BTC_PERP, ex.Side.BUY, BTC_MID - 1000, 50 * BTC_LOT), CTX)
        e.apply(ex.PlaceOrder(LENDER, BTC_PERP, ex.Side.SELL, BTC_MID + 1000, 50 * BTC_LOT), CTX)
        btc_side, btc_price = (ex.Side.BUY, BTC_MID + 5000) if btc_lots > 0 else (ex.Side.SELL, BTC_MID - 5000)
        e.apply(ex.PlaceOrder(who, BTC_PERP, btc_side, btc_price, abs(btc_lots) * BTC_LOT, time_in_force=ioc), CTX)
        assert e.position(who, BTC_PERP).size
    now = CTX.timestamp + days * 86_400
    if days:
        e.apply(ex.Tick(), ex.Context(CTX.block_number + 1, now))

    def at(p: int) -> int | None:
        e.apply(ex.SetOraclePrice(config.oracle, WETH, p), ex.Context(CTX.block_number + 2, now))
        return _edge_slack(e, who, now)

    # a sign change of available_liq on a coarse walk, then bisection to one unit
    grid = [100 * USD * 11**k // 10**k for k in range(75)]  # 100 .. ~100,000 USD
    signs = [at(p) for p in grid]
    edges = [k for k in range(len(grid) - 1)
             if signs[k] is not None and signs[k + 1] is not None and (signs[k] > 0) != (signs[k + 1] > 0)]
    assert edges  # (the position outweighs the holdings: an edge exists)
    lo, hi = grid[edges[0]], grid[edges[0] + 1]
    positive_low = signs[edges[0]] > 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (at(mid) > 0) == positive_low:
            lo = mid
        else:
            hi = mid
    compared = 0
    for p in sorted({lo + d for d in range(-60, 61)} | {lo + d * 997 for d in range(-20, 21)}):
        at(p)
        compared += _compare(e, now)
    assert compared

"""The pre-trade checks' fast path (perps.PerpClearing._floor_available)
against the full path it short-cuts: after every command of random streams
mixing spot (with automatic borrowing), perps, oracle moves, lending,
repayments, withdrawals, Ticks and reverted commands, for every account and
several what-ifs - a perp order of either side far from or near the
oracle, a spot fill's balance moves, a withdrawal's - the fast figure is
either None (the full path answers) or exactly the full path's
``_available(model, portfolio, prices)`` of ``portfolio_of(account, now,
order, None, True, True)`` with the moves added to its balances, and at or
above zero. It answers most of them (not a vacuous None), and never when an
asset has no oracle price."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange_helpers import CTX, LOT, USD, USDC, WETH, default_doc, px
from test_fast_checks import _apply
from test_portfolio_properties import ETH_PERP, LENDER, TRADERS, USDC_LEND, _command, _setup, step

WBTC = 2


def _full(perps, a, now, order, moves, extra=None):
    """The full path's figure, or the reason it raises (``extra``: a resting
    spot order's choice, added as AutoBorrowing._resting adds it)."""
    try:
        portfolio, prices = perps.portfolio_of(a, now, order, None, True, True)
        for key, amount in moves:
            portfolio.balances[key] = portfolio.balances.get(key, 0) + amount
        if extra is not None:
            portfolio.choices = sorted([*portfolio.choices, extra])
        return perps._available(perps.risk_model(), portfolio, prices)
    except ex.ExchangeError as e:
        return e.reason


def _fast(perps, a, now, order, moves, extra=None):
    try:
        return perps._floor_available(a, now, order, moves, extra)
    except ex.ExchangeError as e:
        return e.reason


_WHAT_IF = st.tuples(st.integers(0, 4), st.sampled_from([ex.Side.BUY, ex.Side.SELL]), st.integers(-300, 300),
                     st.integers(1, 3000), st.booleans())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(step, st.integers(0, 9)), min_size=5, max_size=30),
       st.lists(_WHAT_IF, min_size=1, max_size=4), st.booleans())
def test_floor_available_is_the_full_figure_or_none(config, steps, what_ifs, btc_priced):
    e = _setup(config)
    if btc_priced:
        e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    perps = e._perps
    ids = e._asset_ids
    market = e._markets[ETH_PERP]
    spot = e._markets[0]  # ETH-USDC
    usdc_lend = e._markets[USDC_LEND]
    oracle = 2000 * USD
    now, block = CTX.timestamp, CTX.block_number

    for (action, trader, side, offset, size, flag), roll in steps:
        made = _command(e, config, action, TRADERS[trader], side, offset, size, flag, oracle, now)
        if made is not None:
            command = made[0]
            if action == 1:
                now += 600 * (1 + abs(offset))
                block += 1
            if _apply(e, command, ex.Context(block, now), undo=roll == 1) and action == 0:
                oracle = command.price
        perps.now = now
        for address in [*TRADERS, LENDER]:
            a = e._accounts.get(address)
            if a is None:
                continue
            for kind, what_side, what_offset, lots, rests in what_ifs:
                order, moves, extra = None, None, None
                if kind == 0:  # a perp order (that may rest, or not)
                    order = (market, what_side, px(oracle // USD + what_offset), lots, rests)
                elif kind == 1:  # a spot buy's (or sell's) fill
                    usdc = px(oracle // USD + what_offset) * lots
                    sign = 1 if what_side == ex.Side.BUY else -1
                    moves = ((ids[USDC], -sign * usdc), (ids[WETH], sign * lots * LOT))
                elif kind == 2:  # a withdrawal
                    moves = ((ids[USDC if what_side == ex.Side.BUY else WETH], -lots * USD),)
                elif kind == 3:  # a resting spot order (priced base: a choice)
                    extra = e._parts["margin"]._resting_choice(spot, what_side, px(oracle // USD + what_offset), lots)
                else:  # a borrow of USDC: its fast figure (Lending._borrow_fast) is None or the full one
                    rate = 10_000_000 + abs(what_offset) * 300_000
                    borrow = e.lending._borrow_fast(usdc_lend, a, rate, lots * 10)
                    if borrow is not None:
                        assert borrow == e.lending._borrow_available(usdc_lend, a, rate, lots * 10, None)
                        assert borrow >= 0 and btc_priced
                    continue
                full = _full(perps, a, now, order, moves or (), extra)
                fast = _fast(perps, a, now, order, moves, extra)
                if fast is not None:
                    assert fast == full and fast >= 0
                    assert btc_priced  # every asset priced, else the full path answers
    # (measured: about half of all what-ifs answered, some in every example with
    # every asset priced; the test below pins an ordinary case)


def test_floor_available_answers_an_ordinary_check(config):
    """A funded trader with a position, resting perp and spot orders and a
    loan: the fast path answers with the full path's figure."""
    e = _setup(config)
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    who = TRADERS[0]
    e.apply(ex.Deposit(who, USDC, 50_000 * USD), CTX)
    e.apply(ex.PlaceOrder(who, ETH_PERP, ex.Side.BUY, px(2030), 2 * 10**18, time_in_force=ex.TimeInForce.IOC), CTX)
    e.apply(ex.PlaceOrder(who, ETH_PERP, ex.Side.SELL, px(2100), 10**18), CTX)
    e.apply(ex.PlaceOrder(who, 0, ex.Side.BUY, px(1900), 10**18), CTX)
    e.apply(ex.PlaceOrder(who, 4, ex.Side.BUY, 100_000_000, 1000 * USD, time_in_force=ex.TimeInForce.IOC), CTX)
    perps = e._perps
    a = e._accounts[who]
    assert a.positions and a.loans and len(a.open_orders) == 2
    resting = e._parts["margin"]._resting_choice(e._markets[0], ex.Side.BUY, px(1990), 100)
    for rests in (True, False):
        order = (e._markets[ETH_PERP], ex.Side.BUY, px(1990), 500, rests)
        for what_if in ((order, None, None), (None, None, None), (None, ((e._asset_ids[USDC], -1000 * USD),), None),
                        (None, None, resting)):
            fast = perps._floor_available(a, CTX.timestamp, *what_if)
            assert fast is not None and fast == _full(perps, a, CTX.timestamp, what_if[0], what_if[1] or (),
                                                      what_if[2]) >= 0
    perps.now = CTX.timestamp
    usdc_lend = e._markets[USDC_LEND]
    lots = 500 * USD // usdc_lend.lot_size  # a borrow of 500 USDC
    borrow = e.lending._borrow_fast(usdc_lend, a, 60_000_000, lots)
    assert borrow is not None and borrow == e.lending._borrow_available(usdc_lend, a, 60_000_000, lots, None)
    # another resting bid on a lending book: the full path answers (it adds every bid)
    e.apply(ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, 1_000_000, 100 * USD), CTX)
    assert e.lending._borrow_fast(usdc_lend, a, 60_000_000, lots) is None


# ---- a median-marked market (BTC-PERP): the fast path's own copies of the mark rules

BTC_PERP = 3
BTC_LOT = 10**4  # 0.0001 WBTC
BTC_MID = 6_000_000  # per lot at 60,000 USDC / WBTC

_BTC_STEP = st.tuples(st.integers(0, 6), st.integers(0, 2), st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
                      st.integers(-40, 40), st.integers(1, 60), st.integers(0, 9))
_BTC_WHAT_IF = st.tuples(st.sampled_from([BTC_PERP, ETH_PERP, None]), st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
                         st.integers(-60, 60), st.integers(1, 400), st.booleans())


def btc_book(e, config):
    """WBTC priced at 60,000, LENDER making BTC-PERP three levels deep on each side,
    every trader holding 0.1 WBTC; returns ``e``."""
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    e.apply(ex.Deposit(LENDER, WBTC, 10**9), CTX)
    e.apply(ex.Deposit(LENDER, USDC, 10**12), CTX)
    for k in range(1, 4):
        e.apply(ex.PlaceOrder(LENDER, BTC_PERP, ex.Side.BUY, BTC_MID - 1000 * k, 50 * BTC_LOT), CTX)
        e.apply(ex.PlaceOrder(LENDER, BTC_PERP, ex.Side.SELL, BTC_MID + 1000 * k, 50 * BTC_LOT), CTX)
    for who in TRADERS:
        e.apply(ex.Deposit(who, WBTC, 10**7), CTX)
    return e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.lists(_BTC_STEP, min_size=3, max_size=25), st.lists(_BTC_WHAT_IF, min_size=1, max_size=4))
def test_floor_available_on_a_median_marked_market(config, steps, what_ifs):
    """Positions, resting orders and new orders on BTC-PERP (mark: the median of
    oracle, book mid and last trade; a check bounds it by the oracle, the last
    trade and the new order's prices - PerpClearing._mark_range), beside
    ETH-PERP (oracle mark) and resting ETH-USDC orders: the fast figure is None or
    the full path's, with the market in the what-if and out of it."""
    e = btc_book(_setup(config), config)
    for who in TRADERS:
        e.apply(ex.Deposit(who, USDC, 20_000 * USD), CTX)
    perps = e._perps
    btc, eth, spot = e._markets[BTC_PERP], e._markets[ETH_PERP], e._markets[0]
    btc_oracle = 60_000 * USD
    now, block = CTX.timestamp, CTX.block_number
    answered = 0
    for kind, trader, side, offset, lots, roll in steps:
        who = TRADERS[trader]
        if kind == 0:  # a BTC-PERP order that may rest or cross
            command = ex.PlaceOrder(who, BTC_PERP, side, BTC_MID + 500 * offset, lots * BTC_LOT)
        elif kind == 1:  # a BTC-PERP take (sets the last trade)
            price = BTC_MID + 5000 if side == ex.Side.BUY else BTC_MID - 5000
            command = ex.PlaceOrder(who, BTC_PERP, side, price, lots * BTC_LOT, time_in_force=ex.TimeInForce.IOC)
        elif kind == 2:  # an ETH-PERP order
            command = ex.PlaceOrder(who, ETH_PERP, side, px(2000 + offset), lots * LOT)
        elif kind == 3:  # a resting spot order, some past the oracle (their losses count)
            command = ex.PlaceOrder(who, 0, side, px(2000 + offset), lots * LOT)
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
        perps.now = now
        for address in TRADERS:
            a = e._accounts[address]
            for market_id, what_side, what_offset, what_lots, rests in what_ifs:
                extra = None
                if market_id == BTC_PERP:
                    order = (btc, what_side, BTC_MID + 500 * what_offset, what_lots, rests)
                elif market_id == ETH_PERP:
                    order = (eth, what_side, px(2000 + what_offset), what_lots, rests)
                else:
                    order = None
                    if rests:  # a resting spot order's choice
                        extra = e._parts["margin"]._resting_choice(spot, what_side, px(2000 + what_offset), what_lots)
                full = _full(perps, a, now, order, (), extra)
                fast = _fast(perps, a, now, order, None, extra)
                if fast is not None:
                    assert fast == full and fast >= 0
                    answered += 1
    assert answered  # funded traders: the fast path answers (not a vacuous None)


def _lending_fees_config() -> ex.ExchangeConfig:
    """The default config with fees on the lending books (the default has none, so
    the borrow's fee rounding would hide), USDC lent in 0.1 USDC lots (a 1 USDC lot
    makes every fee a whole unit) and a short loan term."""
    doc = default_doc()
    for m in doc["exchange"]["markets"]:
        if m["kind"] == "lending":
            m["maker_fee"] = 300 if m["base"] == "USDC" else 123
            m["taker_fee"] = 2_777 if m["base"] == "USDC" else 999
            m["loan_term"] = 7_200
            if m["base"] == "USDC":
                m["lot_size"] = 10**5
    return ex.load(doc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(step, st.integers(0, 9)), min_size=5, max_size=30),
       st.lists(st.tuples(st.integers(0, 120), st.integers(1, 40_000)), min_size=1, max_size=4))
def test_borrow_fast_with_lending_fees(steps, borrows):
    """Lending._borrow_fast with a fee on USDC-LEND: None or exactly the full path's
    figure (the fee is rounded against the account in both), after every command."""
    config = _lending_fees_config()
    e = _setup(config)
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    usdc_lend = e._markets[USDC_LEND]
    assert usdc_lend.max_fee > 0
    oracle = 2000 * USD
    now, block = CTX.timestamp, CTX.block_number
    answered = 0
    for (action, trader, side, offset, size, flag), roll in steps:
        made = _command(e, config, action, TRADERS[trader], side, offset, size, flag, oracle, now)
        if made is not None:
            if action == 1:
                now += 600 * (1 + abs(offset))
                block += 1
            if _apply(e, made[0], ex.Context(block, now), undo=roll == 1) and action == 0:
                oracle = made[0].price
        e._perps.now = now
        for address in [*TRADERS, LENDER]:
            a = e._accounts.get(address)
            if a is None:
                continue
            for rate_step, usdc in borrows:
                rate = 10_000_000 + rate_step * 1_000_000
                fast = e.lending._borrow_fast(usdc_lend, a, rate, usdc)
                if fast is not None:
                    assert fast == e.lending._borrow_available(usdc_lend, a, rate, usdc, None) >= 0
                    answered += 1
    assert answered  # (not vacuous: the lender, at least, can borrow a little)

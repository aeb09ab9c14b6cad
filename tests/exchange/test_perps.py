"""Perpetual futures (exchange/perps.py): positions and realized PnL, reduce-only,
the oracle, the mark price, funding with exact payments, the zero-sum rule,
checkpoints, persistence.

Units: ETH-PERP lot 0.001 WETH, price per lot (px(3000) = 3000 USDC/WETH);
oracle and mark prices are USDC units per WHOLE token."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange import Reason as R
from exchange import Side

from exchange_helpers import (
    ALICE, BOB, CAROL, CTX, ETH, LOT, USD, USDC, WETH, assert_perp_zero_sum, default_doc, events_of, fee_ceil, free, px,
    withdraw_all_allowed,
)

ETH_PERP, BTC_PERP = 2, 3
WBTC = 2
DAVE = b"\xd0" * 20
BTC = 10**8
RATE = ex.RATE_SCALE


def btc_px(usd: int) -> int:
    """BTC-PERP price units (USDC units per 0.0001 WBTC lot) for a whole-dollar price."""
    return usd * USD // 10**4


@pytest.fixture
def perp(config) -> ex.Engine:
    e = ex.Engine(config)
    for who in (ALICE, BOB, CAROL, DAVE):
        e.apply(ex.Deposit(who, USDC, 1_000_000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 3000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    return e


def place(e, who, side, price, qty, market=ETH_PERP, ctx=CTX, **kw):
    return e.apply(ex.PlaceOrder(who, market, side, price, qty, **kw), ctx)


def trade(e, buyer, seller, price, qty, market=ETH_PERP, ctx=CTX):
    """seller rests, buyer takes: one fill at ``price``."""
    place(e, seller, Side.SELL, price, qty, market, ctx)
    result, events = place(e, buyer, Side.BUY, price, qty, market, ctx)
    assert result.status == ex.OrderStatus.FILLED
    return events


def pos(e, who, market=ETH_PERP):
    p = e.position(who, market)
    return p.size, p.entry_value


def rejects(e, command, reason, ctx=CTX):
    before, data = e.state_digest(), e.to_bytes()
    with pytest.raises(ex.ExchangeError) as info:
        e.apply(command, ctx)
    assert info.value.reason == reason
    assert e.state_digest() == before and e.to_bytes() == data


def conserved(e) -> None:
    report = e.balance_report()
    assert report.balanced, report
    assert e.audit() == []


# ==== positions, realized PnL, fees ========================================


def test_open_increase_reduce_flip_close_with_exact_pnl_and_fees(perp):
    e = perp
    notional = 3000 * USD
    events = trade(e, BOB, ALICE, px(3000), ETH)
    assert pos(e, BOB) == (ETH, 3000 * USD) and pos(e, ALICE) == (-ETH, -3000 * USD)
    changed = events_of(events, ex.PositionChanged)
    assert [(c.account, c.size, c.realized_pnl) for c in changed] == [(BOB, ETH, 0), (ALICE, -ETH, 0)]
    # fees as spot: taker 0.05 %, maker 0.01 %, into the fee account; nothing else moves
    assert free(e, BOB, USDC) == 1_000_000 * USD - fee_ceil(notional, 500)
    assert free(e, ALICE, USDC) == 1_000_000 * USD - fee_ceil(notional, 100)

    trade(e, BOB, CAROL, px(3300), 2 * ETH)  # increase: entry 3000 + 6600
    assert pos(e, BOB) == (3 * ETH, 9600 * USD)
    bob = free(e, BOB, USDC)

    # reduce by 1: closes a third of the entry value (3200) at 3600 -> +400
    events = trade(e, DAVE, BOB, px(3600), ETH)
    assert pos(e, BOB) == (2 * ETH, 6400 * USD)
    assert events_of(events, ex.PositionChanged)[1].realized_pnl == 400 * USD
    assert free(e, BOB, USDC) == bob + 400 * USD - fee_ceil(3600 * USD, 100)
    bob = free(e, BOB, USDC)

    # flip: sell 3 at 3100 -> closes 2 (entry 6400 for 6200: -200), opens 1 short at 3100
    events = trade(e, DAVE, BOB, px(3100), 3 * ETH)
    assert pos(e, BOB) == (-ETH, -3100 * USD)
    assert events_of(events, ex.PositionChanged)[1].realized_pnl == -200 * USD
    assert free(e, BOB, USDC) == bob - 200 * USD - fee_ceil(9300 * USD, 100)
    bob = free(e, BOB, USDC)

    # close the short at 2900: +200, flat
    trade(e, BOB, CAROL, px(2900), ETH)
    assert pos(e, BOB) == (0, 0)
    assert free(e, BOB, USDC) == bob + 200 * USD - fee_ceil(2900 * USD, 500)
    # over the whole life: +400 - 200 + 200 = 400 of PnL, minus every fee
    fees = fee_ceil(notional, 500) + fee_ceil(6600 * USD, 500) + fee_ceil(3600 * USD, 100) \
        + fee_ceil(9300 * USD, 100) + fee_ceil(2900 * USD, 500)
    assert free(e, BOB, USDC) == 1_000_000 * USD + 400 * USD - fees
    # the pool paid BOB's realized PnL; it equals minus the entry values still open
    entries = sum(e.position(w, ETH_PERP).entry_value for w in (ALICE, BOB, CAROL, DAVE))
    assert e.funding(ETH_PERP).pool == -entries
    assert sum(e.position(w, ETH_PERP).size for w in (ALICE, BOB, CAROL, DAVE)) == 0
    conserved(e)


def test_partial_close_rounds_the_closed_entry_against_the_account(perp):
    e = perp
    trade(e, BOB, ALICE, px(3000.01), 3 * LOT)  # entry 3 * 3000010 = 9000030 for 3 lots
    assert pos(e, BOB) == (3 * LOT, 9_000_030)
    trade(e, CAROL, ALICE, px(3000.02), 4 * LOT)
    trade(e, BOB, CAROL, px(3000), 4 * LOT)  # entry 9000030 + 12000000 = 21000030 for 7 lots
    assert pos(e, BOB) == (7 * LOT, 21_000_030)
    # close 3 of 7 lots: 21000030 * 3 / 7 = 9000012.857.. -> ceil 9000013 leaves the entry
    events = trade(e, DAVE, BOB, px(3000), 3 * LOT)
    assert pos(e, BOB) == (4 * LOT, 21_000_030 - 9_000_013)
    assert events_of(events, ex.PositionChanged)[1].realized_pnl == 9_000_000 - 9_000_013
    conserved(e)


def test_perp_orders_hold_only_their_fee_and_release_it(perp):
    e = perp
    result, _ = place(e, ALICE, Side.SELL, px(3000), 2 * ETH)
    assert e.balances(ALICE)[USDC] == (1_000_000 * USD - fee_ceil(6000 * USD, 100), fee_ceil(6000 * USD, 100))
    assert e.balances(ALICE)[WETH] == (0, 0)  # a perp sell delivers nothing
    e.apply(ex.ModifyOrder(ALICE, result.order_id, px(3000), ETH), CTX)
    assert e.balances(ALICE)[USDC][1] == fee_ceil(3000 * USD, 100)
    e.apply(ex.CancelOrder(ALICE, result.order_id), CTX)
    assert e.balances(ALICE)[USDC] == (1_000_000 * USD, 0)
    conserved(e)


# ==== reduce-only ===========================================================


def test_reduce_only_is_trimmed_to_the_position_and_never_increases(perp):
    e = perp
    IOC = ex.TimeInForce.IOC
    rejects(e, ex.PlaceOrder(BOB, ETH_PERP, Side.SELL, px(3000), ETH, IOC, reduce_only=True),
            R.REDUCE_ONLY_REJECTED)  # no position
    trade(e, BOB, ALICE, px(3000), 2 * ETH)
    rejects(e, ex.PlaceOrder(BOB, ETH_PERP, Side.BUY, px(3000), ETH, IOC, reduce_only=True),
            R.REDUCE_ONLY_REJECTED)  # same side: would increase
    rejects(e, ex.PlaceOrder(BOB, ETH_PERP, Side.SELL, px(3000), ETH, reduce_only=True),
            R.INVALID_ORDER)  # GTC: reduce-only orders are taker-only
    rejects(e, ex.PlaceOrder(ALICE, 0, Side.SELL, px(3000), ETH, IOC, reduce_only=True),
            R.INVALID_ORDER)  # spot
    place(e, CAROL, Side.BUY, px(3000), 5 * ETH)
    result, events = place(e, BOB, Side.SELL, px(3000), 5 * ETH, time_in_force=IOC, reduce_only=True)
    # trimmed to the 2 ETH long: closes it, never flips it short
    assert (result.status, result.filled_quantity) == (ex.OrderStatus.FILLED, 2 * ETH)
    assert events_of(events, ex.OrderAccepted)[0].quantity == 2 * ETH
    assert pos(e, BOB) == (0, 0)
    # a MARKET reduce-only closes a short
    result, _ = place(e, ALICE, Side.BUY, px(3100), ETH, order_type=ex.OrderType.MARKET, reduce_only=True)
    assert result.status == ex.OrderStatus.CANCELLED  # nothing to buy from: IOC remainder cancelled
    assert pos(e, ALICE) == (-2 * ETH, -6000 * USD)
    place(e, DAVE, Side.SELL, px(3050), 5 * ETH)
    result, _ = place(e, ALICE, Side.BUY, px(3100), 3 * ETH, order_type=ex.OrderType.MARKET, reduce_only=True)
    assert result.filled_quantity == 2 * ETH and pos(e, ALICE) == (0, 0)
    conserved(e)


# ==== oracle and mark =======================================================


def test_oracle_prices_come_from_the_oracle_only(perp, config):
    e = perp
    rejects(e, ex.SetOraclePrice(ALICE, WETH, 1), R.NOT_AUTHORIZED)
    rejects(e, ex.SetOraclePrice(config.admin, WETH, 1), R.NOT_AUTHORIZED)
    rejects(e, ex.SetOraclePrice(config.oracle, 9, 1), R.UNKNOWN_ASSET)
    rejects(e, ex.SetOraclePrice(config.oracle, WETH, 0), R.INVALID_PRICE)
    rejects(e, ex.SetOraclePrice(config.oracle, WETH, 2**256 - 1), R.INVALID_PRICE)  # past MAX_ORACLE_PRICE
    rejects(e, ex.SetOraclePrice(config.oracle, USDC, USD), R.INVALID_PRICE)  # the quote is fixed at one
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 2**128), CTX)  # the largest taken
    result, events = e.apply(ex.SetOraclePrice(config.oracle, WETH, 3123_450_000), CTX)
    assert events == [ex.OracleUpdated(WETH, 3123_450_000)]
    assert e.oracle_price(WETH) == 3123_450_000 == e.mark_price(ETH_PERP)  # mark = "oracle"


def test_median_mark_of_oracle_book_mid_and_last_trade(perp, config):
    e = perp  # BTC-PERP has mark = "median"; oracle 60,000
    assert e.mark_price(BTC_PERP) == 60_000 * USD  # no book, no trade: all three are the oracle
    trade(e, BOB, CAROL, btc_px(60_500), BTC // 10, BTC_PERP)
    place(e, ALICE, Side.BUY, btc_px(61_000), BTC // 10, BTC_PERP)
    assert e.mark_price(BTC_PERP) == 60_000 * USD  # oracle 60,000, mid = oracle (one side), last 60,500
    place(e, ALICE, Side.SELL, btc_px(61_200), BTC // 10, BTC_PERP)
    assert e.mark_price(BTC_PERP) == 60_500 * USD  # 60,000 / mid 61,100 / last 60,500
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 62_000 * USD), CTX)
    assert e.mark_price(BTC_PERP) == 61_100 * USD  # 62,000 / 61,100 / 60,500
    p = e.position(BOB, BTC_PERP)
    assert (p.size, p.entry_price, p.mark_price) == (BTC // 10, 60_500 * USD, 61_100 * USD)
    assert p.unrealized_pnl == 60 * USD  # 0.1 BTC x 600


# ==== funding ===============================================================


def tick(e, t):
    return e.apply(ex.Tick(), ex.Context(block_number=t, timestamp=t))


def quote_book(e, bid, ask, qty=5 * ETH):
    """ALICE quotes both sides of ETH-PERP (5 ETH each: deeper than the 10,000
    USDC impact notional)."""
    e.apply(ex.CancelAll(ALICE, ETH_PERP), CTX)
    place(e, ALICE, Side.BUY, px(bid), qty)
    place(e, ALICE, Side.SELL, px(ask), qty)


def test_funding_over_several_intervals_exact_payments_clamp_and_cap(perp):
    e = perp
    trade(e, BOB, CAROL, px(3000), 2 * ETH)  # BOB long 2, CAROL short 2
    bob, carol = free(e, BOB, USDC), free(e, CAROL, USDC)
    quote_book(e, 3010, 3020)
    # premium = (3010 - 3000) / 3000 = 3,333,333 parts of 1e9 (floored); interest 12 ppm = 12,000
    assert tick(e, 1000)[1] == []  # first sample; the interval ends at 3600
    assert e.funding(ETH_PERP).next_funding == 3600
    tick(e, 2000)
    _, events = tick(e, 3600)  # third sample, then the payment
    # rate = P + clamp(I - P, +-500,000) = 3,333,333 - 500,000; under the 5,000,000 cap
    rate = 3_333_333 - 500_000
    assert events == [ex.FundingPaid(ETH_PERP, rate, 3000 * USD, rate * 3000 * USD, 3600),
                      ex.FundingPaid(BTC_PERP, 12_000, 60_000 * USD, 12_000 * 60_000 * USD, 3600)]
    # paid on size x oracle price: 2 ETH x 3000 x 0.2833333 % = 16.999998 USDC, exact
    assert e.position(BOB, ETH_PERP).pending_funding == 16_999_998
    assert e.position(CAROL, ETH_PERP).pending_funding == -16_999_998

    # interval 2: an ask-heavy book (premium negative), oracle moves to 3100
    e.apply(ex.SetOraclePrice(e.config.oracle, WETH, 3100 * USD), CTX)
    quote_book(e, 3050, 3060)  # impact ask 3060 < oracle: premium -(40 / 3100)
    tick(e, 5000)
    e.apply(ex.SetOraclePrice(e.config.oracle, WETH, 3000 * USD), CTX)
    quote_book(e, 2990, 3000)  # premium 0: the impact ask equals the oracle
    _, events = tick(e, 7200)
    assert 40 * RATE // 3100 == 12_903_225
    p2 = -6_451_612  # the mean of -12,903,225 and 0, toward zero
    rate2 = max(-5_000_000, p2 + 500_000)  # clamp(I - P) = +500,000, then the cap
    assert rate2 == -5_000_000 and events[0].rate == rate2
    index = rate * 3000 * USD + rate2 * 3000 * USD
    assert e.funding(ETH_PERP).funding_index == index

    # interval 3: a far too rich book hits the cap the other way
    quote_book(e, 3300, 3310)
    _, events = tick(e, 10_800)
    assert events[0].rate == 5_000_000
    index += 5_000_000 * 3000 * USD
    # 2 ETH x 3000 x (0.2833333 % - 0.5 % + 0.5 %): intervals 2 and 3 cancel out
    assert e.position(BOB, ETH_PERP).pending_funding == 16_999_998
    # one settlement when touched: BOB closes 1 ETH to DAVE at 3300 (+300), settling all three
    e.apply(ex.CancelAll(ALICE, ETH_PERP), CTX)
    trade(e, DAVE, BOB, px(3300), ETH)
    assert free(e, BOB, USDC) == bob - 16_999_998 + 300 * USD - fee_ceil(3300 * USD, 100)
    assert e.position(BOB, ETH_PERP).pending_funding == 0
    assert e.position(CAROL, ETH_PERP).pending_funding == -16_999_998
    assert free(e, CAROL, USDC) == carol  # not touched yet
    conserved(e)


def test_no_oracle_or_thin_book_samples_zero_premium(perp):
    e = perp
    trade(e, BOB, CAROL, px(3000), ETH)
    place(e, ALICE, Side.BUY, px(3010), ETH)  # 3,010 USDC deep: thinner than 10,000
    place(e, ALICE, Side.SELL, px(3020), 5 * ETH)
    tick(e, 1000)
    assert e.funding(ETH_PERP).average_premium == 0 and e.funding(ETH_PERP).samples == 1
    _, events = tick(e, 3600)
    assert events[0].rate == 12_000  # the interest alone: 12 ppm per interval
    assert e.position(BOB, ETH_PERP).pending_funding == 36_000  # 1 ETH x 3000 x 0.0012 %


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(-30, 30), st.integers(1, 7),
                          st.integers(0, 4), st.integers(-200, 200)), min_size=1, max_size=25))
def test_funding_and_pnl_are_zero_sum(config, steps):
    """Whatever trades, oracle moves and funding payments happen: value is
    conserved per asset (pool included), positions sum to zero, and the pool
    holds exactly what the positions still owe: pool == -sum(entry values)
    - sum(exact pending funding), with funding paid on every settlement as
    the ceiling and the rest carried (so longs pay exactly what shorts get)."""
    traders = [ALICE, BOB, CAROL, DAVE]
    e = ex.Engine(config)
    for who in traders:
        e.apply(ex.Deposit(who, USDC, 10_000_000 * USD), CTX)
    oracle = 3000 * USD
    e.apply(ex.SetOraclePrice(config.oracle, WETH, oracle), CTX)
    now = 1000
    for buyer, seller, ticks, lots, action, move in steps:
        price = px(3000) + ticks * 7 * 10
        if action == 0:
            oracle = max(USD, oracle + move * 1_234_567)
            e.apply(ex.SetOraclePrice(config.oracle, WETH, oracle), CTX)
        elif action == 1:
            now += 1800 + move
            tick(e, now)
        elif buyer != seller:
            t = e.checkpoint()
            try:
                place(e, traders[seller], Side.SELL, price, lots * LOT)
                place(e, traders[buyer], Side.BUY, price + 30 * (move % 3), lots * LOT,
                      time_in_force=ex.TimeInForce.IOC)
                e.commit(t)
            except ex.ExchangeError:
                e.revert(t)  # e.g. margin: the stream goes on
        if action == 4:
            # a resting quote far from the oracle makes the premium move
            e.apply(ex.CancelAll(ALICE, ETH_PERP), CTX)
            place(e, ALICE, Side.BUY, px(3000) + move * 100, 5000 * LOT)
            place(e, ALICE, Side.SELL, px(3000) + move * 100 + 10, 5000 * LOT)
    assert_perp_zero_sum(e, ETH_PERP)
    conserved(e)


# ==== state: checkpoints, digest, persistence ===============================


def test_checkpoint_revert_and_bytes_round_trip_cover_perp_state(perp, config):
    e = perp
    trade(e, BOB, CAROL, px(3000), 2 * ETH)
    quote_book(e, 3010, 3020)
    tick(e, 1000)
    before, data = e.state_digest(), e.to_bytes()
    token = e.checkpoint()
    tick(e, 3600)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 3500 * USD), CTX)
    trade(e, DAVE, BOB, px(3020), ETH)
    assert e.state_digest() != before
    e.revert(token)
    assert e.state_digest() == before and e.to_bytes() == data
    assert pos(e, BOB) == (2 * ETH, 6000 * USD)
    # the same commands again, then a round trip through bytes
    tick(e, 3600)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 3500 * USD), CTX)
    trade(e, DAVE, BOB, px(3020), ETH)
    digest, data = e.state_digest(), e.to_bytes()
    copy = ex.Engine.from_bytes(data, config)
    assert copy.state_digest() == digest and copy.to_bytes() == data
    assert copy.position(BOB, ETH_PERP) == e.position(BOB, ETH_PERP)
    assert copy.funding(ETH_PERP) == e.funding(ETH_PERP)
    # and the copy goes on exactly like the original
    for engine in (e, copy):
        tick(engine, 7200)
        engine.apply(ex.CancelAll(ALICE, ETH_PERP), CTX)
        trade(engine, CAROL, BOB, px(3000), ETH)
    assert copy.state_digest() == e.state_digest()


def test_a_position_changes_the_digest(perp):
    """Two states that differ only in a position's entry value differ in digest."""
    a, b = perp, ex.Engine(perp.config)
    for e in (b,):
        for who in (ALICE, BOB, CAROL, DAVE):
            e.apply(ex.Deposit(who, USDC, 1_000_000 * USD), CTX)
        e.apply(ex.SetOraclePrice(e.config.oracle, WETH, 3000 * USD), CTX)
        e.apply(ex.SetOraclePrice(e.config.oracle, WBTC, 60_000 * USD), CTX)
    assert a.state_digest() == b.state_digest()
    trade(a, BOB, CAROL, px(3000), ETH)
    trade(b, BOB, CAROL, px(3000), ETH)
    assert a.state_digest() == b.state_digest()
    a._perps._snap_position(a._accounts[BOB].positions[ETH_PERP])
    a._accounts[BOB].positions[ETH_PERP].entry_value += 1
    assert a.state_digest() != b.state_digest()


def test_tick_runs_the_block_hooks_in_order(perp):
    seen = []
    perp._block_hooks.append(lambda ctx, events: seen.append(ctx.block_number) or events.append("x"))
    result, events = perp.apply(ex.Tick(), ex.Context(7, 70))
    assert result == ex.TickResult(7, 70) and events == ["x"] and seen == [7]


# ==== the margin check (exchange/risk.py through perps.portfolio_of) ========

EVE = b"\xee" * 20


def margin_engine(config, usdc=1000 * USD, weth=0):
    e = ex.Engine(config)
    e.apply(ex.Deposit(DAVE, USDC, usdc), CTX)
    if weth:
        e.apply(ex.Deposit(DAVE, WETH, weth), CTX)
    e.apply(ex.Deposit(CAROL, USDC, 1_000_000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 3000 * USD), CTX)
    return e


def test_orders_need_opening_margin_at_their_worst_fill(config):
    e = margin_engine(config)
    # 1000 USDC; 2 ETH long at 3000 risks 15 % = 900, the worst fee 0.05 % = 3: 97 left
    rejects(e, ex.PlaceOrder(DAVE, ETH_PERP, Side.BUY, px(3000), 3 * ETH), R.INSUFFICIENT_MARGIN)
    place(e, DAVE, Side.BUY, px(3000), 2 * ETH)  # rests: assumed filled from now on
    rejects(e, ex.PlaceOrder(DAVE, ETH_PERP, Side.BUY, px(2900), ETH // 2), R.INSUFFICIENT_MARGIN)
    # a sell is judged with the resting buys in the worse direction: -1 + 2 = +1 or -1
    place(e, DAVE, Side.SELL, px(3100), ETH)
    # fill the buy: the margin is the same, the position real
    place(e, CAROL, Side.SELL, px(3000), 2 * ETH)
    margin = e.margin(DAVE)
    assert margin.equity == 1000 * USD - fee_ceil(6000 * USD, 100)  # DAVE was the maker
    assert margin.available_open == margin.equity - 900 * USD
    # a withdrawal is checked against the same margin
    rejects(e, ex.Withdraw(DAVE, USDC, 200 * USD), R.INSUFFICIENT_MARGIN)
    e.apply(ex.Withdraw(DAVE, USDC, 50 * USD), CTX)
    conserved(e)


def test_reduce_only_may_shrink_risk_under_water_a_plain_order_may_not(config):
    e = margin_engine(config)
    place(e, CAROL, Side.SELL, px(3000), 2 * ETH)
    place(e, DAVE, Side.BUY, px(3000), 2 * ETH)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 2600 * USD), CTX)
    margin = e.margin(DAVE)
    # 1000 - 3 (taker fee) - 800 (unrealized) = 197; 15 % of 2 x 2600 = 780
    assert (margin.equity, margin.available_open) == (197 * USD, -583 * USD)
    place(e, CAROL, Side.BUY, px(2600), 2 * ETH)
    IOC = ex.TimeInForce.IOC
    rejects(e, ex.PlaceOrder(DAVE, ETH_PERP, Side.SELL, px(2600), ETH, IOC), R.INSUFFICIENT_MARGIN)
    result, _ = place(e, DAVE, Side.SELL, px(2600), ETH, time_in_force=IOC, reduce_only=True)
    assert result.filled_quantity == ETH and pos(e, DAVE) == (ETH, 3000 * USD)
    assert e.margin(DAVE).available_open == 197 * USD - fee_ceil(2600 * USD, 500) - 390 * USD


def test_a_spot_long_hedges_a_perp_short(config):
    """The basis trade in small: 1 WETH held and 1 ETH-PERP short have no net
    exposure, so 10 USDC of cash is enough; the same short alone is not."""
    hedged = margin_engine(config, usdc=10 * USD, weth=ETH)
    place(hedged, CAROL, Side.BUY, px(3000), 2 * ETH)
    place(hedged, DAVE, Side.SELL, px(3000), ETH, time_in_force=ex.TimeInForce.IOC)
    assert pos(hedged, DAVE) == (-ETH, -3000 * USD)
    margin = hedged.margin(DAVE)
    assert margin.available_open == margin.equity == 3010 * USD - fee_ceil(3000 * USD, 500)
    naked = margin_engine(config, usdc=10 * USD)
    place(naked, CAROL, Side.BUY, px(3000), 2 * ETH)
    rejects(naked, ex.PlaceOrder(DAVE, ETH_PERP, Side.SELL, px(3000), ETH, ex.TimeInForce.IOC),
            R.INSUFFICIENT_MARGIN)


def test_portfolio_adapter(config):
    e = margin_engine(config, usdc=10_000 * USD, weth=ETH)
    place(e, CAROL, Side.BUY, px(3000), ETH)
    place(e, DAVE, Side.SELL, px(3000), ETH, time_in_force=ex.TimeInForce.IOC)
    place(e, CAROL, Side.SELL, px(3010), 3 * ETH)
    place(e, CAROL, Side.BUY, px(2990), 3 * ETH)
    tick(e, 1000)
    tick(e, 3600)  # premium (3000 vs 2990/3010) = 0: the rate is the interest, 12,000
    place(e, DAVE, Side.BUY, px(2900), 2 * ETH)  # rests
    fee = fee_ceil(3000 * USD, 500)
    hold = fee_ceil(5800 * USD, 100)
    p = e.portfolio(DAVE)
    assert p.balances == {USDC: 10_000 * USD - fee, WETH: ETH}
    assert p.perps == [(WETH, -ETH, -3000 * USD, 3000 * USD, -36_000)]  # shorts receive
    assert list(p.lent) == [] and list(p.borrowed) == []
    # the pre-trade view: the resting buy may fill or not (the short may end anywhere
    # from -1 to +1 ETH; with DAVE's 1 WETH, +1 is the riskier end); its profit
    # against the mark is not counted, its fee and a unit per lot are
    p = e.portfolio(DAVE, assume_orders=True)
    [(asset, size, entry, mark, owed)] = p.perps
    assert (asset, size) == (WETH, ETH)
    assert size * mark // ETH - entry - owed == 36_000 - hold - 2000  # the short's value (funding received)
    assert p.balances == {USDC: 10_000 * USD - fee, WETH: ETH}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(list(Side)), st.integers(-20, 20),
                          st.integers(1, 800), st.sampled_from(list(ex.TimeInForce))), min_size=1, max_size=30))
def test_no_own_order_leaves_an_account_below_opening_margin(config, orders):
    """Small accounts place random perp orders: every accepted one leaves the
    account's opening-level available margin (its open orders assumed
    filled, as the check assumes) at or above zero; a rejected one changes
    nothing."""
    traders = [ALICE, BOB, CAROL]
    e = ex.Engine(config)
    for who in traders:
        e.apply(ex.Deposit(who, USDC, 2_000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 3000 * USD), CTX)
    for who, side, ticks, lots, tif in orders:
        before = e.state_digest()
        try:
            place(e, traders[who], side, px(3000) + ticks * 1000, lots * LOT, time_in_force=tif)
        except ex.ExchangeError:
            assert e.state_digest() == before
            continue
        assert e.margin(traders[who], assume_orders=True).available_open >= 0
    conserved(e)


def test_an_unpriced_asset_counts_as_nothing_and_may_be_withdrawn(config):
    e = margin_engine(config)
    e.apply(ex.Deposit(DAVE, WBTC, BTC), CTX)  # no WBTC oracle price: worth nothing to margin
    place(e, CAROL, Side.SELL, px(3000), 2 * ETH)
    place(e, DAVE, Side.BUY, px(3000), 2 * ETH)
    assert e.portfolio(DAVE).balances == {USDC: 1000 * USD - fee_ceil(6000 * USD, 500)}
    e.apply(ex.Withdraw(DAVE, WBTC, BTC), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    e.apply(ex.Deposit(DAVE, WBTC, BTC), CTX)
    margin = e.margin(DAVE)
    assert margin.equity == 1000 * USD - fee_ceil(6000 * USD, 500) + 60_000 * USD


# ---- withdrawals against resting perp orders ------------------------------------


def test_a_withdrawal_is_checked_against_resting_perp_orders_alone(perp, config):
    """An account that has only ever rested a perp order (no position yet)
    cannot withdraw the collateral the order needs; and the decision does not
    depend on whether a flat Position object lingers from earlier trading,
    which a restart does not restore (both found by review)."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 1000 * USD), CTX)
    place(e, E, Side.SELL, px(3000), 2 * ETH)  # opening loss 900 USDC: accepted on 1000
    with pytest.raises(ex.ExchangeError) as err:
        e.apply(ex.Withdraw(E, USDC, free(e, E, USDC)), CTX)
    assert err.value.reason == R.INSUFFICIENT_MARGIN
    e.apply(ex.Withdraw(E, USDC, 50 * USD), CTX)  # what the order does not need is free to go
    # A flat position left by a round trip, then the same resting order.
    F = b"\xf0" * 20
    e.apply(ex.Deposit(F, USDC, 1000 * USD), CTX)
    trade(e, F, BOB, px(3000), LOT)
    trade(e, BOB, F, px(2999), LOT)  # below E's resting ask: F's fills first
    assert e.position(F, ETH_PERP).size == 0
    place(e, F, Side.SELL, px(3000), 2 * ETH)
    copy = ex.Engine.from_bytes(e.to_bytes(), config)
    assert copy.state_digest() == e.state_digest()
    for engine in (e, copy):
        with pytest.raises(ex.ExchangeError) as err:
            engine.apply(ex.Withdraw(F, USDC, free(engine, F, USDC)), CTX)
        assert err.value.reason == R.INSUFFICIENT_MARGIN
    assert copy.state_digest() == e.state_digest()


def test_a_resting_orders_profit_never_covers_anything(perp, config):
    """A resting buy far below the mark would 'fill' at a profit; it may never
    fill, and a cancel is not checked, so the what-if counts no resting
    order's profit - only its loss, its fee and the exposure it may add.
    Before, that profit covered a sell far below the mark that the trader
    then kept alone by cancelling the buy (found by review)."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 1000 * USD), CTX)
    result, _ = place(e, E, Side.BUY, px(1900), 2 * ETH)  # 2 x 3000 x 15 % of exposure: fits 1000
    assert result.status == ex.OrderStatus.RESTING
    digest = e.state_digest()
    with pytest.raises(ex.ExchangeError) as err:
        place(e, E, Side.SELL, px(2000), ETH)  # filled: -1,000 at once
    assert err.value.reason == R.INSUFFICIENT_MARGIN and e.state_digest() == digest
    # a sell near the mark fits, and the account stays above zero whatever fills
    place(e, E, Side.SELL, px(3010), ETH // 10)
    assert e.margin(E, CTX.timestamp, assume_orders=True).available_open >= 0


def test_an_order_on_the_same_side_covers_nothing_either(perp, config):
    """The subset case (found by a review of the corners fix): a near buy above
    the mark and a far one below it; the far one's profit must not cover the
    near one's loss - withdrawing the collateral, then cancelling the far buy,
    must never leave the account under water with its orders counted."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 2000 * USD), CTX)
    place(e, BOB, Side.SELL, px(3300), 10 * ETH)  # asks above the mark: a buy at 3,290 rests
    place(e, E, Side.BUY, px(3290), ETH)
    far = None
    try:
        far, _ = place(e, E, Side.BUY, px(1000), 3 * ETH)
    except ex.ExchangeError as err:
        assert err.reason == R.INSUFFICIENT_MARGIN
    try:
        e.apply(ex.Withdraw(E, USDC, free(e, E, USDC) - 10 * USD), CTX)
    except ex.ExchangeError as err:
        assert err.reason == R.INSUFFICIENT_MARGIN
    if far is not None:
        e.apply(ex.CancelOrder(E, far.order_id), CTX)
    assert e.margin(E, CTX.timestamp, assume_orders=True).available_open >= 0


def test_under_water_a_reduce_only_order_must_not_lower_the_bare_margin(perp, config):
    """A far resting sell makes the worst corner of the orders the same before
    and after a reduce-only buy at a price far above the mark, which
    'improves' that corner while the position itself gets worse: the order
    must also not lower the margin without the orders counted (found by
    review: the buy went through, and cancelling the sell left -2,431)."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 2000 * USD), CTX)
    e.apply(ex.Deposit(E, WETH, 10 * ETH), CTX)
    place(e, BOB, Side.BUY, px(3000), 20 * ETH)
    place(e, E, Side.SELL, px(3000), 20 * ETH, time_in_force=ex.TimeInForce.IOC)  # short 20, 10 WETH spot
    place(e, E, Side.SELL, px(9000), 21 * ETH)  # resting far above the mark
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 4500 * USD), CTX)
    place(e, BOB, Side.SELL, px(5130), 20 * ETH)  # 14 % above the mark
    digest = e.state_digest()
    with pytest.raises(ex.ExchangeError) as err:
        place(e, E, Side.BUY, px(5130), 20 * ETH, time_in_force=ex.TimeInForce.IOC, reduce_only=True)
    assert err.value.reason == R.INSUFFICIENT_MARGIN and e.state_digest() == digest
    # at the mark, buying back does not lower it: allowed
    place(e, BOB, Side.SELL, px(4500), 20 * ETH)
    place(e, E, Side.BUY, px(4500), 20 * ETH, time_in_force=ex.TimeInForce.IOC, reduce_only=True)


def test_a_spot_order_is_checked_against_resting_perp_orders_alone(perp, config):
    """An account whose only perp exposure is a resting order: a spot buy far
    above the oracle spends what the order needs - checked now (found by
    review: the spot check ran only for positions or loans)."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 1000 * USD), CTX)
    place(e, E, Side.BUY, px(3000), 2 * ETH)  # 900 of its 1000 for the exposure
    e.apply(ex.Deposit(CAROL, WETH, ETH), CTX)
    e.apply(ex.PlaceOrder(CAROL, 0, Side.SELL, px(6000), ETH // 10), CTX)
    digest = e.state_digest()
    with pytest.raises(ex.ExchangeError) as err:
        e.apply(ex.PlaceOrder(E, 0, Side.BUY, px(6000), ETH // 10, time_in_force=ex.TimeInForce.IOC), CTX)
    assert err.value.reason == R.INSUFFICIENT_MARGIN and e.state_digest() == digest


def test_a_perp_order_that_borrows_its_hold_must_carry_the_loan_unfilled(perp, config):
    """A perp order whose fee hold is borrowed: the loan and its interest to
    term stay if the order never fills, so the account must carry them
    unfilled too (found by review: an IOC that could not fill, its hold
    borrowed at 10,000 % a year, left the account at -10,424)."""
    e = perp
    E = b"\xe0" * 20
    place(e, ALICE, Side.SELL, 100 * RATE, 1_000_000 * USD, market=4)  # USDC offered at 10,000 % a year
    e.apply(ex.Deposit(E, USDC, 50_000 * USD), CTX)
    e.apply(ex.Deposit(E, WETH, 30 * ETH), CTX)
    place(e, BOB, Side.SELL, px(3000), 100 * ETH)
    place(e, E, Side.BUY, px(3000), 100 * ETH, time_in_force=ex.TimeInForce.IOC)  # long 100 ETH-PERP
    withdraw_all_allowed(e, E, USD)  # all of its USDC: the WETH carries the position
    assert free(e, E, USDC) < USD
    withdraw_all_allowed(e, E, ETH // 1000, asset=WETH)  # and then the WETH, down to zero margin
    before = e.margin(E, CTX.timestamp).available_open
    assert 0 <= before < 10 * USD
    for usd in range(20_000, 400_000, 30_000):  # an IOC sell far above the book: it cannot fill
        token = e.checkpoint()
        try:
            place(e, E, Side.SELL, px(usd), 100 * ETH, time_in_force=ex.TimeInForce.IOC)
            after = e.margin(E, CTX.timestamp).available_open
            assert after >= 0 or after >= before, (usd, after, before)
        except ex.ExchangeError as err:
            assert err.reason in (R.INSUFFICIENT_MARGIN, R.BORROW_UNAVAILABLE, R.INSUFFICIENT_BALANCE)
        e.revert(token)


def test_an_orders_own_lift_of_a_median_mark_does_not_hide_its_loss(perp, config):
    """BTC-PERP's mark is the median of oracle, book mid and last trade: an
    account's own bid lifts the mid, so against the mark its loss can vanish.
    Measured against the worse of mark and oracle, it cannot (found by
    review: the bid at 70,000 counted no loss against a mark it had lifted to
    75,000; withdrawing, then a colluder's fill, left -9,999)."""
    e = perp
    E = b"\xe0" * 20
    place(e, ALICE, Side.SELL, btc_px(76_000), BTC // 100, market=BTC_PERP)  # a last trade at 76,000
    place(e, BOB, Side.BUY, btc_px(76_000), BTC // 100, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)
    place(e, ALICE, Side.SELL, btc_px(80_000), BTC // 100, market=BTC_PERP)
    e.apply(ex.Deposit(E, USDC, 20_000 * USD), CTX)
    place(e, E, Side.BUY, btc_px(70_000), BTC, market=BTC_PERP)
    assert e._perps._mark(BTC_PERP) == 75_000 * USD  # lifted by E's own bid
    withdraw_all_allowed(e, E)
    place(e, BOB, Side.SELL, btc_px(70_000), BTC, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)
    assert e.position(E, BTC_PERP).size == BTC
    assert e.margin(E, CTX.timestamp).available_open >= 0


def test_a_check_values_a_position_at_the_worse_of_mark_and_oracle(perp, config):
    """A tiny bid of the account's own lifts BTC-PERP's median mark and with it
    the value of its long; a withdrawal checked at that mark, then cancelling
    the bid, left -15,972 (found by review). Checks value positions at the
    worse of mark and oracle: whatever the account then cancels, it stays
    above zero."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 30_000 * USD), CTX)
    place(e, ALICE, Side.SELL, btc_px(76_000), BTC, market=BTC_PERP)
    place(e, E, Side.BUY, btc_px(76_000), BTC, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)
    place(e, ALICE, Side.SELL, btc_px(80_000), BTC // 100, market=BTC_PERP)
    bid, _ = place(e, E, Side.BUY, btc_px(79_000), BTC // 1000, market=BTC_PERP)
    assert e._perps._mark(BTC_PERP) == 76_000 * USD  # lifted by the bid (the oracle is 60,000)
    withdraw_all_allowed(e, E)
    e.apply(ex.CancelOrder(E, bid.order_id), CTX)
    assert e.margin(E, CTX.timestamp).available_open >= 0


def test_resting_spot_orders_count_in_the_what_if_too(perp, config):
    """A spot bid far above the oracle, rested while the account had no
    leverage (rightly unchecked then), must count once the account opens
    perp positions: else the largest long the check allows, then a
    colluder's fill of the bid, left -5,109 (found by review)."""
    e = perp
    E = b"\xe0" * 20
    e.apply(ex.Deposit(E, USDC, 10_000 * USD), CTX)
    e.apply(ex.PlaceOrder(E, 0, Side.BUY, px(6000), 3 * ETH // 2), CTX)  # 1.5 WETH at twice the oracle
    place(e, BOB, Side.SELL, px(3000), 200 * ETH)
    largest = 0
    for n in range(1, 200):  # the largest perp long the check allows
        token = e.checkpoint()
        try:
            place(e, E, Side.BUY, px(3000), n * ETH // 2, time_in_force=ex.TimeInForce.IOC)
            largest = n
        except ex.ExchangeError:
            e.revert(token)
            break
        e.revert(token)
    place(e, E, Side.BUY, px(3000), largest * ETH // 2, time_in_force=ex.TimeInForce.IOC)
    e.apply(ex.Deposit(CAROL, WETH, 10 * ETH), CTX)
    e.apply(ex.PlaceOrder(CAROL, 0, Side.SELL, px(6000), 3 * ETH // 2, time_in_force=ex.TimeInForce.IOC), CTX)
    assert e.margin(E, CTX.timestamp).available_open >= 0
    # a plain spot account (no perps, no loans) is never refused for margin
    P = b"\x77" * 20
    e.apply(ex.Deposit(P, USDC, 10_000 * USD), CTX)
    e.apply(ex.PlaceOrder(P, 0, Side.BUY, px(1000), 5 * ETH), CTX)
    e.apply(ex.PlaceOrder(CAROL, 0, Side.SELL, px(6000), ETH, ), CTX)
    e.apply(ex.PlaceOrder(P, 0, Side.BUY, px(6000), ETH // 2, time_in_force=ex.TimeInForce.IOC), CTX)


def test_an_own_resting_bid_that_lifts_a_median_mark_is_checked_at_that_mark(perp, config):
    """A 1-lot GTC bid of an account short BTC-PERP lifts the book's mid, so
    the median mark, against its own short: the check valued the position at
    the mark before the order and the account ended 2,495 USDC below zero
    (found by review). The check takes the mark the order leaves."""
    e = perp
    mm, a, b = b"\xcc" * 20, b"\xa1" * 20, b"\xb0" * 20
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    for who, amount in ((mm, 10_000_000), (b, 10_000_000), (a, 30_000)):
        e.apply(ex.Deposit(who, USDC, amount * USD), CTX)
    place(e, b, Side.BUY, btc_px(65_000), BTC, market=BTC_PERP)
    place(e, a, Side.SELL, btc_px(65_000), BTC, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)
    place(e, mm, Side.BUY, btc_px(59_000), BTC, market=BTC_PERP)
    place(e, mm, Side.SELL, btc_px(66_000), BTC, market=BTC_PERP)
    assert e.mark_price(BTC_PERP) == 62_500 * USD  # median of 60,000, mid 62,500, last 65,000
    withdraw_all_allowed(e, a)
    e.apply(ex.Deposit(a, USDC, 5 * USD), CTX)  # 5 USDC of slack: enough for the bid's fee and loss
    assert e.margin(a, CTX.timestamp, assume_orders=True).available_open >= 5 * USD
    rejects(e, ex.PlaceOrder(a, BTC_PERP, Side.BUY, btc_px(65_900), BTC // 10_000), R.INSUFFICIENT_MARGIN)


@pytest.mark.parametrize("variant", ["rests", "ioc"])
def test_a_crossing_buy_that_lowers_a_median_mark_is_checked_at_the_lower_mark(perp, config, variant):
    """A crossing buy sets the last trade at the asks it takes - possibly far
    below the mark - and may rest as a low best bid: BTC-PERP's median mark
    falls against the account's own long (found by review of the first bound,
    which only looked up). Crossing, the mark is bounded on both sides by the
    oracle, the old last trade, the best ask and the order's price."""
    e = perp
    mm, a, b, c = b"\xcc" * 20, b"\xa1" * 20, b"\xb0" * 20, b"\xc1" * 20
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    for who, amount in ((mm, 10_000_000), (b, 10_000_000), (c, 10_000_000), (a, 30_000)):
        e.apply(ex.Deposit(who, USDC, amount * USD), CTX)
    place(e, b, Side.SELL, btc_px(60_000), BTC, market=BTC_PERP)
    place(e, a, Side.BUY, btc_px(60_000), BTC, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)  # long 1 BTC
    place(e, c, Side.SELL, btc_px(54_000), BTC // 10_000, market=BTC_PERP)
    place(e, mm, Side.SELL, btc_px(55_000), BTC, market=BTC_PERP)
    if variant == "ioc":
        place(e, mm, Side.BUY, btc_px(53_000), BTC, market=BTC_PERP)  # a bid that makes the mid low
    withdraw_all_allowed(e, a)
    e.apply(ex.Deposit(a, USDC, 5 * USD), CTX)  # 5 USDC of slack
    before = e.margin(a, CTX.timestamp, assume_orders=True).available_open
    assert before >= 5 * USD
    lots = 2 if variant == "rests" else 1
    tif = ex.TimeInForce.GTC if variant == "rests" else ex.TimeInForce.IOC
    rejects(e, ex.PlaceOrder(a, BTC_PERP, Side.BUY, btc_px(54_000), lots * BTC // 10_000, time_in_force=tif),
            R.INSUFFICIENT_MARGIN)


@pytest.mark.parametrize("then", ["cancel", "modify"])
def test_a_median_mark_propped_by_an_own_order_does_not_carry_a_withdrawal(perp, config, then):
    """A long's own best bid props BTC-PERP's mid, so the median mark; a
    withdrawal checked at that mark, then a cancel (never checked) or a
    modification down, left the account 3,994 below zero (found by review).
    A check values a position with own orders at the worse of the oracle and
    the last trade (the median lies between them whatever the mid)."""
    e = perp
    mm, a, b = b"\xcc" * 20, b"\xa1" * 20, b"\xb0" * 20
    e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    for who, amount in ((mm, 10_000_000), (b, 10_000_000), (a, 30_000)):
        e.apply(ex.Deposit(who, USDC, amount * USD), CTX)
    place(e, b, Side.SELL, btc_px(55_000), BTC, market=BTC_PERP)
    place(e, a, Side.BUY, btc_px(55_000), BTC, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)  # last 55,000
    place(e, mm, Side.BUY, btc_px(50_000), BTC, market=BTC_PERP)
    place(e, mm, Side.SELL, btc_px(62_000), BTC, market=BTC_PERP)
    result, _ = place(e, a, Side.BUY, btc_px(60_500), BTC // 10_000, market=BTC_PERP)  # its own best bid
    assert e.mark_price(BTC_PERP) == 60_000 * USD  # median(60,000, mid 61,250, last 55,000)
    withdraw_all_allowed(e, a)
    if then == "modify":  # checked: the mark it leaves would take the account below zero
        rejects(e, ex.ModifyOrder(a, result.order_id, btc_px(50_500), BTC // 10_000), R.INSUFFICIENT_MARGIN)
        return
    e.apply(ex.CancelOrder(a, result.order_id), CTX)  # never checked
    assert e.mark_price(BTC_PERP) < 60_000 * USD
    assert e.margin(a, CTX.timestamp, assume_orders=True).available_open >= 0


def test_a_margined_accounts_resting_order_on_a_market_quoted_in_another_asset(config):
    """The what-if counts resting spot orders only on markets quoted in the
    risk model's quote; the resting check priced a BTC-WETH bid's notional (in
    WETH) as USDC and refused every such order of a margined account (found by
    review). There it is judged filled, as before."""
    doc = default_doc()
    spot = [m for m in doc["exchange"]["markets"] if m["id"] == 1][0]
    doc["exchange"]["markets"].append(dict(spot, id=10, symbol="BTC-WETH", quote="WETH", min_notional=1))
    cfg = ex.load(doc)
    e = ex.Engine(cfg)
    e.apply(ex.SetOraclePrice(cfg.oracle, WETH, 2000 * USD), CTX)
    e.apply(ex.SetOraclePrice(cfg.oracle, WBTC, 60_000 * USD), CTX)
    who, mm = b"\x21" * 20, b"\xc0" * 20
    e.apply(ex.Deposit(mm, USDC, 10**12), CTX)
    e.apply(ex.Deposit(who, USDC, 10_000 * USD), CTX)
    e.apply(ex.Deposit(who, WETH, 10 * ETH), CTX)
    e.apply(ex.Deposit(who, WBTC, BTC // 10), CTX)
    place(e, mm, Side.SELL, btc_px(61_000), BTC // 100, market=BTC_PERP)
    place(e, who, Side.BUY, btc_px(61_000), BTC // 10_000, market=BTC_PERP, time_in_force=ex.TimeInForce.IOC)
    for side, price in ((Side.BUY, 27 * 10**14), (Side.SELL, 33 * 10**14)):  # 30 WETH a WBTC: -/+ 10 %
        result, _ = place(e, who, side, price, BTC // 10_000, market=10)
        assert result.status == ex.OrderStatus.RESTING

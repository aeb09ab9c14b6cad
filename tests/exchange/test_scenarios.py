"""Scenario tests: one per order type and rule, with exact balances, fills and fees.

Default market ETH-USDC: lot 0.001 WETH, price in USDC units per lot (3000
USDC/WETH = 3_000_000), maker fee 100 ppm, taker fee 500 ppm.
"""

from __future__ import annotations

import pytest

import exchange as ex
from exchange import CancelReason as CR
from exchange import Reason as R
from exchange import Side, TimeInForce as TIF

from exchange_helpers import (
    ALICE, BOB, BTC_USDC, CAROL, CTX, ETH, ETH_PERP, ETH_USDC, LOT, USD, USDC, WBTC, WETH,
    default_doc, events_of, fee_ceil, free, held, px,
)

START_USDC = 100_000 * USD
START_WETH = 100 * ETH
FEE = b"\x00" * 18 + b"\xfe\xe5"


def place(e, who, side, price, qty, market=ETH_USDC, ctx=CTX, **kw):
    return e.apply(ex.PlaceOrder(who, market, side, price, qty, **kw), ctx)


def rejects(e, command, reason, ctx=CTX):
    """Assert the command is rejected with ``reason`` and changes nothing."""
    before = e.state_digest()
    with pytest.raises(ex.ExchangeError) as info:
        e.apply(command, ctx)
    assert info.value.reason == reason
    assert info.value.code == int(reason)
    assert e.state_digest() == before
    return info.value


def conserved(e):
    report = e.balance_report()
    assert report.balanced, report
    assert e.audit() == []


# ---- balances ---------------------------------------------------------------


def test_deposit_and_withdraw_move_free_balance(engine):
    result, events = engine.apply(ex.Withdraw(ALICE, USDC, 40 * USD), CTX)
    assert result == ex.BalanceResult(USDC, START_USDC - 40 * USD)
    assert events == [ex.Withdrawn(ALICE, USDC, 40 * USD, START_USDC - 40 * USD)]
    rejects(engine, ex.Withdraw(ALICE, USDC, START_USDC), R.INSUFFICIENT_BALANCE)
    rejects(engine, ex.Withdraw(ALICE, 99, 1), R.UNKNOWN_ASSET)
    rejects(engine, ex.Deposit(ALICE, USDC, 0), R.INVALID_AMOUNT)
    rejects(engine, ex.Withdraw(b"\x99" * 20, USDC, 1), R.INSUFFICIENT_BALANCE)
    conserved(engine)


def test_withdrawal_cannot_touch_held_balance(engine):
    place(engine, ALICE, Side.SELL, px(3000), 60 * ETH)
    assert free(engine, ALICE, WETH) == 40 * ETH and held(engine, ALICE, WETH) == 60 * ETH
    rejects(engine, ex.Withdraw(ALICE, WETH, 41 * ETH), R.INSUFFICIENT_BALANCE)
    engine.apply(ex.Withdraw(ALICE, WETH, 40 * ETH), CTX)
    assert engine.balances(ALICE)[WETH] == (0, 60 * ETH)
    conserved(engine)


# ---- limit orders, matching, fees -------------------------------------------


def test_resting_buy_holds_notional_plus_maker_fee(engine):
    result, events = place(engine, ALICE, Side.BUY, px(3000), 1 * ETH, client_order_id=7)
    assert result == ex.OrderResult(result.order_id, ex.OrderStatus.RESTING, 0, 1 * ETH)
    notional = 3000 * USD
    assert held(engine, ALICE, USDC) == notional + fee_ceil(notional, 100)
    assert free(engine, ALICE, USDC) == START_USDC - notional - 300_000
    assert events == [ex.OrderAccepted(result.order_id, ALICE, ETH_USDC, Side.BUY, px(3000), ETH,
                                       TIF.GTC, ex.OrderType.LIMIT, 7, 0)]
    assert engine.best_bid_ask(ETH_USDC) == (px(3000), None)


def test_cross_fills_at_maker_price_with_maker_and_taker_fees(engine):
    bid, _ = place(engine, ALICE, Side.BUY, px(3000), 1 * ETH)
    result, events = place(engine, BOB, Side.SELL, px(2999.99), 1 * ETH)
    assert result.status == ex.OrderStatus.FILLED and result.filled_quantity == ETH
    notional = 3000 * USD
    maker_fee, taker_fee = fee_ceil(notional, 100), fee_ceil(notional, 500)
    assert (maker_fee, taker_fee) == (300_000, 1_500_000)
    fills = events_of(events, ex.Fill)
    assert fills == [ex.Fill(1, ETH_USDC, px(3000), ETH, Side.SELL, bid.order_id, ALICE, 0, maker_fee,
                             result.order_id, BOB, 0, taker_fee)]
    assert engine.balances(ALICE)[USDC] == (START_USDC - notional - maker_fee, 0)
    assert engine.balances(ALICE)[WETH] == (START_WETH + ETH, 0)
    assert engine.balances(BOB)[USDC] == (START_USDC + notional - taker_fee, 0)
    assert engine.balances(BOB)[WETH] == (START_WETH - ETH, 0)
    assert engine.balances(FEE)[USDC] == (maker_fee + taker_fee, 0)
    assert engine.open_orders(ALICE) == [] and engine.best_bid_ask(ETH_USDC) == (None, None)
    assert engine.fills(ALICE) == fills and engine.fills(BOB) == fills
    conserved(engine)


def test_price_time_priority_and_partial_fills(engine):
    a, _ = place(engine, ALICE, Side.BUY, px(3000), 1 * ETH)
    c1, _ = place(engine, CAROL, Side.BUY, px(3000), 1 * ETH)
    c2, _ = place(engine, CAROL, Side.BUY, px(3001), ETH // 2)
    result, events = place(engine, BOB, Side.SELL, px(2990), 1200 * LOT)
    fills = events_of(events, ex.Fill)
    assert [(f.maker_order_id, f.price, f.quantity, f.maker_remaining) for f in fills] == [
        (c2.order_id, px(3001), 500 * LOT, 0),
        (a.order_id, px(3000), 700 * LOT, 300 * LOT),
    ]
    assert [f.taker_remaining for f in fills] == [700 * LOT, 0]
    assert engine.order(ALICE, a.order_id).remaining == 300 * LOT
    assert engine.order(CAROL, c1.order_id).remaining == ETH
    assert engine.depth(ETH_USDC, 5) == ([(px(3000), 1300 * LOT, 2)], [])
    # Alice's hold shrank with her fill: what her 0.3 ETH remainder can still cost.
    basis = px(3000) * 700 * 100
    rest = px(3000) * 300
    assert held(engine, ALICE, USDC) == rest - (-(basis + rest * 100) // ex.FEE_SCALE) - fee_ceil(px(3000) * 700, 100)
    conserved(engine)


def test_taker_pays_maker_price_and_gets_the_improvement_back(engine):
    place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    result, _ = place(engine, ALICE, Side.BUY, px(3010), ETH // 2, time_in_force=TIF.IOC)
    assert result.status == ex.OrderStatus.FILLED
    cost = 1500 * USD + fee_ceil(1500 * USD, 500)
    assert engine.balances(ALICE)[USDC] == (START_USDC - cost, 0)
    conserved(engine)


def test_gtc_partially_filled_rests_and_pays_maker_fee_later(engine):
    place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    result, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    assert (result.status, result.filled_quantity, result.remaining_quantity) == (
        ex.OrderStatus.RESTING, ETH // 2, ETH // 2)
    # Taker part: 1500 USDC at 500 ppm = 0.75; the rest holds 1500 + maker fee 0.15.
    assert held(engine, ALICE, USDC) == 1500 * USD + 150_000
    assert free(engine, ALICE, USDC) == START_USDC - 1500 * USD - 750_000 - 1500 * USD - 150_000
    _, events = place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    assert events_of(events, ex.Fill)[0].maker_fee == 150_000
    assert engine.balances(ALICE)[USDC] == (START_USDC - 3000 * USD - 900_000, 0)
    # Fees: Alice 0.75 taker + 0.15 maker; Bob two taker fills of 0.75 - Bob's
    # first order was a maker: 0.15.
    assert engine.balances(FEE)[USDC] == (750_000 + 150_000 + 150_000 + 750_000, 0)
    conserved(engine)


def test_fees_round_up_once_per_order_not_per_fill(engine):
    # Ten 1-lot makers; one taker sweeps them. Per fill the taker fee basis is
    # 3_000_010 * 500 = 1_500_005_000, i.e. 1500.005 units: ten fills cost
    # ceil(15000.05) = 15001 in total, not 10 * ceil(1500.005) = 15010.
    for _ in range(10):
        place(engine, BOB, Side.SELL, px(3000.01), LOT)
    result, events = place(engine, ALICE, Side.BUY, px(3000.01), 10 * LOT, time_in_force=TIF.IOC)
    fees = [f.taker_fee for f in events_of(events, ex.Fill)]
    assert sum(fees) == fee_ceil(px(3000.01) * 10, 500) == 15001
    assert fees[0] == 1501 and set(fees) == {1500, 1501}
    # Each maker is charged on its own order: ceil(300.001) = 301.
    assert {f.maker_fee for f in events_of(events, ex.Fill)} == {301}
    assert engine.balances(FEE)[USDC] == (15001 + 10 * 301, 0)
    conserved(engine)


# ---- time in force ------------------------------------------------------------


def test_ioc_remainder_is_cancelled_and_released(engine):
    place(engine, BOB, Side.SELL, px(3000), 300 * LOT)
    result, events = place(engine, ALICE, Side.BUY, px(3000), ETH, time_in_force=TIF.IOC)
    assert (result.status, result.filled_quantity, result.remaining_quantity) == (
        ex.OrderStatus.CANCELLED, 300 * LOT, 0)
    assert events[-1] == ex.OrderCancelled(result.order_id, ALICE, ETH_USDC, Side.BUY, px(3000), 700 * LOT,
                                           CR.IOC_REMAINDER)
    assert held(engine, ALICE, USDC) == 0 and engine.open_orders(ALICE) == []
    conserved(engine)


def test_fok_fills_completely_or_not_at_all(engine):
    place(engine, BOB, Side.SELL, px(3000), 600 * LOT)
    place(engine, CAROL, Side.SELL, px(3001), 300 * LOT)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3001), ETH, TIF.FOK), R.FOK_NOT_FILLABLE)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), 700 * LOT, TIF.FOK), R.FOK_NOT_FILLABLE)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(2000), LOT * 500, TIF.FOK), R.FOK_NOT_FILLABLE)
    result, events = place(engine, ALICE, Side.BUY, px(3001), 900 * LOT, time_in_force=TIF.FOK)
    assert result.status == ex.OrderStatus.FILLED and len(events_of(events, ex.Fill)) == 2
    conserved(engine)


def test_post_only_rests_or_is_rejected(engine):
    place(engine, BOB, Side.SELL, px(3000), ETH)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), ETH, TIF.POST_ONLY),
            R.WOULD_CROSS_POST_ONLY)
    result, _ = place(engine, ALICE, Side.BUY, px(2999.99), ETH, time_in_force=TIF.POST_ONLY)
    assert result.status == ex.OrderStatus.RESTING
    conserved(engine)


def test_market_order_stops_at_its_worst_price(engine):
    place(engine, BOB, Side.SELL, px(3000), 300 * LOT)
    place(engine, BOB, Side.SELL, px(3010), ETH)
    result, events = place(engine, ALICE, Side.BUY, px(3005), ETH, order_type=ex.OrderType.MARKET)
    assert (result.status, result.filled_quantity) == (ex.OrderStatus.CANCELLED, 300 * LOT)
    assert events[0].time_in_force == TIF.IOC
    assert engine.best_bid_ask(ETH_USDC) == (None, px(3010))
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3005), ETH, TIF.POST_ONLY, ex.OrderType.MARKET),
            R.INVALID_ORDER)
    conserved(engine)


def test_good_till_time_expires_by_block_timestamp(engine):
    result, _ = place(engine, ALICE, Side.BUY, px(3000), ETH, expires_at=1_500)
    assert engine.apply(ex.ExpireOrders(), ex.Context(11, 1_499)) == (ex.ExpireResult(0), [])
    expired, events = engine.apply(ex.ExpireOrders(), ex.Context(12, 1_500))
    assert expired == ex.ExpireResult(1)
    assert events == [ex.OrderCancelled(result.order_id, ALICE, ETH_USDC, Side.BUY, px(3000), ETH, CR.EXPIRED)]
    assert engine.balances(ALICE)[USDC] == (START_USDC, 0)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), ETH, expires_at=1_000), R.ALREADY_EXPIRED)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), ETH, TIF.IOC, expires_at=5_000),
            R.INVALID_ORDER)
    conserved(engine)


def test_matching_never_fills_an_expired_order(engine):
    stale, _ = place(engine, ALICE, Side.BUY, px(3000), ETH, expires_at=1_500)
    fresh, _ = place(engine, CAROL, Side.BUY, px(2999), ETH)
    result, events = place(engine, BOB, Side.SELL, px(2999), ETH, ctx=ex.Context(20, 2_000))
    assert events[1] == ex.OrderCancelled(stale.order_id, ALICE, ETH_USDC, Side.BUY, px(3000), ETH, CR.EXPIRED)
    assert [f.maker_order_id for f in events_of(events, ex.Fill)] == [fresh.order_id]
    assert engine.balances(ALICE)[USDC] == (START_USDC, 0)
    assert engine.apply(ex.ExpireOrders(), ex.Context(21, 3_000))[0] == ex.ExpireResult(0)
    conserved(engine)


# ---- client ids, cancels, modifies, batches ------------------------------------


def test_client_order_ids_are_unique_while_open(engine):
    first, _ = place(engine, ALICE, Side.BUY, px(3000), ETH, client_order_id=42)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(2990), ETH, client_order_id=42),
            R.DUPLICATE_CLIENT_ORDER_ID)
    place(engine, BOB, Side.BUY, px(2990), ETH, client_order_id=42)  # another account may use it
    result, events = engine.apply(ex.CancelByClientId(ALICE, 42), CTX)
    assert result == ex.CancelResult(first.order_id, ETH)
    assert events[0].reason == CR.USER
    rejects(engine, ex.CancelByClientId(ALICE, 42), R.UNKNOWN_ORDER)
    again, _ = place(engine, ALICE, Side.BUY, px(3000), ETH, client_order_id=42)
    assert engine.order(ALICE, again.order_id).client_order_id == 42
    conserved(engine)


def test_cancel_only_own_open_orders(engine):
    result, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    rejects(engine, ex.CancelOrder(BOB, result.order_id), R.UNKNOWN_ORDER)
    assert engine.apply(ex.CancelOrder(ALICE, result.order_id), CTX)[0] == ex.CancelResult(result.order_id, ETH)
    rejects(engine, ex.CancelOrder(ALICE, result.order_id), R.UNKNOWN_ORDER)
    assert engine.balances(ALICE)[USDC] == (START_USDC, 0)


def test_cancel_all_per_market_and_per_account(engine):
    engine.apply(ex.Deposit(ALICE, WBTC, 10**8), CTX)
    ids = [place(engine, ALICE, Side.BUY, px(2990 + i), ETH)[0].order_id for i in range(3)]
    btc = place(engine, ALICE, Side.SELL, 7_000_000, 10**8 // 2, market=BTC_USDC)[0].order_id
    place(engine, BOB, Side.BUY, px(2980), ETH)
    result, events = engine.apply(ex.CancelAll(ALICE, ETH_USDC), CTX)
    assert result == ex.CancelAllResult(3)
    assert [ev.order_id for ev in events] == ids
    assert [o.order_id for o in engine.open_orders(ALICE)] == [btc]
    assert engine.apply(ex.CancelAll(ALICE), CTX)[0] == ex.CancelAllResult(1)
    assert engine.open_orders(ALICE) == [] and len(engine.open_orders(BOB)) == 1
    assert engine.balances(ALICE)[USDC] == (START_USDC, 0)
    conserved(engine)


def test_modify_size_decrease_keeps_priority(engine):
    a, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    place(engine, CAROL, Side.BUY, px(3000), ETH)
    result, events = engine.apply(ex.ModifyOrder(ALICE, a.order_id, px(3000), ETH // 2), CTX)
    assert result == ex.ModifyResult(a.order_id, False)
    assert events == [ex.OrderModified(a.order_id, ALICE, ETH_USDC, Side.BUY, px(3000), ETH // 2, False)]
    assert held(engine, ALICE, USDC) == 1500 * USD + 150_000
    _, events = place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    assert events_of(events, ex.Fill)[0].maker_order_id == a.order_id
    conserved(engine)


def test_modify_size_increase_or_price_change_requeues(engine):
    a, _ = place(engine, ALICE, Side.BUY, px(3000), ETH // 2)
    c, _ = place(engine, CAROL, Side.BUY, px(3000), ETH)
    assert engine.apply(ex.ModifyOrder(ALICE, a.order_id, px(3000), ETH), CTX)[0].requeued
    assert held(engine, ALICE, USDC) == 3000 * USD + 300_000
    _, events = place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    assert events_of(events, ex.Fill)[0].maker_order_id == c.order_id
    assert engine.apply(ex.ModifyOrder(CAROL, c.order_id, px(2999), ETH // 2), CTX)[0].requeued
    assert engine.depth(ETH_USDC) == ([(px(3000), ETH, 1), (px(2999), ETH // 2, 1)], [])
    conserved(engine)


def test_modify_rejections(engine):
    a, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    place(engine, BOB, Side.SELL, px(3100), ETH)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(3100), ETH), R.WOULD_CROSS_POST_ONLY)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(3000), ETH), R.NO_CHANGE)
    rejects(engine, ex.ModifyOrder(BOB, a.order_id, px(3000), ETH // 2), R.UNKNOWN_ORDER)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(3000) + 1, ETH), R.OFF_TICK)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(3000), 100 * ETH), R.INSUFFICIENT_BALANCE)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(3000), LOT + 1), R.OFF_LOT)


def test_batch_applies_each_action_with_its_own_result(engine):
    actions = (
        ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), ETH, client_order_id=1),
        ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000) + 1, ETH),
        ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(2999), ETH, client_order_id=2),
        ex.CancelByClientId(ALICE, 1),
        ex.PlaceOrder(BOB, ETH_USDC, Side.BUY, px(2999), ETH),
        ex.Batch(ALICE, ()),
    )
    result, events = engine.apply(ex.Batch(ALICE, actions), CTX)
    r = result.results
    assert r[0].status == ex.OrderStatus.RESTING and r[2].status == ex.OrderStatus.RESTING
    assert r[1] == ex.ExchangeError(R.OFF_TICK)
    assert r[3] == ex.CancelResult(r[0].order_id, ETH)
    assert r[4] == ex.ExchangeError(R.WRONG_ACCOUNT) and r[5] == ex.ExchangeError(R.NESTED_BATCH)
    assert [o.client_order_id for o in engine.open_orders(ALICE)] == [2]
    assert len(events) == 3
    rejects(engine, ex.Batch(ALICE, actions * 6), R.BATCH_TOO_LARGE)
    conserved(engine)


# ---- self-trade prevention ----------------------------------------------------


@pytest.mark.parametrize("mode, filled, own_left, status", [
    (ex.SelfTradePrevention.CANCEL_RESTING, ETH // 2, False, ex.OrderStatus.RESTING),
    (ex.SelfTradePrevention.CANCEL_INCOMING, 0, True, ex.OrderStatus.CANCELLED),
    (ex.SelfTradePrevention.CANCEL_BOTH, 0, False, ex.OrderStatus.CANCELLED),
])
def test_self_trade_prevention(engine, mode, filled, own_left, status):
    own, _ = place(engine, ALICE, Side.SELL, px(3000), ETH // 2)
    place(engine, BOB, Side.SELL, px(3000), ETH // 2)
    result, events = place(engine, ALICE, Side.BUY, px(3000), ETH, stp=mode)
    assert (result.status, result.filled_quantity) == (status, filled)
    assert (engine.order(ALICE, own.order_id) is not None) == own_left
    cancelled = events_of(events, ex.OrderCancelled)
    assert all(ev.reason == CR.SELF_TRADE for ev in cancelled)
    assert all(f.maker_account != f.taker_account for f in events_of(events, ex.Fill))
    conserved(engine)


def test_fok_counts_self_trade_as_unfillable(engine):
    place(engine, ALICE, Side.SELL, px(3000), ETH // 2)
    place(engine, BOB, Side.SELL, px(3000), ETH)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(3000), ETH, TIF.FOK), R.FOK_NOT_FILLABLE)
    result, _ = place(engine, ALICE, Side.BUY, px(3000), ETH, time_in_force=TIF.FOK,
                      stp=ex.SelfTradePrevention.CANCEL_RESTING)
    assert result.status == ex.OrderStatus.FILLED


# ---- market status, kinds, validation ----------------------------------------


def test_market_status_by_admin_only(engine, config):
    a, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    rejects(engine, ex.SetMarketStatus(ALICE, ETH_USDC, ex.MarketStatus.HALTED), R.NOT_AUTHORIZED)
    _, events = engine.apply(ex.SetMarketStatus(config.admin, ETH_USDC, ex.MarketStatus.CANCEL_ONLY), CTX)
    assert events == [ex.MarketStatusChanged(ETH_USDC, ex.MarketStatus.CANCEL_ONLY)]
    rejects(engine, ex.PlaceOrder(BOB, ETH_USDC, Side.SELL, px(3000), ETH), R.MARKET_HALTED)
    rejects(engine, ex.ModifyOrder(ALICE, a.order_id, px(2999), ETH), R.MARKET_HALTED)
    engine.apply(ex.SetMarketStatus(config.admin, ETH_USDC, ex.MarketStatus.HALTED), CTX)
    rejects(engine, ex.CancelOrder(ALICE, a.order_id), R.MARKET_HALTED)
    engine.apply(ex.SetMarketStatus(config.admin, ETH_USDC, ex.MarketStatus.CANCEL_ONLY), CTX)
    engine.apply(ex.CancelOrder(ALICE, a.order_id), CTX)
    assert engine.market_status(ETH_USDC) == ex.MarketStatus.CANCEL_ONLY


def test_perp_orders_wait_for_an_oracle_price(engine):
    # Part 2 trades perps (tests/exchange/test_perps.py); margin needs a price first.
    rejects(engine, ex.PlaceOrder(ALICE, ETH_PERP, Side.BUY, px(3000), ETH), R.NO_ORACLE_PRICE)


@pytest.mark.parametrize("price, qty, reason", [
    (px(3000) + 5, ETH, R.OFF_TICK),
    (0, ETH, R.INVALID_PRICE),
    (px(3000), 0, R.INVALID_QUANTITY),
    (px(3000), LOT - 1, R.BELOW_LOT),
    (px(3000), LOT + 1, R.OFF_LOT),
    (px(0.5), LOT, R.BELOW_MIN_NOTIONAL),
    (px(3000), 1000 * ETH, R.INSUFFICIENT_BALANCE),
])
def test_order_validation(engine, price, qty, reason):
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, price, qty), reason)


def test_other_rejections(engine):
    rejects(engine, ex.PlaceOrder(ALICE, 77, Side.BUY, px(3000), ETH), R.UNKNOWN_MARKET)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, Side.SELL, px(3000), 101 * ETH), R.INSUFFICIENT_BALANCE)
    rejects(engine, ex.PlaceOrder(ALICE, ETH_USDC, 5, px(3000), ETH), R.INVALID_ORDER)
    rejects(engine, ex.PlaceOrder(b"\x77" * 20, ETH_USDC, Side.BUY, px(3000), ETH), R.INSUFFICIENT_BALANCE)
    with pytest.raises(ex.ExchangeError) as info:
        engine.apply(object(), CTX)
    assert info.value.reason == R.UNKNOWN_COMMAND


def test_too_many_open_orders():
    doc = default_doc()
    doc["exchange"]["max_open_orders_per_account"] = 2
    e = ex.Engine(ex.load(doc))
    e.apply(ex.Deposit(ALICE, USDC, 100_000 * USD), CTX)
    place(e, ALICE, Side.BUY, px(3000), ETH)
    place(e, ALICE, Side.BUY, px(2999), ETH)
    rejects(e, ex.PlaceOrder(ALICE, ETH_USDC, Side.BUY, px(2998), ETH), R.TOO_MANY_OPEN_ORDERS)
    # An IOC never rests, so the limit does not apply to it.
    assert place(e, ALICE, Side.BUY, px(2998), ETH, time_in_force=TIF.IOC)[0].status == ex.OrderStatus.CANCELLED


def test_reason_codes_are_stable():
    assert [(r.name, r.value) for r in R][:14] == [
        ("UNKNOWN_ASSET", 1), ("UNKNOWN_MARKET", 2), ("MARKET_HALTED", 3), ("INVALID_AMOUNT", 4),
        ("INSUFFICIENT_BALANCE", 5), ("OFF_TICK", 6), ("BELOW_LOT", 7), ("OFF_LOT", 8),
        ("BELOW_MIN_NOTIONAL", 9), ("WOULD_CROSS_POST_ONLY", 10), ("FOK_NOT_FILLABLE", 11),
        ("UNKNOWN_ORDER", 12), ("TOO_MANY_OPEN_ORDERS", 13), ("DUPLICATE_CLIENT_ORDER_ID", 14),
    ]
    assert len({r.value for r in R}) == len(R)


# ---- checkpoints, digest, persistence, views ----------------------------------


def test_nested_checkpoints(engine):
    d0 = engine.state_digest()
    outer = engine.checkpoint()
    a, _ = place(engine, ALICE, Side.BUY, px(3000), ETH)
    d1 = engine.state_digest()
    inner = engine.checkpoint()
    place(engine, BOB, Side.SELL, px(2990), 2 * ETH)
    engine.apply(ex.Deposit(CAROL, WBTC, 5), CTX)
    assert engine.state_digest() != d1
    engine.revert(inner)
    assert engine.state_digest() == d1 and engine.order(ALICE, a.order_id).remaining == ETH
    inner = engine.checkpoint()
    engine.apply(ex.CancelOrder(ALICE, a.order_id), CTX)
    engine.commit(inner)
    engine.revert(outer)
    assert engine.state_digest() == d0 and engine.open_orders(ALICE) == []
    # Ids handed out inside a reverted checkpoint are handed out again.
    assert place(engine, ALICE, Side.BUY, px(3000), ETH)[0].order_id == a.order_id
    conserved(engine)


def test_to_bytes_round_trip(engine, config):
    place(engine, ALICE, Side.BUY, px(3000), ETH, client_order_id=5, expires_at=9_999)
    place(engine, BOB, Side.SELL, px(2999), ETH // 2)
    place(engine, CAROL, Side.SELL, px(3050), ETH)
    copy = ex.Engine.from_bytes(engine.to_bytes(), config)
    assert copy.state_digest() == engine.state_digest()
    assert copy.to_bytes() == engine.to_bytes()
    assert copy.fills(ALICE) == engine.fills(ALICE)
    for e in (engine, copy):
        e.apply(ex.PlaceOrder(BOB, ETH_USDC, Side.SELL, px(2990), ETH), CTX)
        e.apply(ex.ExpireOrders(), ex.Context(11, 10_000))
    assert copy.state_digest() == engine.state_digest()


def test_digest_is_equal_for_equal_states_reached_differently(config):
    def run(extra):
        e = ex.Engine(config)
        e.apply(ex.Deposit(ALICE, USDC, 10_000 * USD), CTX)
        if extra:
            e.apply(ex.Deposit(ALICE, USDC, 5), CTX)
            e.apply(ex.Withdraw(ALICE, USDC, 5), CTX)
        return e
    # Totals of deposits differ, so the states differ...
    assert run(False).state_digest() != run(True).state_digest()
    # ...while an undone command leaves no trace at all.
    e = run(False)
    before = e.state_digest()
    cp = e.checkpoint()
    e.apply(ex.Deposit(BOB, USDC, 5), CTX)
    e.revert(cp)
    assert e.state_digest() == before == run(False).state_digest()


def test_views(engine):
    place(engine, ALICE, Side.BUY, px(3000), ETH)
    place(engine, CAROL, Side.BUY, px(3000), ETH // 2)
    place(engine, CAROL, Side.BUY, px(2999), ETH)
    place(engine, BOB, Side.SELL, px(3001), ETH)
    assert engine.depth(ETH_USDC, 1) == ([(px(3000), 1500 * LOT, 2)], [(px(3001), ETH, 1)])
    assert engine.best_bid_ask(ETH_USDC) == (px(3000), px(3001))
    assert [o.price for o in engine.open_orders(CAROL)] == [px(3000), px(2999)]
    assert engine.balances(b"\x55" * 20) == {}
    assert set(engine.balances(ALICE)) == {USDC, WETH, WBTC}

"""The basis trade end to end through Engine.apply (issue 6): 100 USDC of
equity, 900 borrowed automatically, 1,000 USDC of spot ETH long and 1,000 USDC
of ETH-PERP short. Portfolio margin nets the two legs, so it is allowed and
survives +-30 % oracle moves; the same equity cannot hold either leg alone.
Also the automatic-borrowing rules of exchange/margin.py one by one."""

from __future__ import annotations

import pytest

import exchange as ex
from exchange_helpers import BOB, CAROL, CTX, ETH, USD, USDC, WETH, events_of, free, px

R = ex.Reason
TRADER = b"\x7a" * 20
LONE = b"\x10" * 20  # same equity, one leg only
ETH_USDC, ETH_PERP, USDC_LEND, WETH_LEND = 0, 2, 4, 5
RATE = 50_000_000  # 5 % a year, RATE_SCALE parts
TERM = 864_000
PRICE = 2_000 * USD  # oracle: USDC units per whole WETH
LOTS = 500  # 0.5 WETH = 1,000 USDC at 2,000
BUY, SELL, IOC = ex.Side.BUY, ex.Side.SELL, ex.TimeInForce.IOC


def _interest(principal: int, seconds: int) -> int:
    return -(-principal * RATE * seconds // (ex.RATE_SCALE * 31_536_000))


def rejects(e, command, reason, ctx=CTX):
    before = (e.state_digest(), e.to_bytes())
    with pytest.raises(ex.ExchangeError) as info:
        e.apply(command, ctx)
    assert info.value.reason == reason, info.value
    assert (e.state_digest(), e.to_bytes()) == before


@pytest.fixture
def market(config) -> ex.Engine:
    """Oracle at 2,000; CAROL lends 10,000 USDC at 5 %; BOB makes both
    ETH books (asks 1 WETH of spot, bids 1 WETH of perp, at 2,000)."""
    e = ex.Engine(config)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, PRICE), CTX)
    e.apply(ex.Deposit(CAROL, USDC, 10_000 * USD), CTX)
    e.apply(ex.PlaceOrder(CAROL, USDC_LEND, SELL, RATE, 10_000 * USD), CTX)
    e.apply(ex.Deposit(BOB, USDC, 100_000 * USD), CTX)
    e.apply(ex.Deposit(BOB, WETH, 10 * ETH), CTX)
    e.apply(ex.PlaceOrder(BOB, ETH_USDC, SELL, px(2000), 1000 * 10**15), CTX)
    e.apply(ex.PlaceOrder(BOB, ETH_PERP, BUY, px(2000), 1000 * 10**15), CTX)
    for who in (TRADER, LONE):
        e.apply(ex.Deposit(who, USDC, 100 * USD), CTX)
    return e


def perp_short(who: bytes, lots: int) -> ex.PlaceOrder:
    return ex.PlaceOrder(who, ETH_PERP, SELL, px(2000), lots * 10**15, time_in_force=IOC)


def spot_buy(who: bytes, lots: int) -> ex.PlaceOrder:
    return ex.PlaceOrder(who, ETH_USDC, BUY, px(2000), lots * 10**15, time_in_force=IOC)


def leg_in(e: ex.Engine) -> list:
    """The trader legs in: 600 USDC of perp short, the 1,000 USDC spot buy
    (which borrows), the last 400 of perp short. Each step alone is margined."""
    events = []
    for command in (perp_short(TRADER, 300), spot_buy(TRADER, LOTS), perp_short(TRADER, 200)):
        result, evs = e.apply(command, CTX)
        assert result.status == ex.OrderStatus.FILLED
        events.append(evs)
    return events


def test_basis_trade_is_allowed_and_borrows_the_shortfall(market):
    e = market
    perp_events, spot_events, _ = leg_in(e)
    # The perp leg's fee (0.05 % taker) came out of the 100 USDC: 0.3 USDC.
    assert free(e, TRADER, USDC) >= 0
    # The spot buy held 1,000 USDC + 0.5 USDC worst fee; the free balance was
    # 99.7, so 900.8 were missing: 901 whole lots of USDC-LEND were borrowed.
    (borrowed,) = events_of(spot_events, ex.events.AutoBorrowed)
    assert (borrowed.account, borrowed.asset, borrowed.amount) == (TRADER, USDC, 901 * USD)
    (opened,) = events_of(spot_events, ex.LoanOpened)
    assert (opened.lender, opened.borrower, opened.principal, opened.rate, opened.maturity) == (
        CAROL, TRADER, 901 * USD, RATE, CTX.timestamp + TERM)
    assert borrowed.new_loans == (opened.loan_id,)
    # The borrow events come before the order's own.
    assert isinstance(spot_events[-1], ex.Fill) and isinstance(spot_events[0], ex.Fill)
    assert spot_events[0].market == USDC_LEND and spot_events[-1].market == ETH_USDC
    # 100 - 0.3 (perp fee) - 0.2 (perp fee) + 901 - 1000 - 0.5 (spot fee)
    assert e.balances(TRADER) == {USDC: (0, 0), WETH: (LOTS * 10**15, 0), 2: (0, 0)}
    assert e.position(TRADER, ETH_PERP).size == -LOTS * 10**15
    assert e.balances(CAROL)[USDC] == (0, (10_000 - 901) * USD)  # the rest of the offer still rests
    assert e.balance_report().balanced and not e.audit() and not e.lending.audit()

    m = e.margin_view(TRADER, CTX.timestamp)
    interest_to_term = _interest(901 * USD, TERM)
    assert m.equity == 99 * USD  # 100 minus 1 USDC of fees; the loan is owed beside its cash
    assert m.deductions == interest_to_term
    assert m.loss_open == m.loss_liq == 0 and m.binding is None  # the legs offset exactly
    assert m.available_open == m.available_liq == 99 * USD - interest_to_term
    # Naive per-position margin: 15 % of each 1,000 USDC leg, no netting.
    assert m.naive_open == 300 * USD and m.naive_liq == 200 * USD
    assert m.naive_available_open == 99 * USD - interest_to_term - 300 * USD < 0


@pytest.mark.parametrize("move_pct", [-30, 30])
def test_basis_trade_survives_a_30_percent_move(market, config, move_pct):
    e = market
    leg_in(e)
    moved = PRICE * (100 + move_pct) // 100
    e.apply(ex.SetOraclePrice(config.oracle, WETH, moved), CTX)
    m = e.margin(TRADER, CTX.timestamp)
    # Spot gains what the perp loses (or the reverse); equity stays 99 USDC.
    assert m.equity == 99 * USD
    assert m.available_liq > 0 and m.available_open > 0
    assert e.position(TRADER, ETH_PERP).unrealized_pnl == -move_pct * 10 * USD


def test_unhedged_legs_with_the_same_equity_are_rejected(market):
    e = market
    rejects(e, spot_buy(LONE, LOTS), R.INSUFFICIENT_MARGIN)  # would borrow 901 for a naked long
    rejects(e, perp_short(LONE, LOTS), R.INSUFFICIENT_MARGIN)
    # The first step of the basis trade alone is fine, and is what binds:
    e.apply(perp_short(LONE, 300), CTX)
    m = e.margin_view(LONE, CTX.timestamp)
    assert m.binding == (WETH, 150_000)  # a rise hurts a short
    assert m.loss_open == 90 * USD and m.available_open == 100 * USD - 300_000 - 90 * USD


def test_withdrawal_beyond_the_free_balance_borrows_within_margin(market):
    e = market
    e.apply(ex.Deposit(TRADER, WETH, ETH), CTX)  # 2,000 USDC of collateral
    result, events = e.apply(ex.Withdraw(TRADER, USDC, 600 * USD), CTX)
    (borrowed,) = events_of(events, ex.events.AutoBorrowed)
    assert borrowed.amount == 500 * USD and isinstance(events[-1], ex.Withdrawn)
    assert result.available == 0
    # 1 WETH at 2,000 with a 15 % shock carries 1,700 of margin: 1,300 more is too much.
    rejects(e, ex.Withdraw(TRADER, USDC, 1_300 * USD), R.INSUFFICIENT_MARGIN)
    assert e.margin(TRADER, CTX.timestamp).available_open >= 0


def test_nothing_to_borrow_and_a_thin_book(market, config):
    e = market
    # WBTC has no lending market: part 1's answer.
    rejects(e, ex.Withdraw(TRADER, 2, 1), R.INSUFFICIENT_BALANCE)
    # WETH-LEND has no offer at all: part 1's answer too.
    rejects(e, ex.Withdraw(TRADER, WETH, 1), R.INSUFFICIENT_BALANCE)
    # USDC-LEND has 10,000: a bigger shortfall is BORROW_UNAVAILABLE.
    e.apply(ex.Deposit(TRADER, WETH, 100 * ETH), CTX)
    rejects(e, ex.Withdraw(TRADER, USDC, 20_000 * USD), R.BORROW_UNAVAILABLE)
    # The lender's own offer is never taken by its own withdrawal.
    rejects(e, ex.Withdraw(CAROL, USDC, 1), R.INSUFFICIENT_BALANCE)


def test_failed_borrow_inside_a_batch_changes_nothing(market):
    e = market
    batch = ex.Batch(LONE, (ex.Deposit(LONE, USDC, 5 * USD), spot_buy(LONE, LOTS)))
    result, _ = e.apply(batch, CTX)
    assert result.results[1] == ex.ExchangeError(R.INSUFFICIENT_MARGIN, result.results[1].detail)
    assert e.balances(LONE)[USDC] == (105 * USD, 0) and e.loans(LONE, CTX.timestamp) == []
    assert e.balance_report().balanced and not e.lending.audit()


def test_a_realized_loss_below_zero_is_borrowed_at_once(market, config):
    e = market
    e.apply(perp_short(TRADER, 300), CTX)  # 0.3 WETH short at 2,000
    # The price rises 20 %: the trader buys back at 2,400 from a new maker.
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 2_400 * USD), CTX)
    e.apply(ex.PlaceOrder(BOB, ETH_PERP, SELL, px(2400), 300 * 10**15), CTX)
    _, events = e.apply(ex.PlaceOrder(TRADER, ETH_PERP, BUY, px(2400), 300 * 10**15, time_in_force=IOC,
                                      reduce_only=True), CTX)
    loss = 120 * USD + 300_000 + 360_000  # PnL and both fees
    assert 100 * USD - loss < 0  # more than the trader held: the rest is borrowed in the same command
    (borrowed,) = events_of(events, ex.events.AutoBorrowed)
    assert borrowed.account == TRADER and borrowed.amount == 21 * USD  # 20.66 rounded up to lots
    assert free(e, TRADER, USDC) == 21 * USD - 20_660_000
    assert e.balance_report().balanced and not e.lending.audit() and not e.audit()
    # Nothing left to do at the next Tick.
    _, events = e.apply(ex.Tick(), ex.Context(12, CTX.timestamp + 2))
    assert not events_of(events, ex.events.AutoBorrowed)


def test_a_spot_order_that_fits_the_balance_is_margin_checked_when_the_account_is_leveraged(market, config):
    """After the basis trade, selling the spot leg would leave the perp short
    unhedged on 100 USDC of equity: refused, although the trader holds the WETH.
    The same sell by an account without positions or debt is a balance matter;
    a small buy that the margin can carry passes."""
    e = market
    leg_in(e)
    e.apply(ex.PlaceOrder(BOB, ETH_USDC, BUY, px(1990), 1000 * 10**15), CTX)
    assert free(e, TRADER, WETH) == LOTS * 10**15
    sell = ex.PlaceOrder(TRADER, ETH_USDC, SELL, px(1990), LOTS * 10**15, time_in_force=IOC)
    rejects(e, sell, R.INSUFFICIENT_MARGIN)
    e.apply(ex.Deposit(LONE, WETH, LOTS * 10**15), CTX)
    result, _ = e.apply(ex.PlaceOrder(LONE, ETH_USDC, SELL, px(1990), LOTS * 10**15, time_in_force=IOC), CTX)
    assert result.status == ex.OrderStatus.FILLED
    result, _ = e.apply(ex.PlaceOrder(TRADER, ETH_USDC, BUY, px(2000), 10 * 10**15, time_in_force=IOC), CTX)
    assert result.status == ex.OrderStatus.FILLED
    assert e.margin(TRADER, CTX.timestamp).available_open >= 0

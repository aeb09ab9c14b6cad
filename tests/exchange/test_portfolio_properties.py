"""Hypothesis properties of the unified account over random command streams
mixing spot (with automatic borrowing), perps (with oracle moves and Ticks),
lending offers / borrows / repayments and withdrawals (exchange/margin.py):

* value is conserved per asset (balance_report balanced, pools and loans in);
* interest paid equals interest earned, per loan;
* funding and PnL are zero-sum (sizes sum to zero, the settlement pool holds
  exactly what positions still owe, as a rational);
* no accepted margin-checked command of an account's own (perp order, borrow,
  an order or withdrawal that borrows, a withdrawal by an account with debt or
  positions) leaves it below opening-level margin; a reduce-only order does
  not lower it;
* a rejected command changes nothing (digest).

Spot orders that fit the free balance are not margin-checked (part 1's fast
path, see exchange/margin.py), so the margin property does not cover them."""

from __future__ import annotations

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange_helpers import ALICE, BOB, CAROL, CTX, ETH, USD, USDC, WETH, assert_perp_zero_sum, px

AutoBorrowed = ex.events.AutoBorrowed
DAVE = b"\xd0" * 20
TRADERS = [ALICE, BOB, DAVE]
LENDER = CAROL
ETH_USDC, ETH_PERP, USDC_LEND, WETH_LEND = 0, 2, 4, 5
LOT = 10**15
BUY, SELL = ex.Side.BUY, ex.Side.SELL
TIFS = [ex.TimeInForce.GTC, ex.TimeInForce.IOC]

step = st.tuples(
    st.integers(0, 10),  # action
    st.integers(0, 2),  # trader
    st.sampled_from([BUY, SELL]),
    st.integers(-40, 40),  # price offset / oracle move
    st.integers(1, 1500),  # size
    st.integers(0, 1),  # time in force / flag
)


def _setup(config):
    e = ex.Engine(config)
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 2000 * USD), CTX)
    e.apply(ex.Deposit(LENDER, USDC, 200_000 * USD), CTX)
    e.apply(ex.Deposit(LENDER, WETH, 50 * ETH), CTX)
    e.apply(ex.PlaceOrder(LENDER, USDC_LEND, SELL, 50_000_000, 60_000 * USD), CTX)
    e.apply(ex.PlaceOrder(LENDER, USDC_LEND, SELL, 80_000_000, 60_000 * USD), CTX)
    e.apply(ex.PlaceOrder(LENDER, WETH_LEND, SELL, 30_000_000, 20 * ETH), CTX)
    # The lender also makes the ETH books, so takers find liquidity.
    for k in range(1, 4):
        for market in (ETH_USDC, ETH_PERP):
            e.apply(ex.PlaceOrder(LENDER, market, BUY, px(2000 - 10 * k), 3 * ETH), CTX)
            e.apply(ex.PlaceOrder(LENDER, market, SELL, px(2000 + 10 * k), 3 * ETH), CTX)
    for who in TRADERS:
        e.apply(ex.Deposit(who, USDC, 500 * USD), CTX)
        e.apply(ex.Deposit(who, WETH, ETH), CTX)
    return e


def _command(e, config, action, who, side, offset, size, flag, oracle, now):
    """(command, margin-checked?, reduce_only?) for one step; None for a no-op."""
    if action == 0:
        return ex.SetOraclePrice(config.oracle, WETH, max(100 * USD, oracle + offset * 7 * USD)), False, False
    if action == 1:
        return ex.Tick(), False, False
    usd = oracle // USD
    if action == 2:  # spot: may borrow USDC (buy) or WETH (sell)
        price = px(usd + offset)
        return ex.PlaceOrder(who, ETH_USDC, side, price, size * LOT, time_in_force=TIFS[flag]), False, False
    if action in (3, 4):  # perps, some reduce-only
        reduce_only = action == 4 and flag == 1
        tif = ex.TimeInForce.IOC if reduce_only else TIFS[flag]
        return (ex.PlaceOrder(who, ETH_PERP, side, px(usd + offset), size * LOT, time_in_force=tif,
                              reduce_only=reduce_only), not reduce_only, reduce_only)
    if action == 5:  # borrow USDC (IOC) or rest a bid
        return (ex.PlaceOrder(who, USDC_LEND, BUY, 100_000_000, size * USD, time_in_force=TIFS[flag]),
                True, False)
    if action == 6:  # lend what one has
        return ex.PlaceOrder(who, USDC_LEND, SELL, 40_000_000 + abs(offset) * 100_000, size * USD), False, False
    if action == 7:
        loans = [v.loan_id for v in e.loans(who, now) if v.borrower == who]
        if not loans:
            return None
        return ex.RepayLoan(who, loans[offset % len(loans)], size * USD), False, False
    if action == 8:  # withdraw, maybe beyond the free balance
        asset = USDC if flag == 0 else WETH
        amount = size * USD if asset == USDC else size * LOT
        return ex.Withdraw(who, asset, amount), True, False
    if action == 9:
        return ex.CancelAll(who), False, False
    return ex.Deposit(who, USDC, size * USD // 10), False, False


def _interest_is_paid_as_earned(e, paid: dict, now: int) -> None:
    lending = e.lending
    for loan_id, loan in lending.loans.items():
        assert loan.interest_paid == paid.get(loan_id, 0)
    for who in TRADERS + [LENDER]:
        for view in e.loans(who, now):
            assert view.interest_paid == paid.get(view.loan_id, 0)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=10, max_size=40))
# Found by this test (2026-11-25): a WETH debt at the margin's edge, then a
# resting perp buy (1) or spot buy (2) at the oracle + 1 that shrinks it passed
# as if filled and left the account below zero while it rested unfilled.
@example(steps=[(0, 0, BUY, 0, 1, 0)] * 11 + [(0, 0, BUY, -22, 1, 0), (0, 0, BUY, -29, 1, 0),
                (8, 0, BUY, 0, 659, 1), (10, 0, BUY, 0, 1013, 0), (8, 0, BUY, 0, 659, 1),
                (3, 0, BUY, 1, 22, 0)])
@example(steps=[(0, 0, BUY, 0, 1, 0)] * 11 + [(0, 0, BUY, -22, 1, 0), (0, 0, BUY, -29, 1, 0),
                (8, 0, BUY, 0, 659, 1), (10, 0, BUY, 0, 1013, 0), (8, 0, BUY, 0, 659, 1),
                (2, 0, BUY, 1, 14, 0)])
def test_unified_account_properties(config, steps):
    e = _setup(config)
    oracle = 2000 * USD
    now = CTX.timestamp
    block = CTX.block_number
    interest_paid: dict = {}
    borrowed_automatically = 0
    for action, trader, side, offset, size, flag in steps:
        who = TRADERS[trader]
        made = _command(e, config, action, who, side, offset, size, flag, oracle, now)
        if made is None:
            continue
        command, checked, reduce_only = made
        if action == 1:
            now += 3 * 3600 + offset * 1000 if offset > 0 else 1800
            block += 1
        ctx = ex.Context(block, now)
        before = e.state_digest()
        margin_before = e.margin(who, now, assume_orders=True).available_open
        try:
            _, events = e.apply(command, ctx)
        except ex.ExchangeError:
            assert e.state_digest() == before, "a rejected command changed the state"
            continue
        if action == 0:
            oracle = command.price
        for ev in events:
            if isinstance(ev, ex.InterestPaid):
                interest_paid[ev.loan_id] = interest_paid.get(ev.loan_id, 0) + ev.amount
        borrowed = [ev for ev in events if isinstance(ev, AutoBorrowed) and ev.account == who]
        borrowed_automatically += len(borrowed)
        account = e._accounts[who]
        if action == 8:
            checked = bool(borrowed) or bool(account.positions) or e.lending.has_debt(account)
        if checked or (borrowed and action in (2, 3, 4)):
            after = e.margin(who, now, assume_orders=True).available_open
            assert after >= 0, (command, after)
        elif reduce_only or action == 2:
            # Reduce-only orders, and spot orders that fit the free balance: they
            # never take an account below opening-level margin, or lower it if it
            # already is (exchange/margin.py check_spot_fit).
            assert e.margin(who, now, assume_orders=True).available_open >= min(0, margin_before), command
        report = e.balance_report()
        assert report.balanced, report
    event(f"auto-borrows: {min(borrowed_automatically, 3)}+")
    assert not e.audit() and not e.lending.audit()
    _interest_is_paid_as_earned(e, interest_paid, now)
    assert_perp_zero_sum(e, ETH_PERP)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=5, max_size=25))
def test_checkpoints_and_bytes_cover_borrowing(config, steps):
    """Each command inside checkpoint(): reverting it restores digest and
    bytes exactly; the committed stream round-trips through to_bytes."""
    e = _setup(config)
    oracle = 2000 * USD
    now = CTX.timestamp
    for action, trader, side, offset, size, flag in steps:
        made = _command(e, config, action, TRADERS[trader], side, offset, size, flag, oracle, now)
        if made is None:
            continue
        command = made[0]
        if action == 1:
            now += 3600
        ctx = ex.Context(2 + now, now)
        before = (e.state_digest(), e.to_bytes())
        token = e.checkpoint()
        try:
            e.apply(command, ctx)
        except ex.ExchangeError:
            e.commit(token)
            assert (e.state_digest(), e.to_bytes()) == before
            continue
        e.revert(token)
        assert (e.state_digest(), e.to_bytes()) == before
        e.apply(command, ctx)
        if action == 0:
            oracle = command.price
    copy = ex.Engine.from_bytes(e.to_bytes(), config)
    assert copy.state_digest() == e.state_digest()
    assert copy._parts["margin"].negative == {a for a in copy._accounts.values() if min(a.available) < 0}

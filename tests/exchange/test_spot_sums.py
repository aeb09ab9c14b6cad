"""Account.spot_resting: the resting spot orders' sums the pre-trade what-if
reads (perps.PerpClearing._spot_what_if), kept as orders change.

* After every command of random streams - rests (some expiring), takes then
  rests, maker fills, self-trade cancels, modifies in place or re-queued,
  cancels, batches, expiries, lending offers, with single commands and outer
  checkpoints over several reverted at random - each account's kept sums
  equal their rebuild from its open orders (``PerpClearing.audit``).
* ``_spot_what_if`` from the sums gives exactly what the order-by-order
  computation it replaced gave (kept here as the reference): per spot market
  the base exposure from every sell to every buy filled, each order's loss
  against the oracle (never its profit), its worst fee (ceiled per order) and
  a unit per lot; an unpriced base's value into the quote balance - with the
  oracle moved around the resting orders so that some buys are above it and
  some sells below, and with an order left out (``replacing``)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange.types import FEE_SCALE, MarketKind
from exchange_helpers import ALICE, BOB, CAROL, CTX, ETH, USD, px

TRADERS = [ALICE, BOB, CAROL]
ETH_USDC, BTC_USDC, USDC_LEND = 0, 1, 4
USDC, WETH, WBTC = 0, 1, 2
LOTS = {ETH_USDC: 10**15, BTC_USDC: 10**4}
BTC_TICK_PRICE = 6_000_000  # BTC-USDC per-lot price of 60,000 USDC/WBTC (lot 0.0001 WBTC)


def _funded(config) -> ex.Engine:
    e = ex.Engine(config)
    for who in TRADERS:
        e.apply(ex.Deposit(who, USDC, 10_000_000 * USD), CTX)
        e.apply(ex.Deposit(who, WETH, 1000 * ETH), CTX)
        e.apply(ex.Deposit(who, WBTC, 100 * 10**8), CTX)
    return e


def _price(market: int, offset: int) -> int:
    return px(2000 + offset) if market == ETH_USDC else BTC_TICK_PRICE + offset * 1000


_SPOT_STEP = st.tuples(
    st.integers(0, 12),  # action
    st.integers(0, 2),  # trader
    st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
    st.integers(-12, 12),  # price offset
    st.integers(1, 40),  # lots
    st.integers(0, 9),  # roll: market, reverts, outer checkpoints, expiry
)


def _spot_command(e, action, who, side, offset, lots, roll, now):
    """One command touching resting spot orders in every way the engine has."""
    market = BTC_USDC if roll % 4 == 3 else ETH_USDC
    lot = LOTS[market]
    price = _price(market, offset)
    open_ids = sorted(oid for oid, o in e._accounts[who].open_orders.items() if o.market in LOTS) \
        if who in e._accounts else []
    if action <= 3:  # rests (GTC, some expiring) or takes first, then rests
        return ex.PlaceOrder(who, market, side, price, lots * lot, expires_at=now + 60 if roll < 3 else 0,
                             stp=ex.SelfTradePrevention(roll % 3))
    if action == 4:
        return ex.PlaceOrder(who, market, side, price, lots * lot, time_in_force=ex.TimeInForce.IOC,
                             stp=ex.SelfTradePrevention(roll % 3))
    if action == 5:
        return ex.PlaceOrder(who, market, side, price, lots * lot, time_in_force=ex.TimeInForce.POST_ONLY)
    if action in (6, 7) and open_ids:  # modify: in place (fewer lots) or re-queued (price, more lots)
        oid = open_ids[offset % len(open_ids)]
        o = e._accounts[who].open_orders[oid]
        lot = LOTS[o.market]
        if action == 6:
            return ex.ModifyOrder(who, oid, o.price, max(1, o.remaining - lots) * lot)
        return ex.ModifyOrder(who, oid, o.price + (1 if roll % 2 else -1) * 1000, (o.remaining + lots) * lot)
    if action == 8 and open_ids:
        return ex.CancelOrder(who, open_ids[offset % len(open_ids)])
    if action == 9:
        return ex.Batch(who, (ex.PlaceOrder(who, market, side, price, lots * lot),
                              ex.CancelAll(who, market) if roll % 2 else ex.CancelOrder(who, 1),
                              ex.PlaceOrder(who, market, 1 - side, _price(market, -offset), lots * lot)))
    if action == 10:
        return ex.ExpireOrders()
    if action == 11:  # a lending offer: an open order of another kind (not summed)
        return ex.PlaceOrder(who, USDC_LEND, ex.Side.SELL, 40_000_000 + offset * 100_000, lots * USD)
    return ex.Tick()


def _apply(e, command, ctx, undo: bool) -> bool:
    token = e.checkpoint()
    try:
        e.apply(command, ctx)
    except ex.ExchangeError:
        e.commit(token)
        return False
    if undo:
        e.revert(token)
        return False
    e.commit(token)
    return True


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(_SPOT_STEP, min_size=5, max_size=40))
def test_spot_sums_follow_every_change_of_resting_spot_orders(config, steps):
    """Each step starts from sums that are current for every account (brought
    up to date after each step), so it tests that step's own updates."""
    e = _funded(config)
    perps = e._perps
    now, block = CTX.timestamp, CTX.block_number
    outer = None
    for action, trader, side, offset, lots, roll in steps:
        if outer is None and roll == 9:
            outer = (e.checkpoint(), now, block)
        if action == 12:
            now += 30
            block += 1
        command = _spot_command(e, action, TRADERS[trader], side, offset, lots, roll, now)
        if command is None:
            continue
        _apply(e, command, ex.Context(block, now), undo=roll == 4)
        if outer is not None and roll in (7, 8):
            if roll == 7:
                e.revert(outer[0])
                _, now, block = outer
            else:
                e.commit(outer[0])
            outer = None
        assert perps.audit() == []
        for a in e._accounts.values():
            perps.spot_resting_of(a)  # current for the next step
    assert e.audit() == [] and e.balance_report().balanced


def test_spot_sums_kept_through_a_rest_a_fill_a_modify_and_a_cancel(config):
    """The sums by hand: two bids and an ask of Alice's, kept (not rebuilt)
    through Bob's partial fill of a bid, a modify and a cancel."""
    e = _funded(config)
    perps = e._perps
    alice = e._accounts[ALICE]
    fee = e._markets[ETH_USDC].max_fee
    lot = LOTS[ETH_USDC]

    def cost(price, lots):  # lots + the worst fee, ceiled per order
        return lots - (-price * lots * fee // FEE_SCALE)

    e.apply(ex.PlaceOrder(ALICE, ETH_USDC, ex.Side.BUY, px(1999), 7 * lot), CTX)
    perps.spot_resting_of(alice)  # kept from here on
    bid2 = e.apply(ex.PlaceOrder(ALICE, ETH_USDC, ex.Side.BUY, px(1998.5), 3 * lot), CTX)[0].order_id
    ask = e.apply(ex.PlaceOrder(ALICE, ETH_USDC, ex.Side.SELL, px(2001), 5 * lot), CTX)[0].order_id
    assert alice.spot_resting == {ETH_USDC: [10, 5,
                                             cost(px(1999), 7) + cost(px(1998.5), 3) + cost(px(2001), 5)]}
    e.apply(ex.PlaceOrder(BOB, ETH_USDC, ex.Side.SELL, px(1999), 4 * lot, time_in_force=ex.TimeInForce.IOC), CTX)
    assert alice.spot_resting == {ETH_USDC: [6, 5,
                                             cost(px(1999), 3) + cost(px(1998.5), 3) + cost(px(2001), 5)]}
    e.apply(ex.ModifyOrder(ALICE, ask, px(2002), 6 * lot), CTX)
    e.apply(ex.CancelOrder(ALICE, bid2), CTX)
    assert alice.spot_gen == perps.resting_gen  # kept all along, never rebuilt
    assert alice.spot_resting == {ETH_USDC: [3, 6, cost(px(1999), 3) + cost(px(2002), 6)]}
    e.apply(ex.CancelAll(ALICE), CTX)
    assert alice.spot_resting == {} and perps.audit() == []


def _spot_by_order(e, account, replacing, oracle, quote_id):
    """The order-by-order computation _spot_what_if had before the sums (the
    reference): (choices sorted, value added to the quote balance)."""
    perps = e._perps
    per_market: dict = {}
    for oid in sorted(account.open_orders):
        o = account.open_orders[oid]
        m = e._markets[o.market]
        if m.kind is not MarketKind.SPOT or e._asset_ids[m.quote] != quote_id or o is replacing:
            continue
        scale = 10 ** perps.decimals[m.base]
        entry = per_market.setdefault(o.market, [0, 0, 0, 0, m, scale, m.lot_size * oracle[m.base]])
        lots = o.remaining
        notional = o.price * lots
        if o.side == ex.Side.BUY:
            entry[0] += lots * m.lot_size
            against = lots * entry[6] - notional * scale
        else:
            entry[1] += lots * m.lot_size
            against = notional * scale - lots * entry[6]
        if against < 0:
            entry[2] += against
        entry[3] += lots - (-notional * m.max_fee // FEE_SCALE)
    choices, cash = [], 0
    for mid in sorted(per_market):
        bought, sold, losses, costs, m, scale, _ = per_market[mid]
        value = losses // scale - costs
        if oracle[m.base]:
            choices.append((mid, None, value, -sold, bought))
        else:
            cash += value
    return choices, cash


_BOOK_STEP = st.tuples(
    st.integers(0, 5),  # 0-2 rest, 3 cancel, 4 take, 5 move an oracle price
    st.integers(0, 2),  # trader
    st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
    st.integers(-30, 30),  # price offset / oracle move
    st.integers(1, 30),  # lots
    st.booleans(),  # BTC-USDC instead of ETH-USDC
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(_BOOK_STEP, min_size=1, max_size=30), st.booleans())
def test_spot_what_if_equals_the_order_by_order_computation(config, steps, btc_priced):
    """From the sums (the orders read only when the best price is worse than
    the oracle), the same choices and unpriced value as order by order, for
    every trader after every step; also with each trader's first spot order
    left out. WBTC has no oracle price unless ``btc_priced``."""
    e = _funded(config)
    perps = e._perps
    e.apply(ex.SetOraclePrice(config.oracle, WETH, 2000 * USD), CTX)
    if btc_priced:
        e.apply(ex.SetOraclePrice(config.oracle, WBTC, 60_000 * USD), CTX)
    quote_id = perps.risk_model().quote
    for action, trader, side, offset, lots, btc in steps:
        who = TRADERS[trader]
        market = BTC_USDC if btc else ETH_USDC
        if action <= 2:
            command = ex.PlaceOrder(who, market, side, _price(market, offset), lots * LOTS[market])
        elif action == 3:
            mine = sorted(e._accounts[who].open_orders)
            command = ex.CancelOrder(who, mine[offset % len(mine)]) if mine else ex.Tick()
        elif action == 4:
            command = ex.PlaceOrder(who, market, side, _price(market, 30 if side == ex.Side.BUY else -30),
                                    lots * LOTS[market], time_in_force=ex.TimeInForce.IOC)
        else:
            asset, base = (WBTC, 60_000) if btc and btc_priced else (WETH, 2000)
            command = ex.SetOraclePrice(config.oracle, asset, (base + offset * (1 if asset == WETH else 10)) * USD)
        _apply(e, command, CTX, undo=False)
        oracle = perps.oracle.prices
        for address in TRADERS:
            a = e._accounts[address]
            spot_orders = sorted(oid for oid, o in a.open_orders.items() if o.market in LOTS)
            for replacing in [None] + [a.open_orders[oid] for oid in spot_orders[:1]]:
                balances, choices = {}, []
                perps._spot_what_if(a, replacing, balances, choices, oracle, quote_id)
                want_choices, want_cash = _spot_by_order(e, a, replacing, oracle, quote_id)
                assert sorted(choices) == want_choices
                assert balances == ({quote_id: want_cash} if want_cash else {})
                if len(spot_orders) > (replacing is not None):  # an order in: a figure (its costs alone)
                    assert want_choices or want_cash
        assert perps.audit() == []

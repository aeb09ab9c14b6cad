"""Property tests over random command streams (hypothesis).

* conservation: per asset, free + held balances + fees == deposits - withdrawals,
  and held balances == what resting orders hold (balance_report);
* the book is never crossed, levels are FIFO, indexes agree (audit);
* a failed command changes nothing (digest and bytes);
* checkpoint / revert restores the exact digest, nested;
* the same stream gives the same digest; to_bytes / from_bytes keeps it;
* the fast book and the naive reference book agree on random streams.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange.book import Order, OrderBook
from exchange.reference import NaiveBook

from exchange_helpers import CTX, ETH, USD, default_doc

TRADERS = [bytes([0x10 + i]) * 20 for i in range(4)]
CONFIG = ex.load(default_doc())
ADMIN = CONFIG.admin
MARKETS = {0: 3_000_000, 1: 6_000_000}  # spot market -> mid price (units per lot)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _order(draw, who, market):
    m = CONFIG.markets[market]
    side = draw(st.sampled_from(list(ex.Side)))
    price = MARKETS[market] + draw(st.integers(-3, 3)) * m.tick_size
    if draw(st.integers(0, 30)) == 0:
        price += draw(st.sampled_from([1, -MARKETS[market]]))  # off tick / not positive
    lots = draw(st.integers(1, 6))
    qty = lots * m.lot_size + (1 if draw(st.integers(0, 40)) == 0 else 0)
    tif = draw(st.sampled_from([ex.TimeInForce.GTC] * 3 + list(ex.TimeInForce)))
    otype = ex.OrderType.MARKET if draw(st.integers(0, 10)) == 0 else ex.OrderType.LIMIT
    expires = 0
    if tif in (ex.TimeInForce.GTC, ex.TimeInForce.POST_ONLY) and otype == ex.OrderType.LIMIT:
        expires = draw(st.sampled_from([0, 0, 0, 0, 1_060, 1_200]))
    return ex.PlaceOrder(who, market, side, price, qty, tif, otype,
                         client_order_id=draw(st.sampled_from([0, 0, 0, 1, 2])),
                         stp=draw(st.sampled_from(list(ex.SelfTradePrevention))),
                         expires_at=expires)


@st.composite
def commands(draw):
    who = draw(st.sampled_from(TRADERS))
    kind = draw(st.integers(0, 99))
    market = draw(st.sampled_from(sorted(MARKETS)))
    if kind < 50:
        return _order(draw, who, market)
    if kind < 60:
        return ("cancel", who, draw(st.integers(0, 9)))  # resolved by resolve()
    if kind < 63:
        return ex.CancelByClientId(who, draw(st.sampled_from([1, 2, 3])))
    if kind < 66:
        return ex.CancelAll(who, draw(st.sampled_from([None, 0, 1])))
    if kind < 76:
        return ("modify", who, draw(st.integers(0, 9)), draw(st.integers(-2, 2)), draw(st.integers(-2, 2)))
    if kind < 80:
        actions = [_order(draw, who, market) for _ in range(draw(st.integers(0, 3)))]
        actions.append(ex.CancelOrder(who, draw(st.integers(1, 30))))
        return ex.Batch(who, tuple(actions))
    if kind < 86:
        asset = draw(st.integers(0, 2))
        return ex.Deposit(who, asset, draw(st.integers(1, 10**20)))
    if kind < 92:
        return ex.Withdraw(draw(st.sampled_from(TRADERS + [CONFIG.fee_account])), draw(st.integers(0, 2)),
                           draw(st.integers(0, 5 * 10**9)))
    if kind < 97:
        return ex.ExpireOrders(draw(st.integers(0, 2)))
    return ex.SetMarketStatus(draw(st.sampled_from([ADMIN, who])), market,
                              draw(st.sampled_from([ex.MarketStatus.ACTIVE] * 3 + list(ex.MarketStatus))))


streams = st.lists(st.tuples(commands(), st.integers(0, 2)), min_size=8, max_size=50)


def fresh_engine() -> ex.Engine:
    e = ex.Engine(CONFIG)
    for who in TRADERS:
        e.apply(ex.Deposit(who, 0, 50_000 * USD), CTX)
        e.apply(ex.Deposit(who, 1, 20 * ETH), CTX)
        e.apply(ex.Deposit(who, 2, 10**8), CTX)
    return e


def resolve(e: ex.Engine, command):
    """Turn ("cancel" | "modify", trader, i, ...) into a command on the
    trader's i-th open order (a made-up id when it has none). Depends only on
    the engine's state, so equal engines resolve a stream equally."""
    if not isinstance(command, tuple):
        return command
    who, i = command[1], command[2]
    orders = e.open_orders(who)
    if not orders:
        return ex.CancelOrder(who, 10_000 + i)
    o = orders[i % len(orders)]
    if command[0] == "cancel":
        return ex.CancelOrder(who, o.order_id)
    m = CONFIG.markets[o.market]
    lots = max(1, o.remaining // m.lot_size + command[4])
    return ex.ModifyOrder(who, o.order_id, o.price + command[3] * m.tick_size, lots * m.lot_size)


def run(e: ex.Engine, stream, check=None) -> list:
    """Apply the stream (time moves forward by the drawn step); returns the
    outcomes: (result, events) or the error."""
    out = []
    ts = 1_000
    for command, step in stream:
        ts += step * 5
        ctx = ex.Context(ts, ts)
        command = resolve(e, command)
        try:
            out.append(e.apply(command, ctx))
        except ex.ExchangeError as err:
            out.append(err)
        if check:
            check(e)
    return out


def invariants(e: ex.Engine) -> None:
    report = e.balance_report()
    assert report.balanced, report
    assert e.audit() == []


@SETTINGS
@given(streams)
def test_conservation_uncrossed_fifo_after_every_command(stream):
    e = fresh_engine()
    run(e, stream, check=invariants)


@SETTINGS
@given(streams)
def test_a_failed_command_changes_nothing(stream):
    e = fresh_engine()
    ts = 1_000
    for command, step in stream:
        ts += step * 5
        command = resolve(e, command)
        before = e.state_digest()
        blob = e.to_bytes()
        try:
            e.apply(command, ex.Context(ts, ts))
        except ex.ExchangeError:
            assert e.state_digest() == before
            assert e.to_bytes() == blob


@SETTINGS
@given(streams, streams, streams)
def test_checkpoint_revert_restores_the_exact_digest(prefix, inner, after):
    e = fresh_engine()
    run(e, prefix)
    d0 = e.state_digest()
    blob0 = e.to_bytes()
    outer = e.checkpoint()
    run(e, inner)
    d1 = e.state_digest()
    nested = e.checkpoint()
    run(e, after)
    e.revert(nested)
    assert e.state_digest() == d1
    nested = e.checkpoint()
    run(e, after)
    e.commit(nested)
    e.revert(outer)
    assert e.state_digest() == d0
    assert e.to_bytes() == blob0
    invariants(e)
    # The reverted engine behaves exactly like one that never saw the commands.
    twin = fresh_engine()
    run(twin, prefix)
    assert run(e, after) == run(twin, after)
    assert e.state_digest() == twin.state_digest()


@SETTINGS
@given(streams)
def test_same_stream_same_digest_and_bytes_round_trip(stream):
    a, b = fresh_engine(), fresh_engine()
    out_a, out_b = run(a, stream), run(b, stream)
    assert out_a == out_b
    assert a.state_digest() == b.state_digest()
    copy = ex.Engine.from_bytes(a.to_bytes(), CONFIG)
    assert copy.state_digest() == a.state_digest()
    # The restored engine continues exactly like the original.
    assert run(copy, stream) == run(a, stream)
    assert copy.state_digest() == a.state_digest()


# ---- the fast book against the naive reference book --------------------------


class _Trader:
    """Stands in for an Account: the book compares owners by identity only."""


OWNERS = [_Trader() for _ in range(3)]


@st.composite
def book_ops(draw):
    kind = draw(st.integers(0, 9))
    owner = draw(st.integers(0, 2))
    side = draw(st.integers(0, 1))
    price = 100 + draw(st.integers(-5, 5))
    lots = draw(st.integers(1, 5))
    if kind < 4:
        return ("add", owner, side, price, lots, draw(st.sampled_from([0, 0, 50, 90])))
    if kind < 6:
        return ("take", owner, side, price, lots, draw(st.sampled_from(list(ex.SelfTradePrevention))))
    if kind < 8:
        return ("remove", draw(st.integers(0, 30)))
    return ("reduce", draw(st.integers(0, 30)), lots)


@settings(max_examples=300, deadline=None)
@given(st.lists(book_ops(), max_size=80), st.integers(0, 120))
def test_fast_book_matches_naive_book(ops, now):
    fast, naive = OrderBook(0, set()), NaiveBook(0)
    orders: list[tuple[Order, Order]] = []
    seq = 0

    def new(owner, side, price, lots, stp, expires):
        return Order(seq, OWNERS[owner], 0, side, price, lots, 0, stp, expires, seq)

    for op in ops:
        seq += 1
        if op[0] == "add":
            _, owner, side, price, lots, expires = op
            if fast.would_cross(side, price):
                continue  # the engine never rests a crossing order
            pair = (new(owner, side, price, lots, 0, expires), new(owner, side, price, lots, 0, expires))
            fast.add(pair[0])
            naive.add(pair[1])
            orders.append(pair)
        elif op[0] == "take":
            _, owner, side, price, lots, stp = op
            assert fast.fillable(side, price, lots, OWNERS[owner], stp, now) == \
                naive.fillable(side, price, lots, OWNERS[owner], stp, now)
            ft, nt = new(owner, side, price, lots, stp, 0), new(owner, side, price, lots, stp, 0)
            f_out, f_stop = fast.match(ft, now)
            n_out, n_stop = naive.match(nt, now)
            assert [(o.id, q) for o, q in f_out] == [(o.id, q) for o, q in n_out]
            assert (f_stop, ft.remaining) == (n_stop, nt.remaining)
        elif op[0] == "remove":
            if op[1] < len(orders) and orders[op[1]][0].live:
                fast.remove(orders[op[1]][0])
                naive.remove(orders[op[1]][1])
        else:
            _, i, lots = op
            if i < len(orders) and orders[i][0].live and lots < orders[i][0].remaining:
                fast.reduce(orders[i][0], lots)
                naive.reduce(orders[i][1], lots)
        assert fast.depth(20) == naive.depth(20)
        assert (fast.best_bid, fast.best_ask) == (naive.best_bid, naive.best_ask)
        assert [o.id for o in fast.orders()] == [o.id for o in naive.orders()]
        assert [o.remaining for o in fast.orders()] == [o.remaining for o in naive.orders()]

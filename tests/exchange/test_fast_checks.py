"""The pre-trade check's fast paths against the full computation:

* ``RiskModel.available_open`` / ``available_liq`` (what the checks and the
  re-banding use) equal ``evaluate(...).available_open`` / ``available_liq``
  exactly, on random portfolios with one, two and three underlyings, and
  ``liq_band`` equals ``(available_liq, safe_band(LIQ))``;
* ``LendingClearing.terms_by_id`` (cached per account and block time,
  validated by the loans' undo snapshots) equals the uncached ``_terms`` after
  every command of random streams mixing borrows, offers, repayments, spot
  and perp trades, oracle moves and Ticks - with the cache filled mid-stream
  and outer checkpoints over several commands reverted (an undo restores
  loans without touching their snapshot epochs);
* the checks decide as the full path does: after every command, each
  trader's opening-level available margin through ``available_open`` equals
  ``evaluate``'s on a portfolio rebuilt without the cache."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exchange as ex
from exchange.risk import Portfolio, RiskModel, UnderlyingRisk, is_psd
from exchange_helpers import CTX, LOT, USD, px
from test_portfolio_properties import LENDER, TRADERS, USDC_LEND, WETH_LEND, _command, _setup, step
from test_risk import LINK, PPM, RHOS, USDC, WBTC, WETH, model, portfolios

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(portfolios(), RHOS, st.integers(1, 11))
def test_available_equals_evaluate(case, rho, scenarios):
    p, prices = case
    m = model(rho, scenarios=scenarios)
    full = m.evaluate(p, prices)
    assert m.available_open(p, prices) == full.available_open
    assert m.available_liq(p, prices) == full.available_liq


@SETTINGS
@given(portfolios(assets=(USDC, WETH, WBTC, LINK)), st.sampled_from([-400_000, 0, 500_000, PPM]),
       st.sampled_from([-400_000, 0, 500_000, PPM]), st.sampled_from([-400_000, 0, 500_000]),
       st.integers(0, 400_000))
def test_available_equals_evaluate_with_three_underlyings(case, r12, r13, r23, link_shock):
    p, prices = case
    if not is_psd([[PPM, r12, r13], [r12, PPM, r23], [r13, r23, PPM]]):
        return
    und = {**model().underlyings, LINK: UnderlyingRisk(18, link_shock, link_shock // 2, 900_000, 5)}
    m = RiskModel(USDC, und, {(WETH, WBTC): r12, (WETH, LINK): r13, (WBTC, LINK): r23})
    full = m.evaluate(p, prices)
    assert m.available_open(p, prices) == full.available_open
    assert m.available_liq(p, prices) == full.available_liq



@SETTINGS
@given(portfolios(), RHOS, st.integers(1, 11))
def test_liq_band_equals_available_liq_and_safe_band(case, rho, scenarios):
    """The re-banding's one-pass form gives both figures exactly."""
    p, prices = case
    m = model(rho, scenarios=scenarios)
    available = m.evaluate(p, prices).available_liq
    assert m.liq_band(p, prices) == (available, m.safe_band(p, prices, "liq", 0, available=available))

def test_a_missing_price_raises_as_evaluate_does():
    m = model()
    for p in (Portfolio({WETH: 1}), Portfolio(perps=[(WETH, 0, 0, 1, 5)]), Portfolio(borrowed=[(WBTC, 1, 0)])):
        with pytest.raises(KeyError):
            m.evaluate(p, {})
        with pytest.raises(KeyError):
            m.available_open(p, {})


def _apply(e, command, ctx, undo: bool) -> bool:
    """Apply ``command`` inside its own checkpoint, then undo it on its own
    when ``undo``; True when it was accepted and kept."""
    token = e.checkpoint()
    try:
        e.apply(command, ctx)
    except ex.ExchangeError:
        e.commit(token)
        return False
    if undo:
        e.revert(token)  # a command undone on its own
        return False
    e.commit(token)
    return True


def _uncached_available(e, account, now: int) -> int:
    """available_open of the check's portfolio (open orders assumed filled),
    with the lending terms computed afresh and the full evaluate."""
    perps = e._perps
    portfolio, prices = perps.portfolio_of(account, now, None, None)
    lent, borrowed = e.lending._terms(account, now, e.lending.asset_ids)
    rebuilt = Portfolio(portfolio.balances, portfolio.perps, lent, borrowed, portfolio.choices)
    return perps.risk_model().evaluate(rebuilt, prices).available_open


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(step, st.sampled_from([0, 0, 1, 2, 3, 4, 5, 8, 8, 9])), min_size=5, max_size=35))
def test_cached_terms_and_fast_checks_match_the_full_path(config, steps):
    e = _setup(config)
    lending = e.lending
    ids = lending.asset_ids
    oracle = 2000 * USD
    now = CTX.timestamp
    block = CTX.block_number
    outer = None  # an outer checkpoint over several commands, reverted or kept at random
    accounts = [*TRADERS, LENDER]
    for (action, trader, side, offset, size, flag), roll in steps:
        if outer is None and roll == 0:
            outer = (e.checkpoint(), oracle, now, block)
        made = _command(e, config, action, TRADERS[trader], side, offset, size, flag, oracle, now)
        if made is not None:
            command = made[0]
            if action == 1:
                now += 600 * (1 + abs(offset))
                block += 1
            if _apply(e, command, ex.Context(block, now), undo=roll == 1) and action == 0:
                oracle = command.price
        if outer is not None and roll in (8, 9):
            if roll == 8:
                e.revert(outer[0])
                _, oracle, now, block = outer
            else:
                e.commit(outer[0])
            outer = None
        for address in accounts:
            a = e._accounts.get(address)
            if a is None:
                continue
            # fills the cache at this epoch, then compares it with the uncached terms
            assert lending.terms_by_id(a, now) == lending._terms(a, now, ids)
            perps = e._perps
            portfolio, prices = perps.portfolio_of(a, now, None, None)
            exact = _uncached_available(e, a, now)
            assert perps._available(perps.risk_model(), portfolio, prices, exact=True) == exact
            check = perps._available(perps.risk_model(), portfolio, prices)  # the checks' answer
            assert check == exact if exact < 0 else 0 <= check <= exact
            _margin_only_figures_match(e, a, now)
    if outer is not None:
        e.revert(outer[0])
        for address in accounts:
            a = e._accounts.get(address)
            if a is not None:
                assert lending.terms_by_id(a, outer[2]) == lending._terms(a, outer[2], ids)


def _margin_only_figures_match(e, a, now: int) -> None:
    """The margin-only terms (quote borrowings summed time-invariantly,
    lending.margin_terms) give the checks' and the re-banding's figures
    exactly as the full terms do, with and without open orders assumed."""
    perps = e._perps
    model = perps.risk_model()
    for assume in (True, False):
        full, prices = perps.portfolio_of(a, now, None, None, assume)
        fast, _ = perps.portfolio_of(a, now, None, None, assume, True)
        assert model.available_open(fast, prices) == model.available_open(full, prices)
        assert model.liq_band(fast, prices) == model.liq_band(full, prices)


def test_margin_terms_follow_time_maturity_and_repayment(config):
    """A borrower's quote loans summed once serve later block times with the
    same available margin as the full terms; past a maturity, a repayment
    and an undo they are split again."""
    e = _setup(config)
    who = TRADERS[0]
    lending = e.lending
    now = CTX.timestamp
    for k in range(3):
        now += 1000
        e.apply(ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, 100_000_000, (100 + k) * USD,
                              time_in_force=ex.TimeInForce.IOC), ex.Context(CTX.block_number + k, now))
    a = e._accounts[who]
    assert len(a.loans) == 3
    term = config.markets[USDC_LEND].loan_term
    lent, borrowed = lending.margin_terms(a, now)
    assert lent == [] and len(borrowed) == 1 and borrowed[0][2] == 0
    (_, fixed, _), = borrowed
    for t in (now + 1, now + term // 2, now + term - 3000, now + term + 10):
        lent2, borrowed2 = lending.margin_terms(a, t)
        full = lending._terms(a, t, lending.asset_ids)
        assert sum(b[1] + b[2] for b in borrowed2) == sum(b[1] + b[2] for b in full[1])
        if t < now - 2000 + term:  # before the first maturity: the same fixed figure, no per-loan work
            assert borrowed2 == borrowed
        _margin_only_figures_match(e, a, t)
    # a repayment of accrued interest alone (accrual segment kept, ``accrued`` > 0)
    later = now + 5 * 86_400
    e.apply(ex.RepayLoan(who, min(a.loans), 1), ex.Context(CTX.block_number + 4, later))
    assert a.loans[min(a.loans)].accrued > 0
    for t in (later, later + 1, later + 86_400):
        _margin_only_figures_match(e, a, t)
    at = later + 10
    fixed = lending.margin_terms(a, at)[1][0][1]
    # a partial repayment changes the sum at once; its undo restores it
    (loan_id, _), *_ = sorted(a.loans.items())
    token = e.checkpoint()
    e.apply(ex.RepayLoan(who, loan_id, 50 * USD), ex.Context(CTX.block_number + 5, at))
    assert lending.margin_terms(a, at)[1][0][1] < fixed
    _margin_only_figures_match(e, a, at)
    e.revert(token)
    assert lending.margin_terms(a, at) == ([], [(lending.asset_ids[0], fixed, 0)])


def test_a_reverted_repayment_is_not_served_from_the_cache(config):
    """An outer checkpoint over two commands: a partial repayment (the loan
    count stays), then another command (so the cache is refilled at a later
    epoch than the loan's snapshot); reverting both must not leave the
    repaid terms cached."""
    e = _setup(config)
    who = TRADERS[0]
    now = CTX.timestamp + 100
    ctx = ex.Context(CTX.block_number + 1, now)
    e.apply(ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, 100_000_000, 300 * USD,
                          time_in_force=ex.TimeInForce.IOC), ctx)
    a = e._accounts[who]
    lending = e.lending
    before = lending.terms_by_id(a, now)
    (loan_id,) = [i for i, loan in a.loans.items() if loan.borrower is a]
    token = e.checkpoint()
    e.apply(ex.RepayLoan(who, loan_id, 100 * USD), ctx)
    e.apply(ex.Deposit(who, USDC, USD), ctx)
    repaid = lending.terms_by_id(a, now)
    assert repaid != before and repaid == lending._terms(a, now, lending.asset_ids)
    e.revert(token)
    assert lending.terms_by_id(a, now) == before == lending._terms(a, now, lending.asset_ids)


def _what_if_by_replay(perps, account, positions, order, replacing) -> dict:
    """The open-orders what-if written plainly: per market with resting orders,
    the corners of its fills replayed fill by fill through ``trade``, in
    order-id order, after the new order: {market id: distinct (size, entry,
    cash) of every buy filled, every sell, none, and (orders on both sides)
    all}; ``positions`` gets the new order's market when it has none."""
    from exchange.perps import _FLAT, BUY, trade
    from exchange.types import FEE_SCALE
    by_market: dict = {}
    for oid in sorted(account.open_orders):
        o = account.open_orders[oid]
        if o.market in perps.markets and o is not replacing:
            by_market.setdefault(o.market, ([], []))[o.side].append(o)
    out = {}
    if order is not None:
        m, side, price, lots, _ = order
        lot = m.lot_size
        size, entry, owed = positions.get(m.id, _FLAT)
        size, entry, realized = trade(size, entry, lots * lot if side == BUY else -lots * lot,
                                      price * lots, price, lot)
        positions[m.id] = (size, entry, owed)
        cash = realized - -(-price * lots * m.max_fee // FEE_SCALE)
        out["new cash"] = cash
    for mid in sorted(by_market):
        m = perps._perp_info[mid][0]
        lot = m.lot_size
        sides = []
        buys, sells = by_market[mid]
        for orders in (buys, sells, [], sorted(buys + sells, key=lambda o: o.id) if buys and sells else None):
            if orders is None:
                continue
            size, entry, _ = positions.get(mid, _FLAT)
            cash = 0
            for o in orders:
                step = lot if o.side == BUY else -lot
                size, entry, realized = trade(size, entry, o.remaining * step, o.price * o.remaining, o.price, lot)
                cash += realized - o.reserved
            if (size, entry, cash) not in sides:
                sides.append((size, entry, cash))
        out[mid] = tuple(sides)
    return out


def _by_side(perps, account, mid, positions, replacing) -> tuple:
    """(all buys filled, all sells filled) of one market, by replay."""
    from exchange.perps import _FLAT, BUY, trade
    lot = perps._perp_info[mid][0].lot_size
    out = []
    for direction in (BUY, 1):
        size, entry, _ = positions.get(mid, _FLAT)
        cash = 0
        for oid in sorted(account.open_orders):
            o = account.open_orders[oid]
            if o.market == mid and o.side == direction and o is not replacing:
                step = lot if direction == BUY else -lot
                size, entry, realized = trade(size, entry, o.remaining * step, o.price * o.remaining, o.price, lot)
                cash += realized - o.reserved
        out.append((size, entry, cash))
    return tuple(out)


class _Resting:
    def __init__(self, oid, market, side, price, remaining, reserved):
        self.id, self.market, self.side, self.price = oid, market, side, price
        self.remaining, self.reserved = remaining, reserved


class _Holder:
    def __init__(self, open_orders):
        self.open_orders = open_orders
        self.resting, self.resting_gen = None, -1  # built from open_orders by PerpClearing.resting_of


_ORDER = st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(-40, 40), st.integers(1, 30),
                   st.integers(0, 5000))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_ORDER, max_size=8), st.lists(st.tuples(st.integers(-50, 50), st.integers(-10**9, 10**9)),
                                              min_size=2, max_size=2),
       st.one_of(st.none(), _ORDER), st.integers(-1, 7), st.permutations(range(8)))
def test_what_if_equals_the_fill_by_fill_replay(config, orders, starts, new, replaced, ids):
    """Without an oracle price a market keeps the side of the larger position
    (ties: BUY), from the sums where every fill grows the position and the
    fill-by-fill replay where some close it: the same positions and cash as
    replaying. With one, each market is a range of sizes (every sell filled
    to every buy filled) at a value at or below every corner's replayed
    value (none, all buys, all sells, all of both), profits left out."""
    e = ex.Engine(config)
    perps = e._perps
    mids = sorted(perps.markets)
    resting = {}
    for k, (m, side, off, lots, reserved) in enumerate(orders):
        market = perps._perp_info[mids[m % len(mids)]][0]
        oid = 100 + ids[k]  # ids out of arrival order: the replay must sort them
        resting[oid] = _Resting(oid, market.id, side, max(1, 3_000_000 + off * 1000), lots, reserved)
    account = _Holder(resting)
    replacing = resting.get(100 + ids[replaced]) if 0 <= replaced < len(orders) else None
    positions = {}
    for m, (lots, entry) in zip(mids, starts):
        if lots or entry:
            positions[m] = (lots * perps._perp_info[m][0].lot_size, entry, 7)
    order = None
    if new is not None:
        m, side, off, lots, _ = new
        # an order that takes (IOC): filled in full; one that may rest is a resting order (the property tests)
        order = (perps._perp_info[mids[m % len(mids)]][0], side, max(1, 3_000_000 + off * 1000), lots, False)
    want_positions = dict(positions)
    want = _what_if_by_replay(perps, account, want_positions, order, replacing)
    new_cash = want.pop("new cash", 0)
    quote = e._asset_ids[0]
    # unpriced: the larger side, exactly
    got_positions, got_balances = dict(positions), {"x": 1}
    assert perps._what_if(account, got_positions, got_balances, order, replacing) == []
    cash = new_cash
    for mid in want:
        owed = want_positions.get(mid, (0, 0, 0))[2]
        buys, sells = _by_side(perps, account, mid, want_positions, replacing)
        size, entry, side_cash = sells if abs(sells[0]) > abs(buys[0]) else buys
        assert got_positions[mid] == (size, entry, owed)
        cash += side_cash
    assert got_balances == ({"x": 1, quote: cash} if cash else {"x": 1})
    # priced: the orders on the book (its best prices are what the what-if reads)
    e.apply(ex.SetOraclePrice(config.oracle, 1, 3000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, 2, 60_000 * USD), CTX)
    for mid in mids:
        book = perps._perp_info[mid][0].book
        mine = [o for o in resting.values() if o.market == mid and o is not replacing]
        book.bids.best = max((o.price for o in mine if o.side == ex.Side.BUY), default=None)
        book.asks.best = min((o.price for o in mine if o.side != ex.Side.BUY), default=None)
    got_positions, got_balances = dict(positions), {"x": 1}
    choices = {c[0]: c[1:] for c in perps._what_if(account, got_positions, got_balances, order, replacing)}
    assert got_balances == {"x": 1}
    if order is not None and order[0].id not in want:
        want[order[0].id] = ((*want_positions[order[0].id][:2], new_cash),)
    elif order is not None:  # the reference's corners start from the new order's fill; its cash joins them
        want[order[0].id] = tuple((size, entry, c + new_cash) for size, entry, c in want[order[0].id])
    assert sorted(choices) == sorted(want)
    for mid, corners in want.items():
        owed, value, low, high = choices[mid]
        mark, one = perps._mark(mid), perps._perp_info[mid][4]
        assert (low, high) == (min(c[0] for c in corners), max(c[0] for c in corners))
        assert value <= min(size * mark // one - entry - owed + c for size, entry, c in corners)
        assert mid not in got_positions


# ---- Account.resting: the resting perp orders' sums, kept as orders change ----

_PERP_STEP = st.tuples(
    st.integers(0, 11),  # action
    st.integers(0, 2),  # trader
    st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
    st.integers(-12, 12),  # price offset (ticks of 1 USD)
    st.integers(1, 40),  # lots
    st.integers(0, 9),  # roll: reverts, outer checkpoints, expiry
)


def _perp_command(e, action, who, side, offset, lots, roll, now):
    """One command touching resting perp orders in every way the engine has."""
    ETH_PERP = 2  # noqa: N806 (the market's id in the default config)
    price = px(2000 + offset)
    open_ids = sorted(oid for oid, o in e._accounts[who].open_orders.items() if o.market == ETH_PERP) \
        if who in e._accounts else []
    if action <= 3:  # rests (GTC, some expiring) or takes first, then rests
        return ex.PlaceOrder(who, ETH_PERP, side, price, lots * LOT,
                             expires_at=now + 60 if roll < 3 else 0,
                             stp=ex.SelfTradePrevention(roll % 3))
    if action == 4:
        return ex.PlaceOrder(who, ETH_PERP, side, price, lots * LOT, time_in_force=ex.TimeInForce.IOC,
                             stp=ex.SelfTradePrevention(roll % 3))
    if action == 5:
        return ex.PlaceOrder(who, ETH_PERP, side, price, lots * LOT, time_in_force=ex.TimeInForce.POST_ONLY)
    if action in (6, 7) and open_ids:  # modify: in place (fewer lots) or re-queued (price, more lots)
        oid = open_ids[offset % len(open_ids)]
        o = e._accounts[who].open_orders[oid]
        if action == 6:
            return ex.ModifyOrder(who, oid, o.price, max(1, o.remaining - lots) * LOT)
        return ex.ModifyOrder(who, oid, o.price + (1 if roll % 2 else -1) * 1000, (o.remaining + lots) * LOT)
    if action == 8 and open_ids:
        return ex.CancelOrder(who, open_ids[offset % len(open_ids)])
    if action == 9:
        return ex.Batch(who, (ex.PlaceOrder(who, ETH_PERP, side, price, lots * LOT),
                              ex.CancelAll(who, ETH_PERP) if roll % 2 else ex.CancelOrder(who, 1),
                              ex.PlaceOrder(who, ETH_PERP, 1 - side, px(2000 - offset), lots * LOT)))
    if action == 10:
        return ex.ExpireOrders()
    return ex.Tick()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(_PERP_STEP, min_size=5, max_size=40))
def test_resting_sums_follow_every_change_of_resting_perp_orders(config, steps):
    """After every command - a rest, a take then rest (trim), a maker fill, a
    self-trade cancel, a modify in place or re-queued, a cancel, a batch, an
    expiry - each account's resting sums equal their rebuild from its open
    orders (``PerpClearing.audit``), with single commands and outer
    checkpoints over several reverted at random (an undo makes them stale,
    rebuilt on the next use). Each step starts from sums that are current
    (every account's are brought up to date after each step), so it tests
    that step's own updates."""
    e = _setup(config)
    perps = e._perps
    for who in TRADERS:
        e.apply(ex.Deposit(who, 0, 100_000 * USD), CTX)
    now, block = CTX.timestamp, CTX.block_number
    outer = None
    compared = kept = 0
    for action, trader, side, offset, lots, roll in steps:
        if outer is None and roll == 9:
            outer = (e.checkpoint(), now, block)
        if action == 11:
            now += 30
            block += 1
        command = _perp_command(e, action, TRADERS[trader], side, offset, lots, roll, now)
        if command is None:
            continue
        kept += _apply(e, command, ex.Context(block, now), undo=roll == 4)
        if outer is not None and roll in (7, 8):
            if roll == 7:
                e.revert(outer[0])
                _, now, block = outer
            else:
                e.commit(outer[0])
            outer = None
        current = [a for a in e._accounts.values() if a.resting_gen == perps.resting_gen]
        compared += len(current)
        assert perps.audit() == []
        for a in e._accounts.values():
            perps.resting_of(a)  # current for the next step
    assert compared > 0 or not kept  # (a stream of commands each undone leaves every sum stale)
    assert e.audit() == [] and e.balance_report().balanced


# ---- the what-if's sides: the combination that leaves the lowest margin ------------

_TWO_SIDED = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.sampled_from([ex.Side.BUY, ex.Side.SELL]),
                                st.integers(-300, 300), st.integers(1, 30), st.booleans()),
                      min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(_TWO_SIDED)
def test_the_check_counts_the_worst_combination_of_sides(config, orders):
    """Traders with positions and resting orders on both perps: the check's
    figure (and the views') is at or below the opening-level available margin
    of every combination of corners of the fills (none, all buys, all sells,
    all of both, each replayed fill by fill and evaluated as a plain
    portfolio by the full evaluate); the check's answer is that figure when
    below zero, a bound between zero and it above."""
    from itertools import product

    e = ex.Engine(config)
    e.apply(ex.SetOraclePrice(config.oracle, 1, 3000 * USD), CTX)
    e.apply(ex.SetOraclePrice(config.oracle, 2, 60_000 * USD), CTX)
    traders = [b"\x71" * 20, b"\x72" * 20, b"\x73" * 20]
    for who in traders:
        e.apply(ex.Deposit(who, 0, 50_000 * USD), CTX)
        e.apply(ex.Deposit(who, 1, 2 * 10**18), CTX)
    perps = e._perps
    model = perps.risk_model()
    info = {2: (10**15, 3_000_000), 3: (10**4, 6_000_000)}  # ETH-PERP, BTC-PERP: lot, price per lot at the oracle
    for who, market, side, off, lots, take in orders:
        mid = 2 + market
        lot, mid_price = info[mid]
        tif = ex.TimeInForce.IOC if take else ex.TimeInForce.GTC
        price = mid_price + off * 1000 * (1 if mid == 2 else 20)
        try:
            e.apply(ex.PlaceOrder(traders[who], mid, side, price, lots * lot, time_in_force=tif), CTX)
        except ex.ExchangeError:
            pass
    ids = e._asset_ids
    for who in traders:
        a = e._accounts[who]
        portfolio, prices = perps.portfolio_of(a, CTX.timestamp, None, None, True, True)
        got = perps._available(model, portfolio, prices, exact=True)
        check = perps._available(model, portfolio, prices)
        positions = {mid: (p.size, p.entry_value, 0) for mid, p in a.positions.items() if p.size}  # no funding yet
        corners = _what_if_by_replay(perps, a, dict(positions), None, None)
        assert sorted(ids[perps._perp_info[mid][1]] for mid in corners) == sorted(c[0] for c in portfolio.choices)
        fixed = list(portfolio.perps)
        worst = None
        for combo in product(*[[(mid, c) for c in cs] for mid, cs in sorted(corners.items())]):
            balances = dict(portfolio.balances)
            perps_list = list(fixed)
            for mid, (size, entry, cash) in combo:
                perps_list.append((ids[perps._perp_info[mid][1]], size, entry, perps._mark(mid), 0))
                balances[0] = balances.get(0, 0) + cash
            figure = model.evaluate(Portfolio(balances, perps_list, portfolio.lent, portfolio.borrowed),
                                    prices).available_open
            worst = figure if worst is None else min(worst, figure)
        if worst is not None:
            assert got <= worst
        assert check == got if got < 0 else 0 <= check <= got
        # the views value positions at the mark, a check at the worse of mark and oracle
        assert e.margin(who, CTX.timestamp, assume_orders=True).available_open >= got


_CHOICE = st.tuples(st.sampled_from([WETH, WBTC]), st.integers(-10**11, 10**11),
                    st.integers(-5 * 10**18, 5 * 10**18), st.integers(0, 5 * 10**18))


@settings(max_examples=150, deadline=None)
@given(portfolios(), RHOS, st.lists(_CHOICE, min_size=1, max_size=6))
def test_the_worst_combination_and_its_bound(case, rho, choices):
    """``RiskModel._worst``: up to EXACT_CHOICES choices, the exact lowest
    available margin over every corner of the size ranges (each a plain
    portfolio under evaluate, the position valued at the choice's value);
    past that, a figure at or below every corner's."""
    from itertools import product

    from exchange.risk import EXACT_CHOICES

    p, prices = case
    m = model(rho)
    prices = {**prices, WETH: prices.get(WETH, 3000 * USD), WBTC: prices.get(WBTC, 60_000 * USD), USDC: USD}
    scale = {WETH: 10**18, WBTC: 10**8}
    listed = [(a, value, low, low + width) for a, value, low, width in choices]
    with_choices = Portfolio(p.balances, p.perps, p.lent, p.borrowed, listed)
    figures = []
    for corner in product(*[(low, high) for _, _, low, high in listed]):
        perps = list(p.perps)
        for (a, value, _, _), size in zip(listed, corner):
            perps.append((a, size, size * prices[a] // scale[a] - value, prices[a], 0))
        figures.append(m.evaluate(Portfolio(p.balances, perps, p.lent, p.borrowed), prices).available_open)
    got = m.available_open(with_choices, prices)
    check = m._available(with_choices, prices, 1, 5, 0)  # a check's question: exact below zero, a bound above
    assert check == got if got < 0 else 0 <= check <= min(figures)
    if len(listed) <= EXACT_CHOICES:
        assert got == min(figures) == m.evaluate(with_choices, prices).available_open
    else:
        assert got <= min(figures) and m.evaluate(with_choices, prices).available_open == got


def test_a_lenders_margin_terms_equal_the_full_terms(config):
    """An account whose variable loans are all lent, in one asset (a lender's
    usual case), is summed without _terms' dicts (margin_terms' hit[9]); its
    lent figure equals the full terms' at every block time, beside a quote
    borrowing of its own (the fixed part), after a repayment and its undo;
    with a second lent asset it goes the general way, with the same figures."""
    e = _setup(config)
    lender, borrowers = TRADERS[0], TRADERS[1:]
    lending = e.lending
    ids = lending.asset_ids
    now = CTX.timestamp
    e.apply(ex.Deposit(lender, 0, 5_000 * USD), CTX)  # USDC
    for k, who in enumerate(borrowers * 2):  # four USDC loans at different times and rates
        now += 700
        ctx = ex.Context(CTX.block_number + k, now)
        e.apply(ex.PlaceOrder(lender, USDC_LEND, ex.Side.SELL, (20 + k) * 1_000_000, (200 + 10 * k) * USD), ctx)
        e.apply(ex.PlaceOrder(who, USDC_LEND, ex.Side.BUY, (20 + k) * 1_000_000, (200 + 10 * k) * USD,
                              time_in_force=ex.TimeInForce.IOC), ctx)
    a = e._accounts[lender]
    assert sum(loan.lender is a for loan in a.loans.values()) == 4

    def same(t: int, one_asset: bool) -> None:
        lent, borrowed = lending.margin_terms(a, t)
        full_lent, full_borrowed = lending._terms(a, t, ids)
        assert lent == full_lent
        assert (lending._fixed_cache[a][9] is not None) == one_asset
        if not full_borrowed:
            assert borrowed == []
        _margin_only_figures_match(e, a, t)

    term = config.markets[USDC_LEND].loan_term
    for t in (now, now + 1, now + 3_333, now + term // 2, now + term - 1, now + term + 5):
        same(t, True)
    # a borrowing of its own (quote, fixed) beside the lent loans: the variable ones stay lent-only
    now += 10
    e.apply(ex.PlaceOrder(lender, USDC_LEND, ex.Side.BUY, 100_000_000, 50 * USD,
                          time_in_force=ex.TimeInForce.IOC), ex.Context(CTX.block_number + 9, now))
    assert any(loan.borrower is a for loan in a.loans.values())
    for t in (now, now + 17, now + 86_400):
        same(t, True)
    # its own borrowing past maturity is variable too: the general way
    same(now + term + 100, False)
    # repayments to the lender - of interest alone (``interest_due`` and ``accrued``
    # kept), of principal - and their undo
    lent_ids = sorted(i for i, loan in a.loans.items() if loan.lender is a)
    later = now + 5 * 86_400
    token = e.checkpoint()
    for k, (loan_id, amount) in enumerate(((lent_ids[0], 1), (lent_ids[1], 30 * USD))):
        e.apply(ex.RepayLoan(a.loans[loan_id].borrower.address, loan_id, amount),
                ex.Context(CTX.block_number + 10 + k, later + k))
    assert a.loans[lent_ids[0]].interest_due > 0 and a.loans[lent_ids[0]].accrued > 0
    for t in (later + 1, later + 900):
        same(t, True)
    e.revert(token)
    same(later + 1, True)
    same(later + 901, True)
    # a WETH loan too: two lent assets, the general way
    e.apply(ex.Deposit(lender, 1, 10**18), ex.Context(CTX.block_number + 11, now + 30))
    e.apply(ex.PlaceOrder(lender, WETH_LEND, ex.Side.SELL, 10_000_000, 10**17),
            ex.Context(CTX.block_number + 11, now + 30))
    e.apply(ex.PlaceOrder(borrowers[0], WETH_LEND, ex.Side.BUY, 10_000_000, 10**17,
                          time_in_force=ex.TimeInForce.IOC), ex.Context(CTX.block_number + 11, now + 30))
    for t in (now + 30, now + 31, now + 5_000):
        same(t, False)

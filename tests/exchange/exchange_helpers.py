"""Shared helpers and fixtures: the default config (exchange/default_config.toml,
the one source of the default set), an engine, a few funded traders.

A uniquely named module (not a package: tests/exchange must not shadow the
`exchange` package), imported by conftest.py and the test modules."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

import exchange as ex

DEFAULT_CONFIG = Path(ex.__file__).with_name("default_config.toml")

ALICE = b"\xa1" * 20
BOB = b"\xb0" * 20
CAROL = b"\xc0" * 20

USDC, WETH, WBTC = 0, 1, 2
ETH_USDC, BTC_USDC, ETH_PERP = 0, 1, 2

ETH = 10**18
LOT = 10**15  # ETH-USDC lot: 0.001 WETH
USD = 10**6
CTX = ex.Context(block_number=10, timestamp=1_000)


def default_doc() -> dict:
    return tomllib.loads(DEFAULT_CONFIG.read_text())


def px(usd_per_eth: float | int) -> int:
    """ETH-USDC price units (USDC units per 0.001 WETH lot) for a human price.
    Only used with prices exact in cents, so no float reaches the engine."""
    cents = round(usd_per_eth * 100)
    return cents * 10  # 0.01 USDC/ETH = 10 units per lot


@pytest.fixture
def config() -> ex.ExchangeConfig:
    return ex.load(default_doc())


@pytest.fixture
def engine(config) -> ex.Engine:
    e = ex.Engine(config)
    for who in (ALICE, BOB, CAROL):
        e.apply(ex.Deposit(who, USDC, 100_000 * USD), CTX)
        e.apply(ex.Deposit(who, WETH, 100 * ETH), CTX)
    return e


def free(e: ex.Engine, who: bytes, asset: int) -> int:
    return e.balances(who)[asset][0]


def withdraw_all_allowed(e: ex.Engine, who: bytes, within: int = 1, asset: int = USDC, ctx=CTX) -> None:
    """``who`` withdraws the most of ``asset`` the margin check allows (to ``within`` units)."""
    lo, hi = 0, free(e, who, asset)
    while hi - lo > within:
        mid = (lo + hi) // 2
        token = e.checkpoint()
        try:
            e.apply(ex.Withdraw(who, asset, mid), ctx)
            lo = mid
        except ex.ExchangeError:
            hi = mid
        e.revert(token)
    e.apply(ex.Withdraw(who, asset, lo), ctx)


def held(e: ex.Engine, who: bytes, asset: int) -> int:
    return e.balances(who)[asset][1]


def fee_ceil(notional: int, rate: int) -> int:
    return -(-notional * rate // ex.FEE_SCALE)


def events_of(events, kind):
    return [ev for ev in events if isinstance(ev, kind)]


def assert_perp_zero_sum(e: ex.Engine, market: int) -> None:
    """Funding and PnL are zero-sum on a perp market: sizes sum to zero and the
    settlement pool holds exactly what the positions still owe, as a rational
    (each carry in (-D, 0])."""
    pm = e._perps.markets[market]
    pending = Fraction(0)
    entries = sizes = 0
    for a in e._accounts.values():
        p = a.positions.get(market)
        if p is None:
            continue
        assert -pm.divisor < p.carry <= 0
        pending += Fraction(p.size * (pm.funding_index - p.funding_index) + p.carry, pm.divisor)
        entries += p.entry_value
        sizes += p.size
    assert sizes == 0
    assert pm.pool == -entries - pending  # exact, as a rational

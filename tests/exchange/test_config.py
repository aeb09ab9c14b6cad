"""The config loader: the default set loads; malformed configs are errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import exchange as ex

from exchange_helpers import default_doc


def test_default_set_loads():
    cfg = ex.load(default_doc())
    assert [a.symbol for a in cfg.assets] == ["USDC", "WETH", "WBTC"]
    assert [(m.symbol, m.kind) for m in cfg.markets] == [
        ("ETH-USDC", ex.MarketKind.SPOT), ("BTC-USDC", ex.MarketKind.SPOT),
        ("ETH-PERP", ex.MarketKind.PERP), ("BTC-PERP", ex.MarketKind.PERP)]
    eth = cfg.market("ETH-USDC")
    assert (eth.base, eth.quote, eth.lot_size, eth.tick_size) == (1, 0, 10**15, 10)
    assert (eth.maker_fee, eth.taker_fee, eth.min_notional) == (100, 500, 10**6)
    assert len(cfg.fee_account) == 20 and len(cfg.admin) == 20
    # The table alone loads the same as the whole document.
    assert ex.load(default_doc()["exchange"]) == cfg


def test_devnet_toml_carries_the_package_default_exchange_table():
    import tomllib

    devnet = Path(__file__).resolve().parents[2] / "configs" / "devnet.toml"
    table = tomllib.loads(devnet.read_text())["exchange"]
    assert table == default_doc()["exchange"]
    assert ex.load(table) == ex.load(default_doc())


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.update(surprise=1), "unknown keys"),
    (lambda t: t.update(fee_scale=10_000), "fee_scale"),
    (lambda t: t.update(fee_account="0x1234"), "fee_account"),
    (lambda t: t["assets"].append(dict(t["assets"][0])), "duplicate asset"),
    (lambda t: t["markets"][0].update(base="DOGE"), "unknown asset"),
    (lambda t: t["markets"][0].update(quote="WETH"), "must differ"),
    (lambda t: t["markets"][0].update(lot_size=0), "positive"),
    (lambda t: t["markets"][0].update(taker_fee=-1), "fees"),
    (lambda t: t["markets"][0].update(kind="option"), "MarketKind"),
    (lambda t: t["markets"][0].update(tick_size=True), "integer"),
    (lambda t: t["markets"][1].update(id=0), "duplicate market id"),
])
def test_malformed_configs_are_rejected(mutate, message):
    doc = copy.deepcopy(default_doc())
    mutate(doc["exchange"])
    with pytest.raises(ex.ConfigError, match=message):
        ex.load(doc)

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
        ("ETH-PERP", ex.MarketKind.PERP), ("BTC-PERP", ex.MarketKind.PERP),
        ("USDC-LEND", ex.MarketKind.LENDING), ("WETH-LEND", ex.MarketKind.LENDING)]
    eth = cfg.market("ETH-USDC")
    assert (eth.base, eth.quote, eth.lot_size, eth.tick_size) == (1, 0, 10**15, 10)
    assert (eth.maker_fee, eth.taker_fee, eth.min_notional) == (100, 500, 10**6)
    assert len(cfg.fee_account) == 20 and len(cfg.admin) == 20
    # The table alone loads the same as the whole document.
    assert ex.load(default_doc()["exchange"]) == cfg


def test_part_two_settings_load():
    cfg = ex.load(default_doc())
    assert cfg.oracle == bytes.fromhex("a0Ee7A142d267C1f36714E4a8F75612F20a79720")  # dev account 9
    assert (cfg.liquidation_reward, cfg.funding_interval) == (10_000, 3600)
    assert cfg.correlations == (ex.CorrelationConfig(1, 2, 800_000),)
    usdc, weth = cfg.asset("USDC"), cfg.asset("WETH")
    assert (usdc.shock_open, usdc.shock_liq) == (0, 0)
    assert (weth.shock_open, weth.shock_liq, weth.credit_factor, weth.scenarios) == (150_000, 100_000, 980_000, 7)
    perp = cfg.market("ETH-PERP")
    assert (perp.mark, perp.impact_notional, perp.funding_interest, perp.premium_clamp, perp.funding_cap) == (
        ex.MarkMethod.ORACLE, 10_000 * 10**6, 12, 500, 5000)
    assert cfg.market("BTC-PERP").mark == ex.MarkMethod.MEDIAN
    lend = cfg.market("USDC-LEND")
    assert (lend.base, lend.quote, lend.lot_size, lend.loan_term) == (0, 0, 10**6, 864_000)


def test_risk_settings_have_defaults():
    doc = copy.deepcopy(default_doc())
    doc["exchange"]["assets"].append({"id": 3, "symbol": "LINK", "decimals": 18})
    link = ex.load(doc).asset("LINK")
    assert (link.shock_open, link.shock_liq, link.credit_factor, link.scenarios) == (150_000, 100_000, 980_000, 7)


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
    # part 2
    (lambda t: t.update(oracle="0xac1e"), "oracle"),
    (lambda t: t.update(liquidation_reward=10_001), "liquidation_reward"),
    (lambda t: t.update(funding_interval=0), "funding_interval"),
    (lambda t: t["assets"][1].update(shock_liq=200_000), "shocks"),
    (lambda t: t["assets"][1].update(credit_factor=1_000_001), "credit_factor"),
    (lambda t: t["assets"][1].update(scenarios=0), "scenarios"),
    (lambda t: t["correlations"].append({"a": "WBTC", "b": "WETH", "rho": 1}), "duplicate correlation"),
    (lambda t: t["correlations"][0].update(rho=1_000_001), "rho"),
    (lambda t: t["correlations"][0].update(b="WETH"), "two different assets"),
    (lambda t: t["markets"][0].update(funding_cap=1), "do not apply to a spot market"),
    (lambda t: t["markets"][2].update(loan_term=1), "do not apply to a perp market"),
    (lambda t: t["markets"][2].update(mark="vwap"), "MarkMethod"),
    (lambda t: t["markets"][2].pop("impact_notional"), "impact_notional"),
    (lambda t: t["markets"][2].update(funding_cap=-1), "funding_cap"),
    (lambda t: t["markets"][4].update(quote="WETH"), "lent asset"),
    (lambda t: t["markets"][4].update(loan_term=864_001), "loan_term"),
    (lambda t: t["markets"][3].update(quote="WETH"), "margin asset"),  # BTC-PERP quoted in WETH
])
def test_malformed_configs_are_rejected(mutate, message):
    doc = copy.deepcopy(default_doc())
    mutate(doc["exchange"])
    with pytest.raises(ex.ConfigError, match=message):
        ex.load(doc)

"""Assets, markets and engine limits, from configuration.

``load(mapping)`` takes the already-parsed TOML (either the whole document,
which has an ``exchange`` table, or that table itself) and returns a validated,
immutable :class:`ExchangeConfig`. It reads no files: the node parses
``configs/devnet.toml``; tests and the benchmark parse
``exchange/default_config.toml``, the one source of the default set.

Units (see docs/exchange.md):

* an asset amount is an int in the asset's smallest unit (``decimals``);
* ``lot_size`` is in base units; an order's quantity is a whole number of lots;
* a price is an int in quote units *per lot* and a multiple of ``tick_size``,
  so ``notional = price * quantity // lot_size`` is exact, no rounding;
* ``min_notional`` is in quote units; fees are parts per ``FEE_SCALE``.

Part 2 (see docs/exchange.md and the contract of the three part-2 modules):

* an oracle price is quote smallest units per ONE WHOLE token;
* risk factors (shocks, credit factor, correlation ``rho``), perp funding
  (``funding_interest``, ``premium_clamp``, ``funding_cap``) and the
  liquidation reward are parts per million (``PPM`` = ``FEE_SCALE``);
* ``impact_notional`` is in quote units; ``funding_interval`` and
  ``loan_term`` are seconds of block time;
* a lending market lends one asset (base == quote): its lot is in that asset's
  units and its price is an annual rate in ``RATE_SCALE`` parts.

Unknown keys are rejected, so a typo in a config is an error, not a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .types import FEE_SCALE, MarketKind, MarketStatus, MarkMethod

PPM = FEE_SCALE  # parts per million: risk factors, funding, rewards
MAX_LOAN_TERM = 864_000  # 10 days: the longest term a lending market may set


class ConfigError(ValueError):
    """The exchange configuration is malformed or inconsistent."""


@dataclass(slots=True, frozen=True)
class AssetConfig:
    id: int
    symbol: str
    decimals: int
    # Portfolio risk (exchange/risk.py), ppm: the price move the opening-level
    # and the (smaller) liquidation-level margin assume against the net
    # exposure, the share of a lender-side loan counted as collateral, and the
    # number of price points of the scenario grid per underlying.
    shock_open: int = 150_000
    shock_liq: int = 100_000
    credit_factor: int = 980_000
    scenarios: int = 7


@dataclass(slots=True, frozen=True)
class MarketConfig:
    id: int
    symbol: str
    kind: MarketKind
    base: int  # asset id
    quote: int  # asset id
    lot_size: int  # base units per lot
    tick_size: int  # quote units per lot per price step
    min_notional: int  # quote units
    maker_fee: int  # parts per FEE_SCALE
    taker_fee: int  # parts per FEE_SCALE
    status: MarketStatus
    # perp markets only (0 / ORACLE elsewhere)
    mark: MarkMethod = MarkMethod.ORACLE  # ORACLE, or MEDIAN of oracle, book mid, last trade
    impact_notional: int = 0  # quote units the impact bid / ask is walked to
    funding_interest: int = 0  # ppm per funding interval (may be negative)
    premium_clamp: int = 0  # ppm: bound of (interest - premium) added to the premium
    funding_cap: int = 0  # ppm per funding interval: bound of the funding rate
    # lending markets only (0 elsewhere)
    loan_term: int = 0  # seconds: the term of a loan made on this book (at most MAX_LOAN_TERM)


@dataclass(slots=True, frozen=True)
class CorrelationConfig:
    a: int  # asset id, a < b
    b: int
    rho: int  # ppm, -PPM..PPM


@dataclass(slots=True, frozen=True)
class ExchangeConfig:
    assets: tuple[AssetConfig, ...]  # sorted by id
    markets: tuple[MarketConfig, ...]  # sorted by id
    fee_account: bytes  # 20-byte address that collects fees
    admin: bytes  # 20-byte address allowed to change market status
    max_open_orders_per_account: int
    max_batch_actions: int
    fills_kept_per_account: int  # recent fills kept for the account view
    # part 2
    oracle: bytes = b"\x00" * 20  # 20-byte address allowed to send SetOraclePrice
    liquidation_reward: int = 10_000  # ppm of what remains, at most 10_000 (1 %)
    funding_interval: int = 3600  # seconds of block time per funding payment
    correlations: tuple[CorrelationConfig, ...] = ()  # sorted by (a, b)
    # 20-byte address of the insurance fund: it takes over the negative balance a
    # defaulted account leaves that no lender took (None: the oracle account)
    insurance_fund: bytes | None = None

    @property
    def insurance(self) -> bytes:
        return self.insurance_fund if self.insurance_fund is not None else self.oracle

    def asset(self, symbol: str) -> AssetConfig:
        for a in self.assets:
            if a.symbol == symbol:
                return a
        raise KeyError(symbol)

    def market(self, symbol: str) -> MarketConfig:
        for m in self.markets:
            if m.symbol == symbol:
                return m
        raise KeyError(symbol)


_TOP_KEYS = {
    "fee_scale", "fee_account", "admin", "max_open_orders_per_account",
    "max_batch_actions", "fills_kept_per_account", "assets", "markets",
    "oracle", "liquidation_reward", "funding_interval", "correlations", "insurance_fund",
}
_ASSET_KEYS = {"id", "symbol", "decimals", "shock_open", "shock_liq", "credit_factor", "scenarios"}
_PERP_KEYS = {"mark", "impact_notional", "funding_interest", "premium_clamp", "funding_cap"}
_LENDING_KEYS = {"loan_term"}
_MARKET_KEYS = {
    "id", "symbol", "kind", "base", "quote", "lot_size", "tick_size",
    "min_notional", "maker_fee", "taker_fee", "status",
} | _PERP_KEYS | _LENDING_KEYS
_CORRELATION_KEYS = {"a", "b", "rho"}


def load(mapping: Mapping[str, Any]) -> ExchangeConfig:
    """Validate a parsed TOML mapping into an :class:`ExchangeConfig`."""
    table = mapping.get("exchange", mapping)
    if not isinstance(table, Mapping):
        raise ConfigError("[exchange] must be a table")
    _no_unknown(table, _TOP_KEYS, "[exchange]")
    fee_scale = _int(table, "fee_scale", "[exchange]", default=FEE_SCALE)
    if fee_scale != FEE_SCALE:
        # The scale is a compile-time constant of the engine; the config states
        # it so a reader sees the unit, and a mismatch is a mistake.
        raise ConfigError(f"fee_scale must be {FEE_SCALE}")

    assets = []
    for i, raw in enumerate(_list(table, "assets")):
        where = f"assets[{i}]"
        _no_unknown(raw, _ASSET_KEYS, where)
        decimals = _int(raw, "decimals", where)
        if not 0 <= decimals <= 36:
            raise ConfigError(f"{where}.decimals out of range")
        asset = AssetConfig(
            _int(raw, "id", where), _str(raw, "symbol", where), decimals,
            shock_open=_int(raw, "shock_open", where, default=150_000),
            shock_liq=_int(raw, "shock_liq", where, default=100_000),
            credit_factor=_int(raw, "credit_factor", where, default=980_000),
            scenarios=_int(raw, "scenarios", where, default=7),
        )
        # The liquidation shock is the smaller one: liquidation must never come
        # before the opening check would have refused the position.
        if not 0 <= asset.shock_liq <= asset.shock_open < PPM:
            raise ConfigError(f"{where}: shocks must satisfy 0 <= shock_liq <= shock_open < {PPM}")
        if not 0 <= asset.credit_factor <= PPM:
            raise ConfigError(f"{where}.credit_factor must be within 0..{PPM}")
        if not 1 <= asset.scenarios <= 101:
            raise ConfigError(f"{where}.scenarios must be within 1..101")
        assets.append(asset)
    assets.sort(key=lambda a: a.id)
    _unique([a.id for a in assets], "asset id")
    _unique([a.symbol for a in assets], "asset symbol")
    by_symbol = {a.symbol: a.id for a in assets}

    markets = []
    for i, raw in enumerate(_list(table, "markets")):
        where = f"markets[{i}]"
        _no_unknown(raw, _MARKET_KEYS, where)
        kind = _enum(MarketKind, _str(raw, "kind", where), where)
        status = _enum(MarketStatus, raw.get("status", "active"), where)
        base, quote = (_asset_ref(raw, k, by_symbol, where) for k in ("base", "quote"))
        if kind is MarketKind.LENDING:
            # A lending book lends one asset: the lot is in it and the price is a rate.
            if base != quote:
                raise ConfigError(f"{where}: a lending market's base and quote are the lent asset")
        elif base == quote:
            raise ConfigError(f"{where}: base and quote must differ")
        own = _PERP_KEYS if kind is MarketKind.PERP else _LENDING_KEYS if kind is MarketKind.LENDING else set()
        foreign = sorted(((_PERP_KEYS | _LENDING_KEYS) - own) & set(raw))
        if foreign:
            raise ConfigError(f"{where}: keys {foreign} do not apply to a {kind.name.lower()} market")
        extra = {}
        if kind is MarketKind.PERP:
            extra = dict(
                mark=_enum(MarkMethod, raw.get("mark", "oracle"), where),
                impact_notional=_int(raw, "impact_notional", where),
                funding_interest=_int(raw, "funding_interest", where),
                premium_clamp=_int(raw, "premium_clamp", where),
                funding_cap=_int(raw, "funding_cap", where),
            )
            if extra["impact_notional"] <= 0:
                raise ConfigError(f"{where}.impact_notional must be positive")
            if not (-PPM <= extra["funding_interest"] <= PPM and 0 <= extra["premium_clamp"] <= PPM
                    and 0 <= extra["funding_cap"] <= PPM):
                raise ConfigError(f"{where}: funding_interest within -{PPM}..{PPM}, "
                                  f"premium_clamp and funding_cap within 0..{PPM}")
        elif kind is MarketKind.LENDING:
            extra = dict(loan_term=_int(raw, "loan_term", where, default=MAX_LOAN_TERM))
            if not 0 < extra["loan_term"] <= MAX_LOAN_TERM:
                raise ConfigError(f"{where}.loan_term must be within 1..{MAX_LOAN_TERM} seconds")
        m = MarketConfig(
            id=_int(raw, "id", where),
            symbol=_str(raw, "symbol", where),
            kind=kind,
            base=base,
            quote=quote,
            lot_size=_int(raw, "lot_size", where),
            tick_size=_int(raw, "tick_size", where),
            min_notional=_int(raw, "min_notional", where, default=0),
            maker_fee=_int(raw, "maker_fee", where, default=0),
            taker_fee=_int(raw, "taker_fee", where, default=0),
            status=status,
            **extra,
        )
        if m.lot_size <= 0 or m.tick_size <= 0 or m.min_notional < 0:
            raise ConfigError(f"{where}: lot_size and tick_size must be positive")
        # Rebates (negative fees) would let the fee account go negative; they
        # need a funded rebate pool first.
        if not (0 <= m.maker_fee <= FEE_SCALE and 0 <= m.taker_fee <= FEE_SCALE):
            raise ConfigError(f"{where}: fees must be within 0..{FEE_SCALE}")
        markets.append(m)
    markets.sort(key=lambda m: m.id)
    _unique([m.id for m in markets], "market id")
    _unique([m.symbol for m in markets], "market symbol")

    correlations = []
    raw_correlations = table.get("correlations", [])
    if not isinstance(raw_correlations, list):
        raise ConfigError("[exchange].correlations must be an array of tables")
    for i, raw in enumerate(raw_correlations):
        where = f"correlations[{i}]"
        _no_unknown(raw, _CORRELATION_KEYS, where)
        a, b = sorted(_asset_ref(raw, k, by_symbol, where) for k in ("a", "b"))
        rho = _int(raw, "rho", where)
        if a == b:
            raise ConfigError(f"{where}: a correlation needs two different assets")
        if not -PPM <= rho <= PPM:
            raise ConfigError(f"{where}.rho must be within -{PPM}..{PPM}")
        correlations.append(CorrelationConfig(a, b, rho))
    correlations.sort(key=lambda c: (c.a, c.b))
    _unique([(c.a, c.b) for c in correlations], "correlation pair")

    # Part 2 margins everything in one quote: the lowest quote asset of the spot and
    # perp markets (risk.RiskModel.from_config). A perp quoted in another asset would
    # be valued in the wrong units by the what-if (found by review): refused.
    quotes = sorted({m.quote for m in markets if m.base != m.quote})
    for m in markets:
        if m.kind is MarketKind.PERP and quotes and m.quote != quotes[0]:
            raise ConfigError(f"market {m.symbol}: a perp market must be quoted in the margin asset "
                              f"(asset {quotes[0]}, the lowest quote of the spot and perp markets)")
    cfg = ExchangeConfig(
        assets=tuple(assets),
        markets=tuple(markets),
        fee_account=_address(table, "fee_account"),
        admin=_address(table, "admin"),
        max_open_orders_per_account=_int(table, "max_open_orders_per_account", "[exchange]", default=1000),
        max_batch_actions=_int(table, "max_batch_actions", "[exchange]", default=32),
        fills_kept_per_account=_int(table, "fills_kept_per_account", "[exchange]", default=64),
        oracle=_address(table, "oracle"),
        liquidation_reward=_int(table, "liquidation_reward", "[exchange]", default=10_000),
        funding_interval=_int(table, "funding_interval", "[exchange]", default=3600),
        correlations=tuple(correlations),
        insurance_fund=_address(table, "insurance_fund") if "insurance_fund" in table else None,
    )
    if cfg.max_open_orders_per_account <= 0 or cfg.max_batch_actions <= 0 or cfg.fills_kept_per_account < 0:
        raise ConfigError("[exchange] limits must be positive")
    if not 0 <= cfg.liquidation_reward <= 10_000:
        raise ConfigError("[exchange].liquidation_reward must be within 0..10000 ppm (1 %)")
    if cfg.funding_interval <= 0:
        raise ConfigError("[exchange].funding_interval must be positive")
    return cfg


def _no_unknown(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")


def _list(table: Mapping[str, Any], key: str) -> list:
    value = table.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[exchange].{key} must be a non-empty array of tables")
    return value


def _int(raw: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    # bool is an int subclass; `true` for a size is a typo, not 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}.{key} must be an integer")
    return value


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{key} must be a non-empty string")
    return value


def _enum(enum: type, name: Any, where: str):
    try:
        return enum[str(name).upper()]
    except KeyError:
        raise ConfigError(f"{where}: unknown {enum.__name__} {name!r}") from None


def _asset_ref(raw: Mapping[str, Any], key: str, by_symbol: dict[str, int], where: str) -> int:
    value = raw.get(key)
    if isinstance(value, str) and value in by_symbol:
        return by_symbol[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in by_symbol.values():
        return value
    raise ConfigError(f"{where}.{key}: unknown asset {value!r}")


def _address(table: Mapping[str, Any], key: str) -> bytes:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(f"[exchange].{key} must be a 0x-prefixed 20-byte hex address")
    try:
        raw = bytes.fromhex(value[2:] if value.startswith(("0x", "0X")) else "!")
    except ValueError:
        raw = b""
    if len(raw) != 20:
        raise ConfigError(f"[exchange].{key} must be a 0x-prefixed 20-byte hex address")
    return raw


def _unique(values: list, what: str) -> None:
    if len(set(values)) != len(values):
        raise ConfigError(f"duplicate {what}")

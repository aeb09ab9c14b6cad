"""Node configuration: typed settings with defaults, loaded from TOML and CLI flags.

`configs/devnet.toml` documents every setting with its default; a test keeps that file
and the defaults below equal. Precedence: defaults < `--config FILE` < CLI flags.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEST_MNEMONIC = "test test test test test test test test test test test junk"
WEI_PER_ETH = 10**18


@dataclass(slots=True)
class ChainConfig:
    chain_id: int = 31337
    # MegaETH runs 10 billion gas per block: high enough never to bind at our rates.
    gas_limit: int = 10_000_000_000
    # The most one transaction may ask for (also eth_estimateGas's upper bound).
    tx_gas_limit: int = 1_000_000_000
    # EIP-1559 base fee of the genesis block, in wei (anvil: 1 gwei); EIP-1559 moves it after.
    initial_base_fee: int = 1_000_000_000
    coinbase: str = "0x0000000000000000000000000000000000000000"
    # Genesis timestamp; 0 means "the wall clock at the first start" (then stored).
    genesis_timestamp: int = 0
    # The exchange asset that deposit() takes as msg.value and withdraw() pays out
    # in ETH, 1:1 (18 decimals); "" = none.
    exchange_native_asset: str = "WETH"
    # Devnet faucet: deposit() of an asset with no token on this chain credits it.
    exchange_faucet: bool = True


@dataclass(slots=True)
class SequencerConfig:
    # A mini-block executes and preconfirms what arrived, at most this often.
    miniblock_interval_ms: int = 10
    # A block (header, state root, receipts root) seals the mini-blocks since the last.
    block_time_ms: int = 1000
    # anvil-style automine: every transaction is its own mini-block and block.
    instant: bool = False
    # Upper bound on transactions per mini-block, so one mini-block stays short.
    max_miniblock_txs: int = 4000
    # Execution time budget of one mini-block; the rest waits for the next one.
    miniblock_budget_ms: int = 5
    max_pending_per_sender: int = 1000
    max_pending_total: int = 200_000
    # A same-nonce replacement must raise both fee caps by at least this much (geth: 10).
    price_bump_percent: int = 10


@dataclass(slots=True)
class AccountsConfig:
    mnemonic: str = TEST_MNEMONIC
    count: int = 10
    balance_eth: int = 10_000


@dataclass(slots=True)
class RpcConfig:
    host: str = "127.0.0.1"
    port: int = 8545
    max_body_bytes: int = 5 * 1024 * 1024
    max_batch: int = 1000
    # Default wait of eth_sendRawTransactionSync when the caller gives no timeout.
    sync_timeout_ms: int = 2000
    # Largest timeout a caller may ask eth_sendRawTransactionSync for.
    sync_timeout_max_ms: int = 60_000
    # eth_getLogs answers at most this many blocks per call.
    max_logs_block_range: int = 100_000


@dataclass(slots=True)
class StorageConfig:
    data_dir: str = ".blixt"
    # Keep everything in memory; nothing survives a restart.
    ephemeral: bool = False
    # fsync every write batch (survives power loss; a process kill is survived without).
    fsync: bool = False
    # The exchange engine is stored as its commands per block plus a full snapshot
    # whenever this many commands were recorded since the last one. A snapshot costs
    # ~3 µs per resting order at the seal; a restart replays at most this many commands.
    exchange_snapshot_commands: int = 200_000


@dataclass(slots=True)
class Config:
    chain: ChainConfig = field(default_factory=ChainConfig)
    sequencer: SequencerConfig = field(default_factory=SequencerConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    # The exchange's own table (assets, markets): passed through to exchange.config.
    exchange: dict[str, Any] = field(default_factory=dict)


class ConfigError(ValueError):
    pass


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Defaults, then the TOML file at `path`, then `overrides` ({section: {key: value}})."""
    config = Config()
    if path is not None:
        with open(path, "rb") as f:
            _apply(config, tomllib.load(f), source=str(path))
    if overrides:
        _apply(config, overrides, source="command line")
    return config


def _apply(config: Config, data: dict[str, Any], source: str) -> None:
    for section, values in data.items():
        if section == "exchange":
            config.exchange = dict(values)
            continue
        target = getattr(config, section, None)
        if target is None or not dataclasses.is_dataclass(target):
            raise ConfigError(f"{source}: unknown section [{section}]")
        known = {f.name: f for f in dataclasses.fields(target)}
        for key, value in values.items():
            if value is None:
                continue
            if key not in known:
                raise ConfigError(f"{source}: unknown setting {section}.{key}")
            expected = type(getattr(target, key))
            if expected is bool and not isinstance(value, bool):
                raise ConfigError(f"{source}: {section}.{key} must be true or false")
            if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{source}: {section}.{key} must be an integer")
            if expected is str and not isinstance(value, str):
                raise ConfigError(f"{source}: {section}.{key} must be a string")
            setattr(target, key, value)

"""configs/devnet.toml documents every setting with its default: keep them equal."""
import dataclasses
import tomllib
from pathlib import Path

import pytest

from node.config import Config, ConfigError, load_config

DEVNET_TOML = Path(__file__).resolve().parents[2] / "configs" / "devnet.toml"


def test_devnet_toml_equals_the_code_defaults():
    data = tomllib.loads(DEVNET_TOML.read_text())
    defaults = Config()
    for section in ("chain", "sequencer", "accounts", "rpc", "storage"):
        expected = dataclasses.asdict(getattr(defaults, section))
        assert data[section] == expected, section


def test_loading_the_file_gives_the_defaults_and_flags_override():
    config = load_config(DEVNET_TOML, {"rpc": {"port": 9999, "host": None}})
    assert config.rpc.port == 9999 and config.rpc.host == "127.0.0.1"
    assert config.chain == Config().chain


def test_unknown_or_mistyped_settings_are_rejected(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[chain]\nchain_idd = 5\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(bad)
    bad.write_text("[chain]\nchain_id = \"5\"\n")
    with pytest.raises(ConfigError, match="integer"):
        load_config(bad)

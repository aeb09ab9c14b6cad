"""Fixtures for the stress tester's tests.

`rpc_url`: the JSON-RPC URL of a live node with the standard dev accounts funded: a
real `blixt devnet --instant` (anvil's automine) on a free loopback port. The live
tests speak plain JSON-RPC only, so they pass against anvil too.
"""

from __future__ import annotations

import pytest

from tests.conftest import Devnet


@pytest.fixture(scope="session")
def rpc_url():
    node = Devnet("--instant")
    try:
        yield node.url
    finally:
        node.stop()

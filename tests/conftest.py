"""Shared fixtures: a real `blixt devnet` subprocess on a free loopback port."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEV_KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc(url: str, method: str, params=None, timeout: float = 10):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Devnet:
    """A `blixt devnet` process. Stop it with `stop()` (SIGTERM) or `kill()` (SIGKILL)."""

    def __init__(self, *args: str, data_dir: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "node.cli", "devnet", "--port", str(self.port), "--log-level", "WARNING"]
        cmd += ["--data-dir", data_dir] if data_dir else ["--ephemeral"]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.banner = self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError("devnet exited:\n" + "".join(lines))
                continue
            lines.append(line)
            if line.startswith("RPC URL:"):
                return "".join(lines)
        raise RuntimeError("devnet did not start in time:\n" + "".join(lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def devnet_factory():
    started: list[Devnet] = []

    def start(*args: str, data_dir: str | None = None) -> Devnet:
        d = Devnet(*args, data_dir=data_dir)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture(scope="module")
def devnet():
    d = Devnet("--block-time", "0.2")
    yield d
    d.stop()


@pytest.fixture
def w3(devnet):
    from web3 import Web3

    return Web3(Web3.HTTPProvider(devnet.url, request_kwargs={"timeout": 30}))


def wait_until(predicate, timeout: float = 10, interval: float = 0.01):
    """Poll `predicate` until it returns a truthy value, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)

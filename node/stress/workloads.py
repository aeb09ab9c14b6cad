"""Workloads: what each load transaction does.

A workload is registered by name (`@register_workload`) and answers two things:
`setup` (deploy contracts, hand out tokens — runs once before signing, with a
`SetupContext` that can send and wait for transactions) and `transaction` (to, value,
calldata for the n-th transaction of a sender). Gas limits are fixed per workload
so every transaction is pre-signed without asking the node.

Built in: transfers, erc20, call; `orders` is a hook for Blixt's exchange
precompile that refuses: `precompiles/stress.py` registers the real `orders` (and
`orderbook-sol`, the same flow on a Solidity book) under the same name, which
replaces it (the CLI imports `PLUGIN_MODULES` first). A workload whose reverts are
outcomes sets `receipt_outcomes`: every included receipt is then counted by status.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Awaitable, Callable, ClassVar

from .keys import Account

if TYPE_CHECKING:
    from .rpc import RpcClient
    from .signing import FeeCap


class WorkloadUnavailable(Exception):
    """The workload cannot run against this node (missing feature or precompile)."""


@dataclass
class SetupContext:
    """What a workload's setup may use. `send_and_wait` signs and sends
    (sender, to, value, data, gas) transactions and returns their receipts, raising
    if one fails or does not land in time."""

    rpc: "RpcClient"
    fees: "FeeCap"
    dev_accounts: list[Account]
    senders: list[Account]
    transactions_per_sender: list[int]
    send_and_wait: Callable[[list[tuple[Account, bytes, int, bytes, int]]], Awaitable[list[dict]]]
    notes: dict = field(default_factory=dict)  # lands in the run summary


class Workload(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    gas_per_transaction: ClassVar[int]
    value_per_transaction: ClassVar[int] = 0
    # When set (e.g. "orders"), every included transaction's receipt is read after
    # the run and the summary counts them by status under this name: for workloads
    # where a revert is an outcome of the business (a rejected order), not a fault.
    receipt_outcomes: ClassVar[str | None] = None

    async def setup(self, context: SetupContext) -> None:
        """Prepare the chain (deploy, distribute). Default: nothing to do."""

    @abstractmethod
    def transaction(self, sender: int, sequence: int, senders: list[Account]) -> tuple[bytes, int, bytes]:
        """(to, value, calldata) for `sender`'s `sequence`-th load transaction."""


WORKLOADS: dict[str, type[Workload]] = {}


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Add (or replace) a workload under `cls.name`; later registration wins so a
    feature package can swap the `orders` hook for the real thing."""
    WORKLOADS[cls.name] = cls
    return cls


# Modules that may register workloads (e.g. the real `orders`), imported on first use
# of the registry by the CLI. A missing module is fine; a broken one is an error.
PLUGIN_MODULES = ("precompiles.stress",)


def load_plugins() -> None:
    import importlib

    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def load_contract(name: str) -> dict:
    """ABI and bytecode of a contract compiled into contracts/contracts.json."""
    text = resources.files(__package__).joinpath("contracts/contracts.json").read_text()
    return json.loads(text)["contracts"][name]


def abi_word(value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value.rjust(32, b"\x00")
    return value.to_bytes(32, "big")


def _ring_neighbour(sender: int, senders: list[Account]) -> bytes:
    # Send to the next sender: recipients are existing, warm accounts, as in a busy
    # market, and the state does not grow with every transaction.
    return senders[(sender + 1) % len(senders)].address


@register_workload
class Transfers(Workload):
    name = "transfers"
    description = "plain ETH transfers of 1 wei to another load sender (21,000 gas)"
    gas_per_transaction = 21_000
    value_per_transaction = 1

    def transaction(self, sender, sequence, senders):
        return _ring_neighbour(sender, senders), 1, b""


@register_workload
class Erc20Transfers(Workload):
    name = "erc20"
    description = "ERC-20 transfer(to, 1) on a freshly deployed MinimalERC20"
    gas_per_transaction = 80_000
    _SUPPLY = 10**30

    def __init__(self) -> None:
        self.token = b""
        contract = load_contract("MinimalERC20")
        self._transfer = bytes.fromhex(contract["methodIdentifiers"]["transfer(address,uint256)"])

    async def setup(self, context):
        contract = load_contract("MinimalERC20")
        deployer = context.dev_accounts[0]
        code = bytes.fromhex(contract["bytecode"][2:]) + abi_word(self._SUPPLY)
        (receipt,) = await context.send_and_wait([(deployer, b"", 0, code, 1_500_000)])
        self.token = bytes.fromhex(receipt["contractAddress"][2:])
        context.notes["erc20_token"] = receipt["contractAddress"]
        # Each sender gets exactly what its transfers move, so a balance check after
        # the run can tell whether every transfer executed.
        handouts = [
            (deployer, self.token, 0, self._transfer + abi_word(sender.address) + abi_word(count), 100_000)
            for sender, count in zip(context.senders, context.transactions_per_sender)
            if count
        ]
        await context.send_and_wait(handouts)

    def transaction(self, sender, sequence, senders):
        return self.token, 0, self._transfer + abi_word(_ring_neighbour(sender, senders)) + abi_word(1)


@register_workload
class StorageCalls(Workload):
    name = "call"
    description = "StorageWriter.bump(1): a contract call that writes two storage slots"
    gas_per_transaction = 80_000

    def __init__(self) -> None:
        self.target = b""
        self._bump = bytes.fromhex(load_contract("StorageWriter")["methodIdentifiers"]["bump(uint256)"])

    async def setup(self, context):
        contract = load_contract("StorageWriter")
        code = bytes.fromhex(contract["bytecode"][2:])
        (receipt,) = await context.send_and_wait([(context.dev_accounts[0], b"", 0, code, 500_000)])
        self.target = bytes.fromhex(receipt["contractAddress"][2:])
        context.notes["call_target"] = receipt["contractAddress"]

    def transaction(self, sender, sequence, senders):
        return self.target, 0, self._bump + abi_word(1)


@register_workload
class ExchangeOrders(Workload):
    """Hook for the exchange precompile: precompiles/ registers the real workload
    (same name) once orders can be placed through a signed transaction."""

    name = "orders"
    description = "exchange orders through Blixt's order-book precompile (not available yet)"
    gas_per_transaction = 200_000

    async def setup(self, context):
        raise WorkloadUnavailable(
            "the `orders` workload needs Blixt's exchange precompile, which is not available on this node"
        )

    def transaction(self, sender, sequence, senders):  # pragma: no cover - setup refuses first
        raise WorkloadUnavailable("orders workload not available")

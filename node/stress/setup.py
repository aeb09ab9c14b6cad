"""Setup phase: learn the chain, prepare the workload, fund the senders, plan nonces.

Everything here is slow-path and awaits receipts; nothing here is measured. Its
result, `Preparation`, holds what signing needs: fee caps, sender keys and one
`TxPlan` per load transaction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import coincurve

from .keys import Account, derived_senders, dev_accounts
from .rpc import RpcClient, RpcError
from .signing import FeeCap, TxPlan, sign_eip1559
from .workloads import SetupContext, Workload

GWEI = 10**9
# Ask for at most this many items per JSON-RPC batch during setup: nodes cap batch size
# (geth: 1,000) and big batches block a single-threaded node for long.
_SETUP_BATCH = 200


class SetupError(Exception):
    """The chain could not be prepared for the run (unfunded dev account, failed
    deploy, transactions that never landed)."""


@dataclass
class Preparation:
    chain_id: int
    client_version: str
    fees: FeeCap
    senders: list[Account]
    plans: list[TxPlan]
    start_block: int
    base_fee: int
    block_gas_limit: int
    notes: dict = field(default_factory=dict)
    setup_seconds: float = 0.0


async def prepare(
    rpc: RpcClient,
    workload: Workload,
    count: int,
    accounts: int,
    seed: str,
    mnemonic: str,
    tip_gwei: float,
    max_fee_gwei: float | None,
    timeout: float,
) -> Preparation:
    started = time.perf_counter()
    chain_id = int(await rpc.call("eth_chainId"), 16)
    try:
        client_version = str(await rpc.call("web3_clientVersion"))
    except RpcError:
        client_version = "unknown"
    latest = await rpc.call("eth_getBlockByNumber", ["latest", False])
    base_fee = int(latest.get("baseFeePerGas") or "0x0", 16)
    tip = int(tip_gwei * GWEI)
    # A generous cap by default: with 1 s blocks and a 30M gas limit a node under load
    # raises the base fee 12.5 % per full block, and a cap below it strands the tail.
    max_fee = int(max_fee_gwei * GWEI) if max_fee_gwei is not None else max(100 * GWEI, 4 * base_fee + tip)
    fees = FeeCap(chain_id, tip, max_fee)

    senders = derived_senders(max(1, min(accounts, count)), seed)
    per_sender = [count // len(senders) + (1 if i < count % len(senders) else 0) for i in range(len(senders))]
    funders = dev_accounts(10, mnemonic)
    sender_tool = _SetupSender(rpc, fees, timeout)

    context = SetupContext(
        rpc=rpc,
        fees=fees,
        dev_accounts=funders,
        senders=senders,
        transactions_per_sender=per_sender,
        send_and_wait=sender_tool.send_and_wait,
    )
    await workload.setup(context)
    await _fund(rpc, sender_tool, workload, funders, senders, per_sender, fees)

    nonces = await _batched(rpc, [("eth_getTransactionCount", [s.address_hex, "pending"]) for s in senders])
    next_nonce = [int(n, 16) for n in nonces]
    plans: list[TxPlan] = []
    gas = workload.gas_per_transaction
    # Round-robin over senders: consecutive transactions come from different
    # accounts, so reordering across connections rarely leaves a nonce gap.
    for j in range(count):
        sender = j % len(senders)
        to, value, data = workload.transaction(sender, j // len(senders), senders)
        plans.append((sender, next_nonce[sender], gas, to, value, data))
        next_nonce[sender] += 1
    start_block = int(await rpc.call("eth_blockNumber"), 16)
    return Preparation(
        chain_id=chain_id,
        client_version=client_version,
        fees=fees,
        senders=senders,
        plans=plans,
        start_block=start_block,
        base_fee=base_fee,
        block_gas_limit=int(latest.get("gasLimit") or "0x0", 16),
        notes=context.notes,
        setup_seconds=time.perf_counter() - started,
    )


async def _fund(rpc, sender_tool, workload, funders, senders, per_sender, fees) -> None:
    balances = await _batched(rpc, [("eth_getBalance", [s.address_hex, "latest"]) for s in senders])
    cost = workload.gas_per_transaction * fees.max_fee_per_gas + workload.value_per_transaction
    transfers = []
    for i, (sender, count, balance) in enumerate(zip(senders, per_sender, balances)):
        need = count * cost
        if int(balance, 16) < need:
            # Top up with 10 % headroom so a rerun with the same seed rarely refunds.
            transfers.append((funders[i % len(funders)], sender.address, need + need // 10, b"", 21_000))
    if transfers:
        await sender_tool.send_and_wait(transfers)


async def _batched(rpc: RpcClient, calls: list[tuple[str, list]]) -> list:
    results = []
    for start in range(0, len(calls), _SETUP_BATCH):
        chunk = await rpc.batch(calls[start : start + _SETUP_BATCH])
        for result in chunk:
            if isinstance(result, RpcError):
                raise SetupError(str(result))
        results.extend(chunk)
    return results


class _SetupSender:
    """Signs setup transactions with the next nonce of their sender, sends them in
    batches and waits (bounded) for successful receipts."""

    def __init__(self, rpc: RpcClient, fees: FeeCap, timeout: float):
        self.rpc = rpc
        self.fees = fees
        self.timeout = timeout
        self._nonces: dict[bytes, int] = {}

    async def send_and_wait(self, transactions: list[tuple[Account, bytes, int, bytes, int]]) -> list[dict]:
        unknown = sorted({account.address for account, *_ in transactions} - self._nonces.keys())
        counts = await _batched(self.rpc, [("eth_getTransactionCount", ["0x" + a.hex(), "pending"]) for a in unknown])
        self._nonces.update({address: int(n, 16) for address, n in zip(unknown, counts)})
        raws, hashes = [], []
        for account, to, value, data, gas in transactions:
            nonce = self._nonces[account.address]
            self._nonces[account.address] = nonce + 1
            raw, tx_hash = sign_eip1559(coincurve.PrivateKey(account.private_key), self.fees, nonce, gas, to, value, data)
            raws.append(raw)
            hashes.append("0x" + tx_hash.hex())
        calls = [("eth_sendRawTransaction", ["0x" + raw.hex()]) for raw in raws]
        for start in range(0, len(calls), _SETUP_BATCH):
            chunk = calls[start : start + _SETUP_BATCH]
            results = await self.rpc.batch(chunk)
            if any(isinstance(r, RpcError) and _out_of_order(r.message) for r in results):
                # hardhat node answers a batch's calls concurrently and, automining,
                # refuses a nonce ahead of the account's: send the refused ones
                # again one at a time, in order (a resend of an accepted one is skipped).
                results = [await self._send_one(call) if isinstance(r, RpcError) and _out_of_order(r.message)
                           else r for call, r in zip(chunk, results)]
            for result in results:
                if isinstance(result, RpcError):
                    raise SetupError(f"setup transaction rejected: {result.message}")
        return await self._receipts(hashes)

    async def _send_one(self, call):
        (result,) = await self.rpc.batch([call])
        return result

    async def _receipts(self, hashes: list[str]) -> list[dict]:
        receipts: dict[str, dict] = {}
        deadline = time.perf_counter() + self.timeout
        pause = 0.02
        while len(receipts) < len(hashes):
            missing = [h for h in hashes if h not in receipts]
            found = await _batched(self.rpc, [("eth_getTransactionReceipt", [h]) for h in missing])
            for tx_hash, receipt in zip(missing, found):
                if receipt is not None:
                    if int(receipt.get("status", "0x1"), 16) != 1:
                        raise SetupError(f"setup transaction {tx_hash} reverted")
                    receipts[tx_hash] = receipt
            if len(receipts) == len(hashes):
                break
            if time.perf_counter() > deadline:
                raise SetupError(
                    f"{len(hashes) - len(receipts)} setup transactions not mined within {self.timeout:.0f} s"
                    " (is the node mining? anvil --no-mining needs evm_mine)"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
        return [receipts[h] for h in hashes]


def _out_of_order(message: str) -> bool:
    """A refusal that only means "this nonce arrived before an earlier one"."""
    text = message.lower()
    return "nonce too high" in text or "can't be queued" in text

"""Setup against a node that answers a batch's calls concurrently and refuses a
nonce that arrives early (hardhat node when automining): the refused ones are sent
again one at a time, in order, and the run goes on."""
from __future__ import annotations

import asyncio

from node.stress.rpc import RpcError
from node.stress.keys import dev_accounts
from node.stress.setup import _SetupSender
from node.stress.signing import FeeCap


class AutominingNode:
    """Accepts a raw transaction only if its nonce is the sender's next one; in a
    batch, later items are seen before earlier ones (as hardhat's concurrency does)."""

    def __init__(self) -> None:
        self.next_nonce: dict[str, int] = {}
        self.mined: list[str] = []

    async def batch(self, calls):
        out = [None] * len(calls)
        for index in reversed(range(len(calls))):  # worst case: last first
            out[index] = self._call(*calls[index])
        return out

    def _call(self, method, params):
        if method == "eth_getTransactionCount":
            return hex(0)
        if method == "eth_sendRawTransaction":
            raw = bytes.fromhex(params[0][2:])
            from node.chain.transactions import decode_raw_transaction

            tx = decode_raw_transaction(raw, 31337)
            expected = self.next_nonce.get(tx.sender, 0)
            if tx.nonce != expected:
                return RpcError({"code": -32000, "message": f"Nonce too high. Expected nonce to be {expected} "
                                                            f"but got {tx.nonce}. Note that transactions can't "
                                                            "be queued when automining."})
            self.next_nonce[tx.sender] = expected + 1
            self.mined.append("0x" + tx.hash.hex())
            return "0x" + tx.hash.hex()
        if method == "eth_getTransactionReceipt":
            return {"status": "0x1"} if params[0] in self.mined else None
        raise AssertionError(method)


def test_refused_early_nonces_are_resent_in_order():
    (funder,) = dev_accounts(1)
    node = AutominingNode()
    sender = _SetupSender(node, FeeCap(31337, 10**9, 2 * 10**9), timeout=5)
    transfers = [(funder, bytes([i + 1]) * 20, 1, b"", 21_000) for i in range(5)]
    receipts = asyncio.run(sender.send_and_wait(transfers))
    assert len(receipts) == 5 and len(node.mined) == 5
    assert node.next_nonce[funder.address] == 5

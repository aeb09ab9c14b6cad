"""The eth_*, net_*, web3_*, realtime_* and dev (evm_*, anvil_*, hardhat_*) methods.

Each handler takes (params, session) and returns JSON; errors are RpcError with the
codes geth and anvil use: -32602 bad params, -32000 rejected transaction or missing
block, 3 execution reverted (with the revert data), 4/5 for eth_sendRawTransactionSync
(EIP-7966: timeout with the hash; cannot run yet).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from node.chain.blocks import PENDING_BLOCK_HASH, Header, Log, bloom_contains, logs_bloom
from node.chain.execution import TxInvalid
from node.chain.transactions import (
    SignedTx, TxDecodeError, decode_raw_transaction, keccak,
)
from node.rpc.format import d, header_json, log_json, q, receipt_json, tx_json
from node.rpc.server import RpcError
from node.rpc.eth_call import CallError, run_call
from sequencer.mempool import PoolError

CLIENT_VERSION = "blixt/0.1.0/python"
CALL_GAS_CAP = 50_000_000  # geth's RPCGasCap: eth_call/estimateGas never interpret more
FILTER_TTL_SECONDS = 300
MAX_FILTER_BACKLOG = 10_000


def invalid_params(message: str) -> RpcError:
    return RpcError(-32602, f"invalid params: {message}" if not message.startswith("invalid") else message)


def parse_quantity(value: Any, name: str = "quantity") -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise invalid_params(f"{name} must not be negative")
        return value
    if not isinstance(value, str) or not value.startswith(("0x", "0X")) or len(value) < 3:
        raise invalid_params(f"{name}: hex string with 0x prefix expected, got {value!r}")
    try:
        return int(value[2:], 16)
    except ValueError:
        raise invalid_params(f"{name}: invalid hex quantity {value!r}") from None


def parse_data(value: Any, name: str = "data") -> bytes:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise invalid_params(f"{name}: hex string with 0x prefix expected")
    body = value[2:]
    if len(body) % 2:
        raise invalid_params(f"{name}: hex string has odd length")
    try:
        return bytes.fromhex(body)
    except ValueError:
        raise invalid_params(f"{name}: invalid hex string") from None


def parse_address(value: Any, name: str = "address") -> bytes:
    b = parse_data(value, name)
    if len(b) != 20:
        raise invalid_params(f"{name}: address must be 20 bytes")
    return b


def parse_hash(value: Any, name: str = "hash") -> bytes:
    b = parse_data(value, name)
    if len(b) != 32:
        raise invalid_params(f"{name}: hash must be 32 bytes")
    return b


def _arg(params, index: int, default: Any = ...) -> Any:
    if not isinstance(params, list):
        raise invalid_params("params must be an array")
    if index < len(params):
        return params[index]
    if default is ...:
        raise invalid_params(f"missing value for required argument {index}")
    return default


class Filter:
    __slots__ = ("kind", "criteria", "pending_logs", "items", "last_poll")

    def __init__(self, kind: str, criteria=None, pending_logs: bool = False) -> None:
        self.kind = kind
        self.criteria = criteria
        self.pending_logs = pending_logs
        self.items: list = []
        self.last_poll = time.monotonic()

    def push(self, item) -> None:
        if len(self.items) < MAX_FILTER_BACKLOG:
            self.items.append(item)


class LogCriteria:
    __slots__ = ("from_block", "to_block", "addresses", "topics", "block_hash")

    def matches(self, log: Log) -> bool:
        if self.addresses and log.address not in self.addresses:
            return False
        topics = self.topics
        if len(topics) > len(log.topics):
            return False
        for wanted, have in zip(topics, log.topics):
            if wanted is not None and have not in wanted:
                return False
        return True

    def bloom_may_match(self, bloom: int) -> bool:
        if self.addresses and not any(bloom_contains(bloom, a) for a in self.addresses):
            return False
        for wanted in self.topics:
            if wanted is not None and not any(bloom_contains(bloom, t) for t in wanted):
                return False
        return True


class EthApi:
    def __init__(self, node) -> None:
        self.node = node
        self.chain = node.chain
        self.producer = node.producer
        self.pool = node.pool
        self.config = node.config
        self.filters: dict[str, Filter] = {}
        self._ids = itertools.count(1)
        self.subscriptions: dict[str, tuple[str, Any, Any]] = {}  # id -> (kind, session, criteria)
        self.snapshots: dict[int, Any] = {}
        self.impersonated: set[bytes] = set()
        self.auto_impersonate = False
        self.producer.on_block.append(self._on_block)
        self.producer.on_miniblock.append(self._on_miniblock)
        self.producer.on_pending_tx.append(self._on_pending_tx)

    # -- the method table --------------------------------------------------------------

    def methods(self) -> dict:
        m = {
            "web3_clientVersion": lambda p, s: CLIENT_VERSION,
            "web3_sha3": lambda p, s: d(keccak(parse_data(_arg(p, 0)))),
            "net_version": lambda p, s: str(self.chain.chain_id),
            "net_listening": lambda p, s: True,
            "net_peerCount": lambda p, s: "0x0",
            "eth_chainId": lambda p, s: q(self.chain.chain_id),
            "eth_syncing": lambda p, s: False,
            "eth_mining": lambda p, s: True,
            "eth_hashrate": lambda p, s: "0x0",
            "eth_coinbase": lambda p, s: self.config.chain.coinbase,
            "eth_accounts": lambda p, s: ["0x" + a.hex() for a, _ in self.node.accounts],
            "eth_blockNumber": lambda p, s: q(self.chain.head.number),
            "eth_gasPrice": self.eth_gasPrice,
            "eth_maxPriorityFeePerGas": lambda p, s: "0x0",
            "eth_blobBaseFee": lambda p, s: "0x1",
            "eth_feeHistory": self.eth_feeHistory,
            "eth_getBalance": self.eth_getBalance,
            "eth_getTransactionCount": self.eth_getTransactionCount,
            "eth_getCode": self.eth_getCode,
            "eth_getStorageAt": self.eth_getStorageAt,
            "eth_call": self.eth_call,
            "eth_estimateGas": self.eth_estimateGas,
            "eth_sendRawTransaction": self.eth_sendRawTransaction,
            "eth_sendRawTransactionSync": self.eth_sendRawTransactionSync,
            "realtime_sendRawTransaction": self.eth_sendRawTransactionSync,
            "eth_sendTransaction": self.eth_sendTransaction,
            "eth_getTransactionByHash": self.eth_getTransactionByHash,
            "eth_getTransactionReceipt": self.eth_getTransactionReceipt,
            "eth_getBlockByNumber": self.eth_getBlockByNumber,
            "eth_getBlockByHash": self.eth_getBlockByHash,
            "eth_getBlockReceipts": self.eth_getBlockReceipts,
            "eth_getBlockTransactionCountByNumber": self.eth_getBlockTransactionCountByNumber,
            "eth_getBlockTransactionCountByHash": self.eth_getBlockTransactionCountByHash,
            "eth_getTransactionByBlockNumberAndIndex": self.eth_getTransactionByBlockNumberAndIndex,
            "eth_getTransactionByBlockHashAndIndex": self.eth_getTransactionByBlockHashAndIndex,
            "eth_getUncleCountByBlockNumber": lambda p, s: "0x0",
            "eth_getUncleCountByBlockHash": lambda p, s: "0x0",
            "eth_getLogs": self.eth_getLogs,
            "eth_newFilter": self.eth_newFilter,
            "eth_newBlockFilter": self.eth_newBlockFilter,
            "eth_newPendingTransactionFilter": self.eth_newPendingTransactionFilter,
            "eth_getFilterChanges": self.eth_getFilterChanges,
            "eth_getFilterLogs": self.eth_getFilterLogs,
            "eth_uninstallFilter": self.eth_uninstallFilter,
            "eth_subscribe": self.eth_subscribe,
            "eth_unsubscribe": self.eth_unsubscribe,
            "txpool_status": lambda p, s: {"pending": q(len(self.pool)), "queued": "0x0"},
            "evm_snapshot": self.evm_snapshot,
            "evm_revert": self.evm_revert,
            "evm_mine": self.evm_mine,
            "evm_increaseTime": self.evm_increaseTime,
            "evm_setNextBlockTimestamp": self.evm_setNextBlockTimestamp,
            "anvil_setBalance": self.anvil_setBalance,
            "anvil_setCode": self.anvil_setCode,
            "anvil_setNonce": self.anvil_setNonce,
            "anvil_setStorageAt": self.anvil_setStorageAt,
            "anvil_impersonateAccount": self.anvil_impersonateAccount,
            "anvil_stopImpersonatingAccount": self.anvil_stopImpersonatingAccount,
            "anvil_autoImpersonateAccount": self.anvil_autoImpersonateAccount,
            "anvil_mine": self.anvil_mine,
        }
        for name in list(m):
            if name.startswith("anvil_") and name != "anvil_autoImpersonateAccount":
                m["hardhat_" + name[6:]] = m[name]
        return m

    # -- blocks and state selection ------------------------------------------------------

    def _block_number(self, tag: Any) -> int | None:
        """A sealed block number for `tag`, or None for the live mini-block state."""
        head = self.chain.head.number
        if isinstance(tag, dict):
            if "blockHash" in tag:
                number = self.chain.number_of_hash(parse_hash(tag["blockHash"], "blockHash"))
                if number is None:
                    raise RpcError(-32000, "header for hash not found")
                return number
            if "blockNumber" in tag:
                return self._block_number(tag["blockNumber"])
            raise invalid_params("block object needs blockHash or blockNumber")
        if tag is None or tag in ("latest", "pending"):
            return None
        if tag in ("safe", "finalized"):
            return head
        if tag == "earliest":
            return 0
        if isinstance(tag, str) and not tag.startswith("0x"):
            raise invalid_params(f"unknown block tag {tag!r}")
        number = parse_quantity(tag, "block number")
        if number > head:
            raise RpcError(-32000, "header not found")
        return number

    def _account(self, address: bytes, number: int | None):
        """(nonce, balance, code) at a sealed block, or live when number is None."""
        state = self.chain.state
        if number is None:
            return state.get_nonce(address), state.get_balance(address), state.get_code(address)
        acct = self.chain.store.account_at(address, number)
        if acct is None:
            return 0, 0, b""
        nonce, balance, code_hash = acct
        code = self.chain.store.code(code_hash) or b"" if code_hash != keccak(b"") else b""
        return nonce, balance, code

    def eth_getBalance(self, p, s):
        address = parse_address(_arg(p, 0))
        return q(self._account(address, self._block_number(_arg(p, 1, "latest")))[1])

    def eth_getTransactionCount(self, p, s):
        address = parse_address(_arg(p, 0))
        tag = _arg(p, 1, "latest")
        if tag == "pending":
            return q(self.pool.pending_nonce(address))
        return q(self._account(address, self._block_number(tag))[0])

    def eth_getCode(self, p, s):
        address = parse_address(_arg(p, 0))
        return d(self._account(address, self._block_number(_arg(p, 1, "latest")))[2])

    def eth_getStorageAt(self, p, s):
        address = parse_address(_arg(p, 0))
        slot_arg = _arg(p, 1)
        slot = parse_quantity(slot_arg, "slot") if isinstance(slot_arg, str) and len(slot_arg) <= 66 else None
        if slot is None:
            raise invalid_params("slot: hex quantity of at most 32 bytes expected")
        number = self._block_number(_arg(p, 2, "latest"))
        if number is None:
            value = self.chain.state.get_storage(address, slot)
        else:
            value = self.chain.store.storage_at(address, slot, number)
        return d(value.to_bytes(32, "big"))

    # -- fees -----------------------------------------------------------------------------

    def _pending_base_fee(self) -> int:
        from node.chain.blocks import next_base_fee

        if self.chain.open is not None:
            return self.chain.open.env.base_fee
        h = self.chain.head
        return next_base_fee(h.base_fee, h.gas_used, h.gas_limit)

    def eth_gasPrice(self, p, s):
        return q(self._pending_base_fee())

    def eth_feeHistory(self, p, s):
        count = parse_quantity(_arg(p, 0), "blockCount") if not isinstance(_arg(p, 0), int) else _arg(p, 0)
        count = max(0, min(count, 1024))
        newest = self._block_number(_arg(p, 1, "latest"))
        newest = self.chain.head.number if newest is None else newest
        percentiles = _arg(p, 2, None) or []
        if not isinstance(percentiles, list) or any(not isinstance(x, (int, float)) or not 0 <= x <= 100 for x in percentiles) \
                or percentiles != sorted(percentiles):
            raise invalid_params("rewardPercentiles must be increasing values in [0, 100]")
        oldest = max(0, newest - count + 1)
        base_fees, ratios, rewards = [], [], []
        for number in range(oldest, newest + 1):
            h = self.chain.header(number)
            base_fees.append(q(h.base_fee))
            ratios.append(h.gas_used / h.gas_limit if h.gas_limit else 0.0)
            if percentiles:
                rewards.append(self._rewards(number, h, percentiles))
        from node.chain.blocks import next_base_fee

        last = self.chain.header(newest)
        base_fees.append(q(next_base_fee(last.base_fee, last.gas_used, last.gas_limit)))
        out = {"oldestBlock": q(oldest), "baseFeePerGas": base_fees, "gasUsedRatio": ratios,
               "baseFeePerBlobGas": ["0x1"] * len(base_fees), "blobGasUsedRatio": [0.0] * len(ratios)}
        if percentiles:
            out["reward"] = rewards
        return out

    def _rewards(self, number: int, h: Header, percentiles: list) -> list:
        receipts = self.chain.block_receipts(number)
        if not receipts:
            return ["0x0"] * len(percentiles)
        tips = sorted((r.effective_gas_price - h.base_fee, r.gas_used) for r in receipts)
        total = sum(g for _, g in tips)
        out = []
        for pct in percentiles:
            threshold = total * pct / 100
            acc = 0
            chosen = tips[-1][0]
            for tip, gas in tips:
                acc += gas
                if acc >= threshold:
                    chosen = tip
                    break
            out.append(q(max(chosen, 0)))
        return out

    # -- sending ----------------------------------------------------------------------------

    def _decode(self, raw_hex: Any) -> SignedTx:
        raw = parse_data(raw_hex, "transaction")
        if len(raw) > 128 * 1024:
            raise RpcError(-32000, "oversized data: transaction size exceeds 131072 bytes")
        try:
            return decode_raw_transaction(raw, self.chain.chain_id)
        except TxDecodeError as exc:
            text = str(exc)
            if "chain id" in text or "signature" in text:
                raise RpcError(-32000, text) from None
            raise RpcError(-32602, f"failed to decode transaction: {text}") from None

    def _admit(self, tx: SignedTx) -> None:
        self._precheck(tx)
        try:
            self.producer.submit(tx)
        except PoolError as exc:
            raise RpcError(-32000, exc.message) from None

    def _precheck(self, tx: SignedTx) -> None:
        """What can be refused at the door, with geth's messages (state unchanged)."""
        config = self.config.chain
        if tx.gas > config.gas_limit:
            raise RpcError(-32000, "exceeds block gas limit")
        if tx.gas > config.tx_gas_limit:
            raise RpcError(-32000, f"transaction gas limit {tx.gas} exceeds the maximum {config.tx_gas_limit}")
        if tx.gas < tx.intrinsic_gas:
            raise RpcError(-32000, f"intrinsic gas too low: have {tx.gas}, want {tx.intrinsic_gas}")
        state = self.chain.state
        cost = tx.gas * tx.fee_cap() + tx.value
        balance = state.get_balance(tx.sender)
        if balance < cost:
            raise RpcError(-32000, f"insufficient funds for gas * price + value: balance {balance}, "
                                   f"tx cost {cost}, overshot {cost - balance}")
        if tx.fee_cap() < self._pending_base_fee() and tx.nonce == state.get_nonce(tx.sender):
            raise RpcError(-32000, f"max fee per gas less than block base fee: address 0x{tx.sender.hex()}, "
                                   f"maxFeePerGas: {tx.fee_cap()}, baseFee: {self._pending_base_fee()}")

    def eth_sendRawTransaction(self, p, s):
        tx = self._decode(_arg(p, 0))
        tx.arrival_ns = time.perf_counter_ns()
        self._admit(tx)
        return d(tx.hash)

    async def eth_sendRawTransactionSync(self, p, s):
        tx = self._decode(_arg(p, 0))
        timeout_ms = _arg(p, 1, None)
        rpc = self.config.rpc
        if timeout_ms is None:
            timeout = rpc.sync_timeout_ms / 1000
        else:
            timeout_ms = parse_quantity(timeout_ms, "timeout") if not isinstance(timeout_ms, int) else timeout_ms
            timeout = min(timeout_ms, rpc.sync_timeout_max_ms) / 1000
        tx.arrival_ns = time.perf_counter_ns()
        fut = self.producer.wait_for(tx.hash)
        try:
            self._admit(tx)
        except RpcError:
            fut.cancel()
            self.producer.waiters.pop(tx.hash, None)
            raise
        if self.pool.by_hash.get(tx.hash) is tx and tx.nonce > self.chain.state.get_nonce(tx.sender) \
                and self.pool.pending_nonce(tx.sender) <= tx.nonce:
            # EIP-7966: queued behind a nonce gap, it cannot run yet.
            raise RpcError(5, "the transaction was added to the mempool but cannot be executed yet "
                              "(nonce gap)", d(tx.hash))
        try:
            receipt = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            raise RpcError(4, f"the transaction was added to the mempool but wasn't processed in {int(timeout * 1000)}ms",
                           d(tx.hash)) from None
        except TxInvalid as exc:
            raise RpcError(-32000, exc.message, d(tx.hash)) from None
        except PoolError as exc:
            raise RpcError(-32000, exc.message, d(tx.hash)) from None
        block_hash = self._block_hash_of(receipt.block_number)
        return receipt_json(receipt, block_hash)

    def eth_sendTransaction(self, p, s):
        req = _arg(p, 0)
        if not isinstance(req, dict):
            raise invalid_params("transaction object expected")
        sender = parse_address(req.get("from"), "from")
        key = self.node.key_of(sender)
        if key is None and not (self.auto_impersonate or sender in self.impersonated):
            raise RpcError(-32000, f"no such account 0x{sender.hex()}: not a dev account and not impersonated")
        tx_dict = self._tx_fields(req, sender)
        from eth_account import Account

        if key is not None:
            raw = bytes(Account.sign_transaction(tx_dict, key).raw_transaction)
            tx = decode_raw_transaction(raw, self.chain.chain_id)
        else:
            # Impersonated: a placeholder signature; the sender is taken as given.
            raw = bytes(Account.sign_transaction(tx_dict, IMPERSONATION_KEY).raw_transaction)
            tx = decode_raw_transaction(raw, self.chain.chain_id, sender=sender)
        tx.arrival_ns = time.perf_counter_ns()
        self._admit(tx)
        return d(tx.hash)

    def _tx_fields(self, req: dict, sender: bytes) -> dict:
        out: dict[str, Any] = {"chainId": self.chain.chain_id}
        if req.get("to"):
            from eth_utils import to_checksum_address

            out["to"] = to_checksum_address(parse_address(req["to"], "to"))
        data = req.get("input", req.get("data"))
        out["data"] = parse_data(data, "input") if data else b""
        out["value"] = parse_quantity(req.get("value", "0x0"), "value")
        out["nonce"] = parse_quantity(req["nonce"], "nonce") if "nonce" in req else self.pool.pending_nonce(sender)
        if "gasPrice" in req:
            out["gasPrice"] = parse_quantity(req["gasPrice"], "gasPrice")
        else:
            base = self._pending_base_fee()
            out["maxPriorityFeePerGas"] = parse_quantity(req.get("maxPriorityFeePerGas", "0x0"))
            out["maxFeePerGas"] = parse_quantity(req["maxFeePerGas"]) if "maxFeePerGas" in req \
                else 2 * base + out["maxPriorityFeePerGas"]
            out["type"] = 2
        if req.get("accessList"):
            out["accessList"] = req["accessList"]
        if "gas" in req:
            out["gas"] = parse_quantity(req["gas"], "gas")
        else:
            call = dict(req)
            call["from"] = "0x" + sender.hex()
            out["gas"] = parse_quantity(self.eth_estimateGas([call, "pending"], None))
        return out

    # -- reading transactions and blocks --------------------------------------------------

    def _block_hash_of(self, number: int) -> bytes:
        open_block = self.chain.open
        if open_block is not None and open_block.env.number == number:
            return PENDING_BLOCK_HASH
        header = self.chain.header(number)
        return header.hash if header is not None else PENDING_BLOCK_HASH

    def eth_getTransactionByHash(self, p, s):
        tx_hash = parse_hash(_arg(p, 0))
        found = self.chain.find_transaction(tx_hash)
        if found is None:
            tx = self.pool.by_hash.get(tx_hash)
            return None if tx is None else tx_json(tx, None, None, None, None)
        tx, receipt, block_hash = found
        base_fee = self._base_fee_of(receipt.block_number)
        return tx_json(tx, block_hash, receipt.block_number, receipt.tx_index, base_fee)

    def _base_fee_of(self, number: int) -> int:
        open_block = self.chain.open
        if open_block is not None and open_block.env.number == number:
            return open_block.env.base_fee
        return self.chain.header(number).base_fee

    def eth_getTransactionReceipt(self, p, s):
        tx_hash = parse_hash(_arg(p, 0))
        found = self.chain.find_transaction(tx_hash)
        if found is None:
            number = self.chain.find_system_logs(tx_hash)
            return None if number is None else self._system_receipt(number)
        _tx, receipt, block_hash = found
        return receipt_json(receipt, block_hash)

    def _system_receipt(self, number: int) -> dict:
        """The receipt of a block's system logs (the exchange hooks' events,
        under a synthetic transaction hash after the block's transactions, as
        Bor serves its state-sync receipts): from the zero address, to the
        precompile, no gas, status 1 - so that a client reading a log's
        receipt (ethers' log.getTransactionReceipt) finds one. It is in no
        receipt root and no block's transaction list."""
        header = self.chain.header(number)
        logs = self.chain.block_system_logs(number)
        first = logs[0]
        bloom = logs_bloom(logs)
        return {
            "transactionHash": d(first.tx_hash),
            "transactionIndex": q(first.tx_index),
            "blockHash": d(header.hash),
            "blockNumber": q(number),
            "from": d(b"\x00" * 20),
            "to": d(first.address),
            "cumulativeGasUsed": q(header.gas_used),
            "gasUsed": q(0),
            "effectiveGasPrice": q(0),
            "contractAddress": None,
            "logs": [log_json(log, header.hash) for log in logs],
            "logsBloom": d(bloom.to_bytes(256, "big")),
            "type": q(0),
            "status": q(1),
            "blobGasUsed": None,
        }

    def _sealed_number(self, tag) -> int:
        number = self._block_number(tag)
        return self.chain.head.number if number is None else number

    def _block_json(self, number: int, full: bool):
        header = self.chain.header(number)
        if header is None:
            return None
        txs = self.chain.block_transactions(number)
        if full:
            items = [tx_json(tx, header.hash, number, i, header.base_fee) for i, tx in enumerate(txs)]
        else:
            items = [d(tx.hash) for tx in txs]
        return header_json(header, items)

    def eth_getBlockByNumber(self, p, s):
        tag = _arg(p, 0)
        full = bool(_arg(p, 1, False))
        try:
            number = self._sealed_number(tag)
        except RpcError as exc:
            if exc.code == -32000:
                return None
            raise
        return self._block_json(number, full)

    def eth_getBlockByHash(self, p, s):
        number = self.chain.number_of_hash(parse_hash(_arg(p, 0)))
        return None if number is None else self._block_json(number, bool(_arg(p, 1, False)))

    def eth_getBlockReceipts(self, p, s):
        tag = _arg(p, 0)
        if isinstance(tag, str) and len(tag) == 66:
            number = self.chain.number_of_hash(parse_hash(tag))
            if number is None:
                return None
        else:
            number = self._sealed_number(tag)
        header = self.chain.header(number)
        return [receipt_json(r, header.hash) for r in self.chain.block_receipts(number)]

    def eth_getBlockTransactionCountByNumber(self, p, s):
        number = self._sealed_number(_arg(p, 0))
        return q(len(self.chain.block_transactions(number)))

    def eth_getBlockTransactionCountByHash(self, p, s):
        number = self.chain.number_of_hash(parse_hash(_arg(p, 0)))
        return None if number is None else q(len(self.chain.block_transactions(number)))

    def eth_getTransactionByBlockNumberAndIndex(self, p, s):
        return self._tx_at(self._sealed_number(_arg(p, 0)), parse_quantity(_arg(p, 1), "index"))

    def eth_getTransactionByBlockHashAndIndex(self, p, s):
        number = self.chain.number_of_hash(parse_hash(_arg(p, 0)))
        return None if number is None else self._tx_at(number, parse_quantity(_arg(p, 1), "index"))

    def _tx_at(self, number: int, index: int):
        header = self.chain.header(number)
        txs = self.chain.block_transactions(number)
        if header is None or index >= len(txs):
            return None
        return tx_json(txs[index], header.hash, number, index, header.base_fee)

    # -- calls -----------------------------------------------------------------------------

    def eth_call(self, p, s):
        req = _arg(p, 0)
        number = self._block_number(_arg(p, 1, "latest"))
        overrides = _arg(p, 2, None)
        try:
            result = run_call(self.chain, req, number, overrides, CALL_GAS_CAP, estimate=False)
        except CallError as exc:
            raise RpcError(exc.code, exc.message, exc.data) from None
        return d(result.output)

    def eth_estimateGas(self, p, s):
        req = _arg(p, 0)
        number = self._block_number(_arg(p, 1, "latest"))
        overrides = _arg(p, 2, None)
        cap = min(self.config.chain.tx_gas_limit, CALL_GAS_CAP if "gas" not in req else
                  parse_quantity(req["gas"], "gas"))
        try:
            gas = run_call(self.chain, req, number, overrides, cap, estimate=True)
        except CallError as exc:
            raise RpcError(exc.code, exc.message, exc.data) from None
        return q(gas)

    # -- logs and filters ------------------------------------------------------------------

    def _criteria(self, obj: Any) -> LogCriteria:
        if not isinstance(obj, dict):
            raise invalid_params("filter object expected")
        c = LogCriteria()
        c.block_hash = parse_hash(obj["blockHash"], "blockHash") if obj.get("blockHash") else None
        c.from_block = obj.get("fromBlock", "latest")
        c.to_block = obj.get("toBlock", "latest")
        address = obj.get("address")
        if address is None:
            c.addresses = ()
        elif isinstance(address, list):
            c.addresses = frozenset(parse_address(a) for a in address)
        else:
            c.addresses = frozenset((parse_address(address),))
        topics = []
        for t in obj.get("topics") or []:
            if t is None:
                topics.append(None)
            elif isinstance(t, list):
                topics.append(frozenset(parse_hash(x, "topic") for x in t) if t else None)
            else:
                topics.append(frozenset((parse_hash(t, "topic"),)))
        c.topics = topics
        return c

    def _range(self, c: LogCriteria) -> tuple[int, int]:
        head = self.chain.head.number
        start = self._sealed_number(c.from_block)
        end = self._sealed_number(c.to_block)
        return start, min(end, head)

    def eth_getLogs(self, p, s):
        c = self._criteria(_arg(p, 0))
        return self._logs(c)

    def _logs(self, c: LogCriteria) -> list:
        if c.block_hash is not None:
            number = self.chain.number_of_hash(c.block_hash)
            if number is None:
                raise RpcError(-32000, "unknown block")
            start = end = number
        else:
            start, end = self._range(c)
        if end - start + 1 > self.config.rpc.max_logs_block_range:
            raise RpcError(-32005, f"block range too large: at most {self.config.rpc.max_logs_block_range} blocks per eth_getLogs")
        out = []
        for number in range(start, end + 1):
            header = self.chain.header(number)
            if header is None or not header.bloom or not c.bloom_may_match(header.bloom):
                continue
            for receipt in self.chain.block_receipts(number):
                for log in receipt.logs:
                    if c.matches(log):
                        out.append(log_json(log, header.hash))
            for log in self.chain.block_system_logs(number):  # the exchange's block hooks, last
                if c.matches(log):
                    out.append(log_json(log, header.hash))
        pending = c.to_block == "pending" and self.chain.open is not None
        if pending:
            for receipt in self.chain.open.receipts:
                for log in receipt.logs:
                    if c.matches(log):
                        out.append(log_json(log, PENDING_BLOCK_HASH))
        return out

    def _new_filter_id(self) -> str:
        self._expire_filters()
        return hex(next(self._ids) * 0x9E3779B1 % (1 << 64) | (1 << 63))

    def _expire_filters(self) -> None:
        now = time.monotonic()
        for fid in [f for f, flt in self.filters.items() if now - flt.last_poll > FILTER_TTL_SECONDS]:
            del self.filters[fid]

    def eth_newFilter(self, p, s):
        c = self._criteria(_arg(p, 0))
        fid = self._new_filter_id()
        self.filters[fid] = Filter("logs", c, pending_logs=c.to_block == "pending")
        return fid

    def eth_newBlockFilter(self, p, s):
        fid = self._new_filter_id()
        self.filters[fid] = Filter("blocks")
        return fid

    def eth_newPendingTransactionFilter(self, p, s):
        fid = self._new_filter_id()
        self.filters[fid] = Filter("pending")
        return fid

    def _filter(self, fid: Any) -> Filter:
        flt = self.filters.get(fid) if isinstance(fid, str) else None
        if flt is None:
            raise RpcError(-32000, "filter not found")
        flt.last_poll = time.monotonic()
        return flt

    def eth_getFilterChanges(self, p, s):
        flt = self._filter(_arg(p, 0))
        items, flt.items = flt.items, []
        return items

    def eth_getFilterLogs(self, p, s):
        flt = self._filter(_arg(p, 0))
        if flt.kind != "logs":
            raise RpcError(-32000, "filter not found")
        return self._logs(flt.criteria)

    def eth_uninstallFilter(self, p, s):
        return self.filters.pop(_arg(p, 0), None) is not None

    # -- subscriptions ---------------------------------------------------------------------

    def eth_subscribe(self, p, s):
        if not s.is_websocket:
            raise RpcError(-32601, "notifications not supported")
        kind = _arg(p, 0)
        criteria = None
        if kind == "logs":
            criteria = self._criteria(_arg(p, 1, {}) or {})
        elif kind not in ("newHeads", "newPendingTransactions", "miniBlocks"):
            raise invalid_params(f"unknown subscription {kind!r}")
        sid = self._new_filter_id()
        self.subscriptions[sid] = (kind, s, criteria)
        s.on_close(lambda: self.subscriptions.pop(sid, None))
        return sid

    def eth_unsubscribe(self, p, s):
        return self.subscriptions.pop(_arg(p, 0), None) is not None

    def _notify(self, sid: str, session, result) -> None:
        session.notify("eth_subscription", {"subscription": sid, "result": result})

    def _on_block(self, sealed) -> None:
        header = sealed.header
        head_json = None
        for fid, flt in self.filters.items():
            if flt.kind == "blocks":
                flt.push(d(header.hash))
            elif flt.kind == "logs" and not flt.pending_logs:
                for log in _block_logs(sealed):
                    if flt.criteria.matches(log):
                        flt.push(log_json(log, header.hash))
        for sid, (kind, session, criteria) in list(self.subscriptions.items()):
            if kind == "newHeads":
                if head_json is None:
                    head_json = header_json(header, [])
                    del head_json["transactions"]
                self._notify(sid, session, head_json)
            elif kind == "logs" and criteria.to_block != "pending":
                for log in _block_logs(sealed):
                    if criteria.matches(log):
                        self._notify(sid, session, log_json(log, header.hash))

    def _on_miniblock(self, block, txs, receipts) -> None:
        has_subs = bool(self.subscriptions)
        for fid, flt in self.filters.items():
            if flt.kind == "logs" and flt.pending_logs:
                for receipt in receipts:
                    for log in receipt.logs:
                        if flt.criteria.matches(log):
                            flt.push(log_json(log, PENDING_BLOCK_HASH))
        if not has_subs:
            return
        mini_json = None
        for sid, (kind, session, criteria) in list(self.subscriptions.items()):
            if kind == "miniBlocks":
                if mini_json is None:
                    env = block.env
                    mini_json = {
                        "blockNumber": q(env.number),
                        "miniBlockNumber": q(receipts[0].miniblock) if receipts else None,
                        "timestamp": q(env.timestamp),
                        "gasUsed": q(sum(r.gas_used for r in receipts)),
                        "transactions": [tx_json(tx, PENDING_BLOCK_HASH, env.number, r.tx_index, env.base_fee)
                                         for tx, r in zip(txs, receipts)],
                        "receipts": [receipt_json(r, PENDING_BLOCK_HASH) for r in receipts],
                    }
                self._notify(sid, session, mini_json)
            elif kind == "logs" and criteria.to_block == "pending":
                for receipt in receipts:
                    for log in receipt.logs:
                        if criteria.matches(log):
                            self._notify(sid, session, log_json(log, PENDING_BLOCK_HASH))

    def _on_pending_tx(self, tx) -> None:
        for flt in self.filters.values():
            if flt.kind == "pending":
                flt.push(d(tx.hash))
        for sid, (kind, session, _c) in list(self.subscriptions.items()):
            if kind == "newPendingTransactions":
                self._notify(sid, session, d(tx.hash))

    # -- dev methods -------------------------------------------------------------------------

    def evm_snapshot(self, p, s):
        return self.node.snapshot()

    def evm_revert(self, p, s):
        return self.node.revert(parse_quantity(_arg(p, 0), "snapshot id"))

    def evm_mine(self, p, s):
        """evm_mine([timestamp | {timestamp?, blocks?}]): seal now (hardhat/anvil)."""
        arg = _arg(p, 0, None)
        blocks, timestamp = 1, None
        if isinstance(arg, dict):
            blocks = parse_quantity(arg.get("blocks", "0x1"), "blocks")
            timestamp = parse_quantity(arg["timestamp"], "timestamp") if "timestamp" in arg else None
        elif arg is not None:
            timestamp = arg if isinstance(arg, int) else parse_quantity(arg, "timestamp")
        return self._mine(blocks, timestamp)

    def anvil_mine(self, p, s):
        """anvil_mine([blocks], [interval seconds]) / hardhat_mine."""
        blocks = _arg(p, 0, None)
        blocks = 1 if blocks is None else (blocks if isinstance(blocks, int) else parse_quantity(blocks, "blocks"))
        interval = _arg(p, 1, None)
        interval = None if interval is None else (interval if isinstance(interval, int) else parse_quantity(interval, "interval"))
        if interval:
            for _ in range(max(1, min(blocks, 10_000))):
                self._mine(1, self.chain.head.timestamp + interval)
            return "0x0"
        return self._mine(blocks, None)

    def _mine(self, blocks: int, timestamp: int | None):
        blocks = max(1, min(blocks, 10_000))
        for i in range(blocks):
            if timestamp is not None and i == 0:
                self._set_next_timestamp(timestamp)
            self.node.mine_block()
        return "0x0"

    def evm_increaseTime(self, p, s):
        seconds = _arg(p, 0)
        seconds = seconds if isinstance(seconds, int) else parse_quantity(seconds, "seconds")
        self.chain.time_offset += seconds
        return q(self.chain.time_offset)

    def evm_setNextBlockTimestamp(self, p, s):
        value = _arg(p, 0)
        self._set_next_timestamp(value if isinstance(value, int) else parse_quantity(value, "timestamp"))
        return None

    def _set_next_timestamp(self, timestamp: int) -> None:
        if timestamp < self.chain.head.timestamp:
            raise RpcError(-32602, f"timestamp {timestamp} is lower than the previous block's {self.chain.head.timestamp}")
        self.node.set_next_timestamp(timestamp)

    def anvil_setBalance(self, p, s):
        self.node.dev_op(["balance", parse_address(_arg(p, 0)), parse_quantity(_arg(p, 1), "balance")])
        return True

    def anvil_setNonce(self, p, s):
        self.node.dev_op(["nonce", parse_address(_arg(p, 0)), parse_quantity(_arg(p, 1), "nonce")])
        return True

    def anvil_setCode(self, p, s):
        self.node.dev_op(["code", parse_address(_arg(p, 0)), parse_data(_arg(p, 1), "code")])
        return True

    def anvil_setStorageAt(self, p, s):
        value = parse_data(_arg(p, 2), "value")
        if len(value) > 32:
            raise invalid_params("value must be at most 32 bytes")
        self.node.dev_op(["storage", parse_address(_arg(p, 0)), parse_quantity(_arg(p, 1), "slot"),
                          int.from_bytes(value, "big")])
        return True

    def anvil_impersonateAccount(self, p, s):
        self.impersonated.add(parse_address(_arg(p, 0)))
        return None

    def anvil_stopImpersonatingAccount(self, p, s):
        self.impersonated.discard(parse_address(_arg(p, 0)))
        return None

    def anvil_autoImpersonateAccount(self, p, s):
        self.auto_impersonate = bool(_arg(p, 0))
        return None


# A fixed, public key used only to give impersonated transactions a well-formed signature.
IMPERSONATION_KEY = keccak(b"blixt impersonation placeholder key")


def _block_logs(sealed):
    """A sealed block's logs in order: its transactions', then its system logs."""
    for receipt in sealed.receipts:
        yield from receipt.logs
    yield from sealed.system_logs

"""JSON shapes of blocks, transactions, receipts and logs, as geth and anvil print them."""
from __future__ import annotations

from node.chain.blocks import BLANK_ROOT, EMPTY_SHA256, EMPTY_UNCLE_HASH, ZERO_HASH, Header, Log, Receipt
from node.chain.transactions import ACCESS_LIST, LEGACY, SET_CODE, SignedTx


def q(n: int) -> str:
    return hex(n)


def d(b: bytes) -> str:
    return "0x" + b.hex()


def addr(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


def header_json(h: Header, transactions: list, full: bool = False) -> dict:
    return {
        "number": q(h.number),
        "hash": d(h.hash),
        "parentHash": d(h.parent_hash),
        "nonce": "0x0000000000000000",
        "sha3Uncles": d(EMPTY_UNCLE_HASH),
        "logsBloom": d(h.bloom.to_bytes(256, "big")),
        "transactionsRoot": d(h.tx_root),
        "stateRoot": d(h.state_root),
        "receiptsRoot": d(h.receipt_root),
        "miner": addr(h.coinbase),
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": d(h.extra_data),
        "size": q(h.size),
        "gasLimit": q(h.gas_limit),
        "gasUsed": q(h.gas_used),
        "timestamp": q(h.timestamp),
        "mixHash": d(h.mix_hash),
        "baseFeePerGas": q(h.base_fee),
        "withdrawalsRoot": d(BLANK_ROOT),
        "withdrawals": [],
        "blobGasUsed": "0x0",
        "excessBlobGas": "0x0",
        "parentBeaconBlockRoot": d(ZERO_HASH),
        "requestsHash": d(EMPTY_SHA256),
        "uncles": [],
        "transactions": transactions,
        "miniBlockCount": q(h.miniblock_count),
    }


def tx_json(tx: SignedTx, block_hash: bytes | None, block_number: int | None,
            index: int | None, base_fee: int | None) -> dict:
    out = {
        "hash": d(tx.hash),
        "type": q(tx.type),
        "nonce": q(tx.nonce),
        "from": addr(tx.sender),
        "to": addr(tx.to),
        "value": q(tx.value),
        "gas": q(tx.gas),
        "input": d(tx.data),
        "blockHash": None if block_hash is None else d(block_hash),
        "blockNumber": None if block_number is None else q(block_number),
        "transactionIndex": None if index is None else q(index),
        "v": q(tx.v),
        "r": q(tx.r),
        "s": q(tx.s),
    }
    if tx.type == LEGACY:
        out["gasPrice"] = q(tx.gas_price)
        if tx.chain_id is not None:
            out["chainId"] = q(tx.chain_id)
    else:
        out["chainId"] = q(tx.chain_id)
        out["yParity"] = q(tx.v)
        out["accessList"] = [
            {"address": addr(a), "storageKeys": [d(k) for k in keys]} for a, keys in tx.access_list
        ]
        if tx.type == ACCESS_LIST:
            out["gasPrice"] = q(tx.gas_price)
        else:
            out["maxFeePerGas"] = q(tx.max_fee)
            out["maxPriorityFeePerGas"] = q(tx.max_priority_fee)
            out["gasPrice"] = q(tx.effective_gas_price(base_fee) if base_fee is not None else tx.max_fee)
        if tx.type == SET_CODE:
            out["authorizationList"] = [
                {"chainId": d(c) if c else "0x0", "address": d(a), "nonce": d(n) if n else "0x0",
                 "yParity": d(y) if y else "0x0", "r": d(r), "s": d(s)}
                for c, a, n, y, r, s in tx.authorization_list
            ]
    return out


def log_json(log: Log, block_hash: bytes, removed: bool = False) -> dict:
    return {
        "address": addr(log.address),
        "topics": [d(t) for t in log.topics],
        "data": d(log.data),
        "blockNumber": q(log.block_number),
        "blockHash": d(block_hash),
        "transactionHash": d(log.tx_hash),
        "transactionIndex": q(log.tx_index),
        "logIndex": q(log.log_index),
        "removed": removed,
    }


def receipt_json(r: Receipt, block_hash: bytes) -> dict:
    return {
        "transactionHash": d(r.tx_hash),
        "transactionIndex": q(r.tx_index),
        "blockHash": d(block_hash),
        "blockNumber": q(r.block_number),
        "from": addr(r.sender),
        "to": addr(r.to),
        "cumulativeGasUsed": q(r.cumulative_gas_used),
        "gasUsed": q(r.gas_used),
        "effectiveGasPrice": q(r.effective_gas_price),
        "contractAddress": addr(r.contract_address),
        "logs": [log_json(log, block_hash) for log in r.logs],
        "logsBloom": d(r.bloom.to_bytes(256, "big")),
        "type": q(r.tx_type),
        "status": q(r.status),
        "blobGasUsed": None,
        "miniBlockNumber": q(r.miniblock),
    }

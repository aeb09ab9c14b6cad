"""Fast EIP-1559 signing for pre-signed load.

eth-account signs a transaction in about a millisecond (sedes inference, eth-keys
objects, re-encoding). Here a transaction is a raw RLP list encoded once by
rusty-rlp, hashed with pysha3 and signed by libsecp256k1 through coincurve: tens of
microseconds, so 100k transactions pre-sign in seconds, and across processes when
there are many (`presign(..., processes=2)`). tests/stress checks that the bytes
equal eth-account's for the same fields and key.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Sequence

import coincurve
import sha3
from rlp.codec import encode_raw

EIP1559_TYPE = b"\x02"
# Below this many transactions a second process costs more (fork, pickling) than it saves.
_PARALLEL_THRESHOLD = 4_000


@dataclass(frozen=True, slots=True)
class FeeCap:
    """Fee fields every load transaction carries (EIP-1559)."""

    chain_id: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int


# One transaction to sign: (sender index, nonce, gas limit, to (20 bytes or b"" for a
# create), value, calldata). A plain tuple pickles and unpacks cheaply.
TxPlan = tuple[int, int, int, bytes, int, bytes]


def int_bytes(value: int) -> bytes:
    """Big-endian minimal bytes: RLP's integer form (0 is the empty string)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def sign_eip1559(
    private_key: coincurve.PrivateKey,
    fees: FeeCap,
    nonce: int,
    gas: int,
    to: bytes,
    value: int,
    data: bytes,
) -> tuple[bytes, bytes]:
    """Return (raw signed transaction, transaction hash)."""
    fields = [
        int_bytes(fees.chain_id),
        int_bytes(nonce),
        int_bytes(fees.max_priority_fee_per_gas),
        int_bytes(fees.max_fee_per_gas),
        int_bytes(gas),
        to,
        int_bytes(value),
        data,
        [],  # access list
    ]
    digest = sha3.keccak_256(EIP1559_TYPE + encode_raw(fields)).digest()
    signature = private_key.sign_recoverable(digest, hasher=None)  # r || s || recovery id
    fields.append(int_bytes(signature[64]))
    fields.append(signature[0:32].lstrip(b"\x00"))
    fields.append(signature[32:64].lstrip(b"\x00"))
    raw = EIP1559_TYPE + encode_raw(fields)
    return raw, sha3.keccak_256(raw).digest()


def presign(
    plans: Sequence[TxPlan],
    private_keys: Sequence[bytes],
    fees: FeeCap,
    processes: int | None = None,
) -> tuple[list[bytes], list[bytes]]:
    """Sign every plan, in order; return (raw transactions, hashes).

    `processes` None picks min(2, CPUs) when the batch is large enough to gain.
    """
    if processes is None:
        processes = min(2, os.cpu_count() or 1) if len(plans) >= _PARALLEL_THRESHOLD else 1
    if processes <= 1:
        return _sign_chunk(plans, private_keys, fees)
    size = -(-len(plans) // processes)
    chunks = [plans[i : i + size] for i in range(0, len(plans), size)]
    # fork: the children inherit the keys and modules instead of re-importing them.
    context = multiprocessing.get_context("fork")
    with context.Pool(len(chunks)) as pool:
        results = pool.starmap(_sign_chunk, [(chunk, private_keys, fees) for chunk in chunks])
    raws: list[bytes] = []
    hashes: list[bytes] = []
    for chunk_raws, chunk_hashes in results:
        raws.extend(chunk_raws)
        hashes.extend(chunk_hashes)
    return raws, hashes


def _sign_chunk(
    plans: Sequence[TxPlan], private_keys: Sequence[bytes], fees: FeeCap
) -> tuple[list[bytes], list[bytes]]:
    signers = [coincurve.PrivateKey(key) for key in private_keys]
    raws = []
    hashes = []
    for sender, nonce, gas, to, value, data in plans:
        raw, tx_hash = sign_eip1559(signers[sender], fees, nonce, gas, to, value, data)
        raws.append(raw)
        hashes.append(tx_hash)
    return raws, hashes

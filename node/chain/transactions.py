"""Signed transactions at ingress: raw bytes -> a validated `SignedTx` with its sender.

This is the one place a signature is recovered (PERFORMANCE.md point 1): rlp decode,
keccak of the signing payload, coincurve recovery. Everything after works with the
recovered `sender`; py-evm gets it primed so it never recovers again. coincurve and
keccak release the GIL, so `decode_raw_transaction` may run on a worker thread.
"""
from __future__ import annotations

from typing import Any

import coincurve
import rlp
from rusty_rlp import encode_raw
from sha3 import keccak_256

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1

LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE = 0, 1, 2, 3, 4
SUPPORTED_TYPES = (LEGACY, ACCESS_LIST, DYNAMIC_FEE, SET_CODE)

# Intrinsic gas (Prague): EIP-2028 calldata, EIP-2930 access lists, EIP-3860 initcode,
# EIP-7702 authorizations; EIP-7623's calldata floor is checked against the limit too.
TX_GAS = 21_000
TX_CREATE_GAS = 32_000
TX_DATA_ZERO_GAS = 4
TX_DATA_NONZERO_GAS = 16
ACCESS_LIST_ADDRESS_GAS = 2_400
ACCESS_LIST_STORAGE_KEY_GAS = 1_900
INITCODE_WORD_GAS = 2
MAX_INITCODE_SIZE = 49_152
PER_EMPTY_ACCOUNT_COST = 25_000
TOTAL_COST_FLOOR_PER_TOKEN = 10


def keccak(data: bytes) -> bytes:
    return keccak_256(data).digest()


class TxDecodeError(ValueError):
    """The bytes are not a well-formed signed transaction (the RPC maps it to an error)."""


class SignedTx:
    """A decoded, signature-checked transaction. Fields are ints/bytes as on the wire."""

    __slots__ = (
        "raw", "hash", "sender", "type", "chain_id", "nonce", "gas_price",
        "max_priority_fee", "max_fee", "gas", "to", "value", "data", "access_list",
        "authorization_list", "v", "r", "s", "intrinsic_gas", "arrival_ns", "_evm_tx",
    )

    def __init__(self) -> None:
        self._evm_tx = None
        self.arrival_ns = 0

    @property
    def is_plain_transfer(self) -> bool:
        """No calldata, no access list, a recipient: a candidate for the transfer fast path."""
        return (
            self.to is not None
            and not self.data
            and not self.access_list
            and self.type in (LEGACY, ACCESS_LIST, DYNAMIC_FEE)
        )

    def effective_gas_price(self, base_fee: int) -> int:
        if self.type in (LEGACY, ACCESS_LIST):
            return self.gas_price
        return min(self.max_fee, base_fee + self.max_priority_fee)

    def fee_cap(self) -> int:
        """The most one unit of gas may cost: what the balance must cover upfront."""
        return self.gas_price if self.type in (LEGACY, ACCESS_LIST) else self.max_fee

    def tip_cap(self) -> int:
        return self.gas_price if self.type in (LEGACY, ACCESS_LIST) else self.max_priority_fee

    def evm_transaction(self) -> Any:
        """The py-evm object for the interpreter path, built once, sender primed."""
        if self._evm_tx is None:
            from eth.vm.forks.prague.transactions import PragueTransactionBuilder

            tx = PragueTransactionBuilder.decode(self.raw)
            prime_sender(tx, self.sender)
            self._evm_tx = tx
        return self._evm_tx


def prime_sender(evm_tx: Any, sender: bytes) -> None:
    """Hand py-evm the sender recovered at ingress, so it neither recovers nor
    re-verifies the signature (node/chain/state.py's prime_sender says how)."""
    from node.chain.state import prime_sender as prime

    prime(evm_tx, sender)


def decode_raw_transaction(raw: bytes, chain_id: int, sender: bytes | None = None) -> SignedTx:
    """Decode, check and recover one raw transaction. Raises TxDecodeError.

    `sender` skips recovery: for transactions already recovered once (replaying the
    WAL, reading a stored block) and for impersonated accounts (anvil_impersonateAccount),
    whose signature is a placeholder."""
    if not raw:
        raise TxDecodeError("empty transaction")
    first = raw[0]
    tx = SignedTx()
    tx.raw = raw
    tx.authorization_list = ()
    tx.access_list = ()
    if first >= 0xC0:
        fields = _rlp_list(raw)
        if len(fields) != 9:
            raise TxDecodeError(f"legacy transaction has {len(fields)} fields, want 9")
        tx.type = LEGACY
        nonce, gas_price, gas, to, value, data, v, r, s = fields
        tx.nonce = _uint(nonce, "nonce", UINT64_MAX)
        tx.gas_price = _uint(gas_price, "gasPrice")
        tx.max_fee = tx.max_priority_fee = tx.gas_price
        tx.gas = _uint(gas, "gas", UINT64_MAX)
        tx.to = _to(to)
        tx.value = _uint(value, "value")
        tx.data = _bytes(data, "data")
        tx.v = _uint(v, "v")
        if tx.v in (27, 28):
            tx.chain_id = None  # pre-EIP-155: valid on any chain, as anvil allows
            recovery = tx.v - 27
            payload = encode_raw([nonce, gas_price, gas, to, value, data])
        elif tx.v >= 35:
            tx.chain_id = (tx.v - 35) // 2
            recovery = (tx.v - 35) % 2
            payload = encode_raw([nonce, gas_price, gas, to, value, data,
                                  _int_bytes(tx.chain_id), b"", b""])
        else:
            raise TxDecodeError(f"invalid signature v value {tx.v}")
    else:
        if first not in SUPPORTED_TYPES:
            if first == BLOB:
                raise TxDecodeError("transaction type not supported: blob transactions (type 3) are not accepted on this L2")
            raise TxDecodeError(f"transaction type not supported: {first}")
        fields = _rlp_list(raw[1:])
        tx.type = first
        if first == ACCESS_LIST:
            if len(fields) != 11:
                raise TxDecodeError(f"access-list transaction has {len(fields)} fields, want 11")
            cid, nonce, gas_price, gas, to, value, data, access_list, y, r, s = fields
            tx.gas_price = _uint(gas_price, "gasPrice")
            tx.max_fee = tx.max_priority_fee = tx.gas_price
        else:
            want = 12 if first == DYNAMIC_FEE else 13
            if len(fields) != want:
                raise TxDecodeError(f"type-{first} transaction has {len(fields)} fields, want {want}")
            if first == DYNAMIC_FEE:
                cid, nonce, prio, max_fee, gas, to, value, data, access_list, y, r, s = fields
            else:
                cid, nonce, prio, max_fee, gas, to, value, data, access_list, auths, y, r, s = fields
                tx.authorization_list = _authorizations(auths)
                if not tx.authorization_list:
                    raise TxDecodeError("set-code transaction with an empty authorization list")
            tx.max_priority_fee = _uint(prio, "maxPriorityFeePerGas")
            tx.max_fee = _uint(max_fee, "maxFeePerGas")
            tx.gas_price = tx.max_fee
            if tx.max_priority_fee > tx.max_fee:
                raise TxDecodeError(
                    f"max priority fee per gas higher than max fee per gas: "
                    f"maxPriorityFeePerGas: {tx.max_priority_fee}, maxFeePerGas: {tx.max_fee}"
                )
        tx.chain_id = _uint(cid, "chainId")
        tx.nonce = _uint(nonce, "nonce", UINT64_MAX)
        tx.gas = _uint(gas, "gas", UINT64_MAX)
        tx.to = _to(to)
        if first == SET_CODE and tx.to is None:
            raise TxDecodeError("set-code transaction cannot create a contract")
        tx.value = _uint(value, "value")
        tx.data = _bytes(data, "data")
        tx.access_list = _access_list(access_list)
        tx.v = _uint(y, "yParity")
        if tx.v > 1:
            raise TxDecodeError(f"invalid yParity {tx.v}")
        recovery = tx.v
        # The decoded items are bytes and lists of bytes: encode them raw (pyrlp's
        # sedes inference costs ~12 µs a transaction here).
        payload = bytes((first,)) + encode_raw(fields[:-3])
    tx.r = _uint(r, "r")
    tx.s = _uint(s, "s")
    if sender is not None:
        tx.sender = sender
        tx.hash = keccak(raw)
        tx.intrinsic_gas = intrinsic_gas(tx)
        return tx
    if not (0 < tx.r < SECP256K1_N) or not (0 < tx.s <= SECP256K1_HALF_N):
        raise TxDecodeError("invalid transaction signature (r or s out of range)")
    if tx.chain_id is not None and tx.chain_id != chain_id:
        raise TxDecodeError(f"invalid chain id: have {tx.chain_id}, want {chain_id}")
    tx.sender = recover_sender(keccak(payload), tx.r, tx.s, recovery)
    tx.hash = keccak(raw)
    tx.intrinsic_gas = intrinsic_gas(tx)
    return tx


def recover_sender(msg_hash: bytes, r: int, s: int, recovery: int) -> bytes:
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((recovery,))
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(signature, msg_hash, hasher=None)
    except Exception as exc:  # coincurve raises ValueError/Exception on bad signatures
        raise TxDecodeError(f"invalid transaction signature: {exc}") from None
    return keccak(public_key.format(compressed=False)[1:])[12:]


def intrinsic_gas(tx: SignedTx) -> int:
    data = tx.data
    zeros = data.count(0)
    gas = TX_GAS + zeros * TX_DATA_ZERO_GAS + (len(data) - zeros) * TX_DATA_NONZERO_GAS
    if tx.to is None:
        gas += TX_CREATE_GAS + INITCODE_WORD_GAS * ((len(data) + 31) // 32)
    for _address, keys in tx.access_list:
        gas += ACCESS_LIST_ADDRESS_GAS + ACCESS_LIST_STORAGE_KEY_GAS * len(keys)
    gas += PER_EMPTY_ACCOUNT_COST * len(tx.authorization_list)
    return gas


def calldata_floor_gas(tx: SignedTx) -> int:
    """EIP-7623: the least gas a transaction with this calldata may be charged."""
    zeros = tx.data.count(0)
    tokens = zeros + (len(tx.data) - zeros) * 4
    return TX_GAS + TOTAL_COST_FLOOR_PER_TOKEN * tokens


def _rlp_list(payload: bytes) -> list:
    try:
        fields = rlp.decode(payload, strict=True)
    except Exception as exc:
        raise TxDecodeError(f"rlp: {exc}") from None
    if not isinstance(fields, list):
        raise TxDecodeError("rlp: expected a list")
    return fields


def _uint(item: Any, name: str, limit: int = UINT256_MAX) -> int:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"rlp: {name} must be a string, got a list")
    if item[:1] == b"\x00":
        raise TxDecodeError(f"rlp: non-canonical integer (leading zero bytes) for {name}")
    value = int.from_bytes(item, "big")
    if value > limit:
        raise TxDecodeError(f"{name} out of range")
    return value


def _bytes(item: Any, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise TxDecodeError(f"rlp: {name} must be a string, got a list")
    return item


def _to(item: Any) -> bytes | None:
    item = _bytes(item, "to")
    if item == b"":
        return None
    if len(item) != 20:
        raise TxDecodeError(f"rlp: recipient address must be 20 bytes, got {len(item)}")
    return item


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def _access_list(item: Any) -> tuple:
    if not isinstance(item, list):
        raise TxDecodeError("rlp: access list must be a list")
    entries = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 2:
            raise TxDecodeError("rlp: access list entry must be [address, keys]")
        address, keys = entry
        if not isinstance(address, bytes) or len(address) != 20 or not isinstance(keys, list):
            raise TxDecodeError("rlp: malformed access list entry")
        for key in keys:
            if not isinstance(key, bytes) or len(key) != 32:
                raise TxDecodeError("rlp: access list storage keys must be 32 bytes")
        entries.append((address, tuple(keys)))
    return tuple(entries)


def _authorizations(item: Any) -> tuple:
    if not isinstance(item, list):
        raise TxDecodeError("rlp: authorization list must be a list")
    out = []
    for entry in item:
        if not isinstance(entry, list) or len(entry) != 6:
            raise TxDecodeError("rlp: authorization must be [chainId, address, nonce, yParity, r, s]")
        out.append(tuple(entry))
    return tuple(out)

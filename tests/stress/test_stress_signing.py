"""Signing and key derivation equal the reference implementation (eth-account)."""

from __future__ import annotations

import coincurve
import pytest
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from node.stress.keys import STANDARD_MNEMONIC, account_from_key, derived_senders, dev_accounts
from node.stress.signing import FeeCap, presign, sign_eip1559

Account.enable_unaudited_hdwallet_features()


def test_dev_accounts_match_eth_account_hd_derivation():
    ours = dev_accounts(10)
    for i, account in enumerate(ours):
        reference = Account.from_mnemonic(STANDARD_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert account.private_key == bytes(reference.key)
        assert account.address_hex == reference.address.lower()
    # The well-known first dev account of anvil / hardhat.
    assert ours[0].address_hex == "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"


def test_derived_senders_are_deterministic_distinct_and_seed_dependent():
    first = derived_senders(50, "seed-a")
    assert first == derived_senders(50, "seed-a")
    assert len({a.address for a in first}) == 50
    assert {a.address for a in first}.isdisjoint(a.address for a in derived_senders(50, "seed-b"))
    for account in first[:5]:
        assert account.address_hex == Account.from_key(account.private_key).address.lower()


def _reference(fees: FeeCap, key: bytes, nonce: int, gas: int, to: bytes, value: int, data: bytes):
    tx = {
        "type": 2,
        "chainId": fees.chain_id,
        "nonce": nonce,
        "maxPriorityFeePerGas": fees.max_priority_fee_per_gas,
        "maxFeePerGas": fees.max_fee_per_gas,
        "gas": gas,
        "value": value,
        "data": data,
        "accessList": [],
    }
    if to:
        tx["to"] = to_checksum_address(to)
    return Account.sign_transaction(tx, key)


@pytest.mark.parametrize(
    "nonce, gas, to, value, data",
    [
        (0, 21_000, bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8"), 1, b""),
        (5, 80_000, bytes.fromhex("00000000000000000000000000000000000000aa"), 0, bytes.fromhex("b20eb4c4") + (1).to_bytes(32, "big")),
        (2**32, 30_000_000, bytes.fromhex("ff" * 20), 10**24, b"\x00" * 100),
        (1, 1_500_000, b"", 0, bytes.fromhex("6080604052")),  # contract creation
    ],
)
def test_raw_transaction_equals_eth_account(nonce, gas, to, value, data):
    fees = FeeCap(31337, 10**9, 100 * 10**9)
    key = derived_senders(1)[0].private_key
    raw, tx_hash = sign_eip1559(coincurve.PrivateKey(key), fees, nonce, gas, to, value, data)
    reference = _reference(fees, key, nonce, gas, to, value, data)
    assert raw == bytes(reference.raw_transaction)
    assert tx_hash == bytes(reference.hash)


@settings(max_examples=25, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big") < 2**255),
    chain_id=st.integers(1, 2**40),
    nonce=st.integers(0, 2**64 - 2),
    tip=st.integers(0, 10**12),
    extra_fee=st.integers(0, 10**12),
    value=st.integers(0, 2**128),
    data=st.binary(max_size=64),
)
def test_signed_bytes_and_sender_match_reference_for_any_fields(key, chain_id, nonce, tip, extra_fee, value, data):
    fees = FeeCap(chain_id, tip, tip + extra_fee)
    to = bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8")
    raw, tx_hash = sign_eip1559(coincurve.PrivateKey(key), fees, nonce, 21_000, to, value, data)
    assert raw == bytes(_reference(fees, key, nonce, 21_000, to, value, data).raw_transaction)
    assert Account.recover_transaction(raw).lower() == account_from_key(key).address_hex


def test_presign_across_processes_gives_the_same_bytes_in_order():
    senders = derived_senders(7)
    fees = FeeCap(31337, 10**9, 50 * 10**9)
    plans = [(i % 7, i // 7, 21_000, senders[(i + 1) % 7].address, 1, b"") for i in range(300)]
    keys = [s.private_key for s in senders]
    single_raws, single_hashes = presign(plans, keys, fees, processes=1)
    multi_raws, multi_hashes = presign(plans, keys, fees, processes=2)
    assert multi_raws == single_raws and multi_hashes == single_hashes
    # Spot-check sender and nonce of a few against the reference decoder.
    for i in (0, 8, 299):
        assert Account.recover_transaction(single_raws[i]).lower() == senders[i % 7].address_hex

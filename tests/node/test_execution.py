"""The transfer fast path equals the interpreter: same receipts, gas and state roots."""
from __future__ import annotations

import coincurve
from eth_account import Account
from hypothesis import given, settings, strategies as st

from node.chain.execution import BlockEnv, Executor, TxInvalid
from node.chain.state import FlatState
from node.chain.transactions import decode_raw_transaction, keccak

CHAIN_ID = 31337
KEYS = [bytes([i + 1]) * 32 for i in range(4)]
SENDERS = [keccak(coincurve.PrivateKey(k).public_key.format(compressed=False)[1:])[12:] for k in KEYS]
COINBASE = b"\xc0" * 20


def fresh_state() -> FlatState:
    state = FlatState()
    for address in SENDERS:
        state.set_balance(address, 10**21)
    state.set_balance(b"\x55" * 20, 1)      # an existing plain account
    state.set_code(b"\x66" * 20, b"\x00")   # has code: never the fast path
    state.take_changes()
    return state


def env(base_fee: int, coinbase: bytes) -> BlockEnv:
    return BlockEnv(number=1, timestamp=1_700_000_000, base_fee=base_fee, gas_limit=30_000_000,
                    coinbase=coinbase, mix_hash=b"\x00" * 32, prev_hashes=[b"\x11" * 32], chain_id=CHAIN_ID)


RECIPIENTS = [b"\x55" * 20, b"\x77" * 20, b"\x66" * 20, COINBASE, b"\x00" * 19 + b"\x05", SENDERS[1]]

tx_strategy = st.tuples(
    st.integers(0, len(KEYS) - 1),                 # sender
    st.sampled_from(RECIPIENTS),
    st.sampled_from([0, 1, 10**18, 10**22]),       # value (the last one cannot be paid)
    st.sampled_from(["legacy", "dynamic", "access"]),
    st.integers(0, 3),                             # tip in gwei
    st.sampled_from([21_000, 30_000, 20_000]),     # gas limit (20k is below intrinsic)
)


def sign(spec, nonce: int) -> bytes:
    sender, to, value, kind, tip, gas = spec
    tx = {"chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + to.hex(), "value": value, "gas": gas}
    if kind == "dynamic":
        tx.update(type=2, maxFeePerGas=5 * 10**9, maxPriorityFeePerGas=tip * 10**9)
    else:
        tx["gasPrice"] = (1 + tip) * 10**9
        if kind == "access":
            tx["type"] = 1
    from eth_utils import to_checksum_address
    tx["to"] = to_checksum_address(tx["to"])
    return bytes(Account.sign_transaction(tx, KEYS[sender]).raw_transaction)


def run(specs, fast: bool, coinbase: bytes, base_fee: int):
    state = fresh_state()
    executor = Executor(state, env(base_fee, coinbase), fast_paths=fast)
    nonces = [0] * len(KEYS)
    outcomes, gas = [], 0
    for spec in specs:
        tx = decode_raw_transaction(sign(spec, nonces[spec[0]]), CHAIN_ID)
        try:
            receipt = executor.execute(tx, gas)
        except TxInvalid as exc:
            outcomes.append(("invalid", exc.message))
            continue
        nonces[spec[0]] += 1
        gas = receipt.cumulative_gas_used
        outcomes.append((receipt.status, receipt.gas_used, receipt.cumulative_gas_used,
                         receipt.effective_gas_price, receipt.logs, receipt.consensus_encoding()))
    # The whole resulting state, not just its root (change lists may differ in touched-but-absent keys).
    return outcomes, state.state_root(), list(state.iter_accounts()), list(state.iter_storage())


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(tx_strategy, min_size=1, max_size=12),
       coinbase=st.sampled_from([COINBASE, b"\x55" * 20, b"\x00" * 20]),
       base_fee=st.sampled_from([1, 7, 10**9]))
def test_transfer_fast_path_equals_the_interpreter(specs, coinbase, base_fee):
    assert run(specs, True, coinbase, base_fee) == run(specs, False, coinbase, base_fee)


def test_fast_path_is_taken_for_plain_transfers_only():
    state = fresh_state()
    executor = Executor(state, env(10**9, COINBASE))
    assert executor._is_plain_recipient(b"\x77" * 20)
    assert not executor._is_plain_recipient(b"\x66" * 20)          # has code
    assert not executor._is_plain_recipient(b"\x00" * 19 + b"\x05")  # a precompile

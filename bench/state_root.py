"""State and root costs: Blixt's flat state and tries against py-evm's AccountDB and HexaryTrie.

Measures, single-threaded, medians of several runs:

1. state root per modified account: `changed` of `accounts` accounts get a new balance,
   then FlatState.state_root() vs py-evm AccountDB.make_state_root();
2. ordered_trie_root per item vs HexaryTrie (tx/receipt roots), `items` values;
3. per-op cost of set_balance / set_nonce / get_balance through FlatState, through
   FlatAccountDB (what py-evm calls), and through py-evm's AccountDB;
4. apply_transaction of a plain transfer: BlixtState (sender primed, and not) vs stock
   PragueState over AccountDB (sender recovered by py-evm, and primed).

Prints a table and, last, one JSON line. Usage:
    .venv/bin/python bench/state_root.py [--accounts 100000] [--changed 20000]
        [--runs 5] [--evm-runs 3] [--items 1000] [--transfers 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import rlp  # noqa: E402
from eth.constants import BLANK_ROOT_HASH  # noqa: E402
from eth.db.account import AccountDB  # noqa: E402
from eth.db.atomic import AtomicDB  # noqa: E402
from eth.vm.execution_context import ExecutionContext  # noqa: E402
from eth.vm.forks.prague.state import PragueState  # noqa: E402
from eth.vm.forks.prague.transactions import PragueTransactionBuilder  # noqa: E402
from eth_keys import keys  # noqa: E402
from trie import HexaryTrie  # noqa: E402

from node.chain.state import BlixtState, FlatAccountDB, FlatState, prime_sender  # noqa: E402
from node.chain.trie import ordered_trie_root  # noqa: E402

warnings.simplefilter("ignore")
CHAIN_ID = 31337


def median_of(runs: int, measure) -> float:
    return statistics.median(measure() for _ in range(runs))


# ----------------------------------------------------------------- state root


def flat_state_root_per_account(addresses, changed: int, runs: int) -> float:
    flat = FlatState()
    for i, address in enumerate(addresses):
        flat.set_balance(address, 10**18 + i)
        flat.set_nonce(address, 1)
    flat.state_root()
    rng = random.Random(1)

    def once() -> float:
        chosen = rng.sample(addresses, changed)
        for address in chosen:
            flat.set_balance(address, flat.get_balance(address) + 1)
        start = time.perf_counter()
        flat.state_root()
        return (time.perf_counter() - start) / changed

    return median_of(runs, once)


def evm_state_root_per_account(addresses, changed: int, runs: int) -> float:
    account_db = AccountDB(AtomicDB())
    for i, address in enumerate(addresses):
        account_db.set_balance(address, 10**18 + i)
        account_db.set_nonce(address, 1)
    account_db.persist()
    rng = random.Random(1)

    def once() -> float:
        chosen = rng.sample(addresses, changed)
        for address in chosen:
            account_db.set_balance(address, account_db.get_balance(address) + 1)
        start = time.perf_counter()
        account_db.make_state_root()
        elapsed = time.perf_counter() - start
        account_db.persist()
        return elapsed / changed

    return median_of(runs, once)


# -------------------------------------------------------------- ordered roots


def ordered_root_per_item(items: int, runs: int):
    rng = random.Random(2)
    values = [rng.randbytes(rng.randrange(100, 200)) for _ in range(items)]

    def ours() -> float:
        start = time.perf_counter()
        ordered_trie_root(values)
        return (time.perf_counter() - start) / items

    def hexary() -> float:
        start = time.perf_counter()
        reference = HexaryTrie({})
        for index, value in enumerate(values):
            reference[rlp.encode(index)] = value
        reference.root_hash
        return (time.perf_counter() - start) / items

    assert ordered_trie_root(values) == _hexary_root(values)
    return median_of(runs, ours), median_of(runs, hexary)


def _hexary_root(values):
    reference = HexaryTrie({})
    for index, value in enumerate(values):
        reference[rlp.encode(index)] = value
    return reference.root_hash


# ------------------------------------------------------------------- per op


def per_op_costs(runs: int):
    addresses = [bytes([i % 256, i // 256]) * 10 for i in range(1000)]
    flat = FlatState()
    adapter = FlatAccountDB(FlatState())
    evm_db = AccountDB(AtomicDB())
    for address in addresses:
        flat.set_balance(address, 1)
        adapter.set_balance(address, 1)
        evm_db.set_balance(address, 1)
    loops = 50

    def timed(operation) -> float:
        def once() -> float:
            start = time.perf_counter()
            for _ in range(loops):
                for address in addresses:
                    operation(address)
            return (time.perf_counter() - start) / (loops * len(addresses))
        return median_of(runs, once)

    def timed_evm(operation) -> float:
        def once() -> float:
            start = time.perf_counter()
            for _ in range(5):
                for address in addresses:
                    operation(address)
            return (time.perf_counter() - start) / (5 * len(addresses))
        return median_of(runs, once)

    def with_checkpoint(measure):
        # Inside a transaction writes are journaled: measure that too.
        checkpoint = flat.checkpoint()
        adapter_checkpoint = adapter.record()
        try:
            return measure()
        finally:
            flat.commit(checkpoint)
            adapter.commit(adapter_checkpoint)

    return {
        "flat.set_balance": timed(lambda a: flat.set_balance(a, 5)),
        "flat.set_balance (journaled)": with_checkpoint(lambda: timed(lambda a: flat.set_balance(a, 6))),
        "flat.set_nonce": timed(lambda a: flat.set_nonce(a, 5)),
        "flat.get_balance": timed(flat.get_balance),
        # Two writes per call so that neither is the no-op "same value" path.
        "flat.set_storage": timed(lambda a: (flat.set_storage(a, 1, 7), flat.set_storage(a, 1, 8))) / 2,
        "adapter.set_balance": timed(lambda a: adapter.set_balance(a, 5)),
        "adapter.set_balance (journaled)": with_checkpoint(lambda: timed(lambda a: adapter.set_balance(a, 6))),
        "adapter.set_nonce": timed(lambda a: adapter.set_nonce(a, 5)),
        "adapter.get_balance": timed(adapter.get_balance),
        "py-evm AccountDB.set_balance": timed_evm(lambda a: evm_db.set_balance(a, 5)),
        "py-evm AccountDB.set_nonce": timed_evm(lambda a: evm_db.set_nonce(a, 5)),
        "py-evm AccountDB.get_balance": timed_evm(evm_db.get_balance),
    }


# --------------------------------------------------------------- transfers


def context() -> ExecutionContext:
    return ExecutionContext(
        coinbase=b"\xc0" * 20, timestamp=1_700_000_000, block_number=1, difficulty=0,
        mix_hash=b"\x00" * 32, gas_limit=10**10, prev_hashes=(), chain_id=CHAIN_ID,
        base_fee_per_gas=7, excess_blob_gas=0,
    )


def signed_transfers(count: int):
    senders = [keys.PrivateKey(bytes([i + 1]) * 32) for i in range(20)]
    recipients = [bytes([0x70, i]) * 10 for i in range(50)]
    nonces = [0] * len(senders)
    encoded = []
    for i in range(count):
        index = i % len(senders)
        unsigned = PragueTransactionBuilder.new_unsigned_dynamic_fee_transaction(
            chain_id=CHAIN_ID, nonce=nonces[index], max_priority_fee_per_gas=1,
            max_fee_per_gas=100, gas=21_000, to=recipients[i % len(recipients)], value=1,
            data=b"", access_list=[])
        nonces[index] += 1
        tx = unsigned.as_signed_transaction(senders[index])
        encoded.append((tx.encode(), senders[index].public_key.to_canonical_address()))
    funded = [key.public_key.to_canonical_address() for key in senders] + recipients + [b"\xc0" * 20]
    return encoded, funded


def apply_transfer_costs(count: int, runs: int):
    encoded, funded = signed_transfers(count)

    def run(make_state, prime: bool) -> float:
        state = make_state()
        for address in funded:
            state.set_balance(address, 10**24)
        state.lock_changes()
        transactions = [PragueTransactionBuilder.decode(raw) for raw, _ in encoded]
        if prime:
            for tx, (_, sender) in zip(transactions, encoded):
                prime_sender(tx, sender)
        start = time.perf_counter()
        for tx in transactions:
            state.lock_changes()
            computation = state.apply_transaction(tx)
            assert computation.is_success
        return (time.perf_counter() - start) / count

    def stock_state():
        state = PragueState(AtomicDB(), context(), BLANK_ROOT_HASH)
        return state

    def blixt_state():
        return BlixtState(FlatAccountDB(FlatState()), context())

    return {
        "BlixtState, sender primed": median_of(runs, lambda: run(blixt_state, True)),
        "BlixtState, py-evm recovers": median_of(runs, lambda: run(blixt_state, False)),
        "stock PragueState, sender primed": median_of(runs, lambda: run(stock_state, True)),
        "stock PragueState, py-evm recovers": median_of(runs, lambda: run(stock_state, False)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--evm-runs", type=int, default=3)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--transfers", type=int, default=1000)
    args = parser.parse_args()

    rng = random.Random(0)
    addresses = [rng.randbytes(20) for _ in range(args.accounts)]
    results = {}
    results["state_root_us_per_changed_account"] = {
        "flat": flat_state_root_per_account(addresses, args.changed, args.runs) * 1e6,
        "py-evm": evm_state_root_per_account(addresses, args.changed, args.evm_runs) * 1e6,
    }
    ours, hexary = ordered_root_per_item(args.items, args.runs)
    results["ordered_root_us_per_item"] = {"ordered_trie_root": ours * 1e6, "HexaryTrie": hexary * 1e6}
    results["op_ns"] = {name: cost * 1e9 for name, cost in per_op_costs(args.runs).items()}
    results["transfer_us"] = {
        name: cost * 1e6 for name, cost in apply_transfer_costs(args.transfers, args.runs).items()
    }
    results["params"] = vars(args)

    root = results["state_root_us_per_changed_account"]
    print(f"state root, {args.changed} of {args.accounts} accounts changed (µs per changed account)")
    print(f"  FlatState.state_root            {root['flat']:10.1f}")
    print(f"  py-evm AccountDB.make_state_root{root['py-evm']:10.1f}   ({root['py-evm'] / root['flat']:.1f}x)")
    ordered = results["ordered_root_us_per_item"]
    print(f"ordered trie root, {args.items} items of 100-200 bytes (µs per item)")
    print(f"  ordered_trie_root               {ordered['ordered_trie_root']:10.1f}")
    print(f"  HexaryTrie                      {ordered['HexaryTrie']:10.1f}   "
          f"({ordered['HexaryTrie'] / ordered['ordered_trie_root']:.1f}x)")
    print("per operation (ns)")
    for name, cost in results["op_ns"].items():
        print(f"  {name:34s}{cost:10.0f}")
    print(f"apply_transaction, plain transfer, {args.transfers} txs (µs per tx)")
    for name, cost in results["transfer_us"].items():
        print(f"  {name:34s}{cost:10.1f}")
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()

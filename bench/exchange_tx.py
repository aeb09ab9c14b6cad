"""Executor-only cost of exchange order transactions: the fast path vs py-evm.

    python bench/exchange_tx.py [--orders N] [--runs R]
    python bench/exchange_tx.py --persistence     # what keeping the engine costs

Pre-signs N placeLimit transactions (resting sells over 50 price levels, from 4
senders) and executes them on a head state through node.chain.execution.Executor,
once with the fast path (a tx straight to 0x…0800 skips the interpreter) and once
through py-evm's precompile table, interleaved, R runs each. No RPC, no sender
recovery (done at ingress, off this path), no sealing: this is the main thread's
execution cost of one order. Prints medians and the ratio, last one JSON line.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import coincurve  # noqa: E402
from eth_abi import encode  # noqa: E402
from eth_account import Account  # noqa: E402
from eth_utils import to_checksum_address  # noqa: E402

from exchange import Engine, load  # noqa: E402
from node.chain.execution import BlockEnv, Executor  # noqa: E402
from node.chain.state import FlatState  # noqa: E402
from node.chain.transactions import decode_raw_transaction, keccak  # noqa: E402
from node.node import default_exchange_table  # noqa: E402
from precompiles.exchange import EXCHANGE_ADDRESS, EXCHANGE_CODE, ExchangeRuntime  # noqa: E402

CHAIN_ID = 31337
KEYS = [bytes([i + 1]) * 32 for i in range(4)]
SENDERS = [keccak(coincurve.PrivateKey(k).public_key.format(compressed=False)[1:])[12:] for k in KEYS]
PRICE, LOT = 3_000_000, 10**15


def selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


def signed(key: bytes, nonce: int, data: bytes, value: int = 0):
    tx = {"chainId": CHAIN_ID, "nonce": nonce, "to": to_checksum_address(EXCHANGE_ADDRESS), "value": value,
          "gas": 200_000, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9, "data": data, "type": 2}
    return decode_raw_transaction(bytes(Account.sign_transaction(tx, key).raw_transaction), CHAIN_ID)


def prepare(orders: int):
    deposits = [signed(k, 0, selector("deposit(uint256,uint256)") + encode(["uint256", "uint256"], [1, 10**21]),
                       value=10**21) for k in KEYS]
    place = selector("placeLimit(uint256,uint8,uint256,uint256)")
    txs = []
    for i in range(orders):
        sender = i % len(KEYS)
        data = place + encode(["uint256", "uint8", "uint256", "uint256"], [0, 1, PRICE + 10 * (i % 50), LOT])
        txs.append(signed(KEYS[sender], 1 + i // len(KEYS), data))
    return deposits, txs


def run(deposits, txs, fast: bool) -> float:
    state = FlatState()
    for address in SENDERS:
        state.set_balance(address, 10**24)
    state.set_nonce(EXCHANGE_ADDRESS, 1)
    state.set_code(EXCHANGE_ADDRESS, EXCHANGE_CODE)
    state.exchange = ExchangeRuntime(Engine(load(default_exchange_table())), native_asset=1)
    env = BlockEnv(number=1, timestamp=1_700_000_000, base_fee=10**9, gas_limit=10**12,
                   coinbase=b"\xc0" * 20, mix_hash=b"\x00" * 32, prev_hashes=[b"\x11" * 32], chain_id=CHAIN_ID)
    executor = Executor(state, env, fast_paths=fast)
    gas = 0
    for tx in deposits:
        gas = executor.execute(tx, gas).cumulative_gas_used
    started = time.perf_counter()
    for tx in txs:
        receipt = executor.execute(tx, gas)
        gas = receipt.cumulative_gas_used
    elapsed = time.perf_counter() - started
    assert receipt.status == 1
    return len(txs) / elapsed


def persistence() -> None:
    """Engine.to_bytes() at 10k and 100k resting orders, and the per-block command
    log's encode/decode for 10,000 commands (medians of 3)."""
    from exchange import Context, Deposit, PlaceOrder, Side
    from precompiles.exchange import decode_commands, encode_commands

    engine = Engine(load(default_exchange_table()))
    ctx = Context(1, 1_000)
    for a in range(200):
        account = a.to_bytes(20, "big")
        engine.apply(Deposit(account, 0, 10**15), ctx)
        engine.apply(Deposit(account, 1, 10**24), ctx)
    placed = 0
    out = {}
    for target in (10_000, 100_000):
        while placed < target:
            side = Side.BUY if placed % 2 else Side.SELL
            offset = 10 * (1 + placed % 400)
            price = PRICE - offset if side == Side.BUY else PRICE + offset
            engine.apply(PlaceOrder((placed % 200).to_bytes(20, "big"), 0, side, price, LOT), ctx)
            placed += 1
        times = []
        for _ in range(3):
            started = time.perf_counter()
            data = engine.to_bytes()
            times.append(time.perf_counter() - started)
        out[f"to_bytes_ms_{target}"] = round(statistics.median(times) * 1000, 1)
        print(f"to_bytes with {target:,} resting orders: {out[f'to_bytes_ms_{target}']} ms, {len(data) / 1e6:.1f} MB")
    commands = [(ctx, PlaceOrder(b"\x01" * 20, 0, Side.BUY, PRICE, LOT)) for _ in range(10_000)]
    enc, dec = [], []
    for _ in range(3):
        started = time.perf_counter()
        data = encode_commands(commands)
        enc.append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_commands(data)
        dec.append(time.perf_counter() - started)
    out["encode_ms_10k_commands"] = round(statistics.median(enc) * 1000, 1)
    out["decode_ms_10k_commands"] = round(statistics.median(dec) * 1000, 1)
    print(f"command log, 10,000 commands: encode {out['encode_ms_10k_commands']} ms, "
          f"decode {out['decode_ms_10k_commands']} ms, {len(data) / 1e6:.2f} MB")
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--persistence", action="store_true")
    args = parser.parse_args()
    if args.persistence:
        persistence()
        return
    deposits, txs = prepare(args.orders)
    gc.freeze()
    results = {"fast": [], "evm": []}
    for _ in range(args.runs):
        for name, fast in (("fast", True), ("evm", False)):
            results[name].append(run(deposits, txs, fast))
    fast, evm = statistics.median(results["fast"]), statistics.median(results["evm"])
    print(f"fast path: {fast:,.0f} orders/s ({1e6 / fast:.1f} µs/order), median of {args.runs}")
    print(f"py-evm   : {evm:,.0f} orders/s ({1e6 / evm:.1f} µs/order)")
    print(f"ratio fast/py-evm: {fast / evm:.2f}")
    print(json.dumps({"fast_orders_per_s": round(fast), "evm_orders_per_s": round(evm),
                      "fast_us_per_order": round(1e6 / fast, 1), "ratio": round(fast / evm, 2)}))


if __name__ == "__main__":
    main()

"""Exchange engine benchmark: throughput, latency and memory of exchange.Engine.

    python bench/engine.py [--commands N] [--seed S] [--no-journal] [--skip-memory]
                           [--gc-gen0 N]

Workload: 1,000 funded accounts, 4 spot markets, books pre-filled with resting
orders, then a stream of about 60 % limit orders that rest (1..50 ticks off the
mid), 30 % cancels of earlier orders (some already filled: those rejections
count as commands) and 10 % marketable IOC orders that sweep the best levels.
Every command runs the way the chain will run it: inside checkpoint() and
commit() (--no-journal drops that), and state_digest() is taken every
--digest-every commands (default 10,000: one sealed block, about 1 s, at the
chain's ~10k transactions/s); its time is in the throughput, not in the
per-command latencies.

The collector is set up the way the node runs it (PERFORMANCE.md, memory):
``gc.freeze()`` after start-up and a generation-0 threshold of --gc-gen0
allocations (default 50,000; 700 is CPython's default). Resting orders are
linked in cycles, so the collector keeps re-walking them otherwise.

The memory phase runs in a child process (so the throughput phase's garbage is
not counted) and rests 1,000,000 orders (250 per account per market) and
reports the child's resident set size.

The command stream comes from random.Random(seed): the benchmark may use
randomness, the engine may not. Prints human lines, then last one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import exchange as ex  # noqa: E402

ACCOUNTS = 1000
CONTEXT = ex.Context(block_number=1, timestamp=1_700_000_000)


def bench_config(max_open: int) -> ex.ExchangeConfig:
    """The default config plus a fourth asset and two more spot markets, so
    the benchmark has 4 spot markets (perps trade only from part 2)."""
    doc = tomllib.loads((ROOT / "exchange" / "default_config.toml").read_text())
    table = doc["exchange"]
    table["max_open_orders_per_account"] = max_open
    table["assets"].append({"id": 3, "symbol": "LINK", "decimals": 18})
    spot = [m for m in table["markets"] if m["kind"] == "spot"]
    eth = spot[0]
    spot.append(dict(eth, id=4, symbol="ETH-WBTC", quote="WBTC", tick_size=1, min_notional=1000))
    spot.append(dict(eth, id=5, symbol="LINK-USDC", base="LINK", lot_size=10**17, tick_size=10,
                     min_notional=100_000))
    table["markets"] = spot
    return ex.load(doc)


# mid price per market in price units (quote units per lot), on the tick grid
MIDS = {0: 3_000_000, 1: 6_000_000, 4: 5_000, 5: 1_500_000}


def addresses() -> list[bytes]:
    return [(i + 1).to_bytes(20, "big") for i in range(ACCOUNTS)]


def fund(engine: ex.Engine, accounts: list[bytes]) -> None:
    for a in accounts:
        for asset in range(4):
            engine.apply(ex.Deposit(a, asset, 10**30), CONTEXT)


def passive_order(rng: random.Random, account: bytes, market: ex.MarketConfig) -> ex.PlaceOrder:
    side = ex.Side.BUY if rng.random() < 0.5 else ex.Side.SELL
    offset = rng.randint(1, 50) * market.tick_size
    mid = MIDS[market.id]
    price = mid - offset if side == ex.Side.BUY else mid + offset
    return ex.PlaceOrder(account, market.id, side, price, rng.randint(1, 10) * market.lot_size)


def make_stream(rng: random.Random, n: int, accounts: list[bytes], markets, first_id: int):
    """(commands, expected kinds). Order ids are predicted: every PlaceOrder in
    this workload is accepted, and the engine numbers accepted orders 1, 2, ..."""
    commands = []
    live: list[tuple[bytes, int]] = []
    next_id = first_id
    for _ in range(n):
        r = rng.random()
        account = accounts[rng.randrange(ACCOUNTS)]
        market = markets[rng.randrange(len(markets))]
        if r < 0.30 and live:
            j = rng.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            owner, oid = live.pop()
            commands.append(ex.CancelOrder(owner, oid))
        elif r < 0.40:
            side = ex.Side.BUY if rng.random() < 0.5 else ex.Side.SELL
            mid = MIDS[market.id]
            bound = 60 * market.tick_size
            price = mid + bound if side == ex.Side.BUY else mid - bound
            commands.append(ex.PlaceOrder(account, market.id, side, price,
                                          rng.randint(1, 20) * market.lot_size,
                                          time_in_force=ex.TimeInForce.IOC))
            next_id += 1
        else:
            commands.append(passive_order(rng, account, market))
            live.append((account, next_id))
            next_id += 1
    return commands


def throughput(n: int, seed: int, journal: bool, digest_every: int, gc_gen0: int) -> dict:
    rng = random.Random(seed)
    engine = ex.Engine(bench_config(max_open=5000))
    accounts = addresses()
    fund(engine, accounts)
    markets = list(engine.config.markets)
    # Pre-fill: 20,000 resting orders per market.
    prefill = 0
    for market in markets:
        for _ in range(20_000):
            engine.apply(passive_order(rng, accounts[rng.randrange(ACCOUNTS)], market), CONTEXT)
            prefill += 1
    engine.state_digest()
    commands = make_stream(rng, n, accounts, markets, first_id=prefill + 1)
    gc.collect()
    gc.freeze()  # what start-up leaves behind is not young garbage (PERFORMANCE.md, memory)
    thresholds = gc.get_threshold()
    gc.set_threshold(gc_gen0, *thresholds[1:])

    apply = engine.apply
    checkpoint, commit = engine.checkpoint, engine.commit
    digest = engine.state_digest
    clock = time.perf_counter_ns
    ctx = CONTEXT
    Err = ex.ExchangeError
    latencies = [0] * n
    rejected = 0
    digest_ns = 0
    started = clock()
    for i, command in enumerate(commands):
        t0 = clock()
        if journal:
            cp = checkpoint()
            try:
                apply(command, ctx)
            except Err:
                rejected += 1
            commit(cp)
        else:
            try:
                apply(command, ctx)
            except Err:
                rejected += 1
        latencies[i] = clock() - t0
        if i % digest_every == digest_every - 1:
            d0 = clock()
            digest()
            digest_ns += clock() - d0
    elapsed = clock() - started
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    latencies.sort()
    report = engine.balance_report()
    problems = engine.audit()
    if not report.balanced or problems:
        raise SystemExit(f"engine invariants broken: {report} {problems[:5]}")
    return {
        "commands": n,
        "commands_per_s": round(n / (elapsed / 1e9)),
        "p50_us": round(latencies[n // 2] / 1000, 2),
        "p99_us": round(latencies[int(n * 0.99)] / 1000, 2),
        "p999_us": round(latencies[int(n * 0.999)] / 1000, 2),
        "max_us": round(latencies[-1] / 1000, 1),
        "rejected": rejected,
        "digest_every": digest_every,
        "digest_us_per_command": round(digest_ns / 1e3 / n, 3),
        "journal": journal,
        "gc_gen0": gc_gen0,
    }


def memory_child(orders: int) -> dict:
    """Rest ``orders`` orders and report this process's RSS."""
    rng = random.Random(7)
    per_account_market = orders // (ACCOUNTS * 4)
    engine = ex.Engine(bench_config(max_open=per_account_market * 4))
    accounts = addresses()
    fund(engine, accounts)
    markets = list(engine.config.markets)
    gc.freeze()
    started = time.perf_counter()
    placed = 0
    for account in accounts:
        for market in markets:
            mid = MIDS[market.id]
            for k in range(per_account_market):
                # Alternate sides, never crossing: every order rests.
                side = ex.Side.BUY if k % 2 == 0 else ex.Side.SELL
                offset = rng.randint(1, 2000) * market.tick_size
                price = mid - offset if side == ex.Side.BUY else mid + offset
                engine.apply(ex.PlaceOrder(account, market.id, side, price,
                                           rng.randint(1, 10) * market.lot_size), CONTEXT)
                placed += 1
    elapsed = time.perf_counter() - started
    digest_started = time.perf_counter()
    engine.state_digest()
    digest_s = time.perf_counter() - digest_started
    resting = sum(len(a.open_orders) for a in engine._accounts.values())
    return {"resting_orders": resting, "rss_bytes": rss_bytes(), "place_per_s": round(placed / elapsed),
            "full_digest_s": round(digest_s, 2)}


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-journal", action="store_true")
    parser.add_argument("--digest-every", type=int, default=10_000)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--gc-gen0", type=int, default=50_000,
                        help="generation-0 GC threshold during the timed phase (CPython default: 700)")
    parser.add_argument("--memory-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return

    result = throughput(args.commands, args.seed, journal=not args.no_journal, digest_every=args.digest_every,
                        gc_gen0=args.gc_gen0)
    print(f"throughput: {result['commands_per_s']:,} commands/s, p50 {result['p50_us']} us, "
          f"p99 {result['p99_us']} us, p99.9 {result['p999_us']} us, max {result['max_us']} us "
          f"({result['rejected']} rejected, journal={result['journal']})", flush=True)
    if not args.skip_memory:
        child = subprocess.run([sys.executable, __file__, "--memory-child", "1000000"],
                               capture_output=True, text=True, timeout=900, check=True)
        memory = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"memory: {memory['resting_orders']:,} resting orders, RSS {memory['rss_bytes'] / 2**20:.0f} MiB, "
              f"placed at {memory['place_per_s']:,}/s, full digest {memory['full_digest_s']} s", flush=True)
        result["rss_bytes_1m_orders"] = memory["rss_bytes"]
        result["resting_orders"] = memory["resting_orders"]
        result["place_per_s_1m"] = memory["place_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Exchange engine benchmark: throughput, latency and memory of exchange.Engine.

    python bench/engine.py [--commands N] [--seed S] [--no-journal] [--skip-memory]
                           [--gc-gen0 N]
    python bench/engine.py --portfolio [--commands N] [--seed S] [--block-commands N]

--portfolio (issue 6; the default spot run above is unchanged): the default
markets (spot, perps, lending books) with oracle prices; 1,000 accounts each
holding USDC / WETH / WBTC, perp positions on ETH-PERP and BTC-PERP and a loan
(half lend USDC, half borrow it); then a stream in which every command but the
cancels and passive spot orders runs the full pre-trade portfolio check:
perp orders (resting and taking), spot buys that exceed the free balance and
borrow automatically from USDC-LEND, borrows on USDC-LEND, withdrawals by
accounts with debt, cancels; a block every --block-commands commands
(10,000: one 1 s block at the chain's ~10k commands/s), sealed as the chain
seals it - the state digest - and the next block begun with its Tick (the
per-block hooks: funding, maturities, the liquidation index's re-banding).
--digest-every is for the spot run. Then 10,000
accounts with perp exposure and one SetOraclePrice through Engine.apply,
timed (whatever the engine re-evaluates on an oracle move), beside the time a
full re-evaluation of every exposed account's margin takes.

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
``gc.freeze()`` after start-up and node/cli.py's thresholds (GC_THRESHOLDS:
a generation-0 threshold of 50,000 allocations - --gc-gen0 overrides it; 700
is CPython's default - and the older generations' 20 and 100). Resting orders
are linked in cycles, so the collector keeps re-walking them otherwise.

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
import random
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import exchange as ex  # noqa: E402
from node.cli import GC_THRESHOLDS  # noqa: E402  (the collector's settings in the node)

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
    gc.set_threshold(gc_gen0, *GC_THRESHOLDS[1:])

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
        **_rates(n, elapsed, latencies),
        "rejected": rejected,
        "digest_every": digest_every,
        "digest_us_per_command": round(digest_ns / 1e3 / n, 3),
        "journal": journal,
        "gc_gen0": gc_gen0,
    }


# ==== --portfolio ===========================================================

P_ETH_USDC, P_ETH_PERP, P_BTC_PERP, P_USDC_LEND = 0, 2, 3, 4
P_USDC, P_WETH, P_WBTC = 0, 1, 2
USD = 10**6
# per-lot prices at the oracle: 3,000 USDC/WETH (lot 0.001), 60,000 USDC/WBTC (lot 0.0001)
P_MIDS = {P_ETH_USDC: 3_000_000, P_ETH_PERP: 3_000_000, P_BTC_PERP: 6_000_000}


def _rates(n: int, elapsed_ns: int, latencies: list) -> dict:
    """Throughput and the latency percentiles of ``n`` commands (``latencies`` sorted, ns)."""
    return {
        "commands": n,
        "commands_per_s": round(n / (elapsed_ns / 1e9)),
        "p50_us": round(latencies[n // 2] / 1000, 2),
        "p99_us": round(latencies[int(n * 0.99)] / 1000, 2),
        "p999_us": round(latencies[int(n * 0.999)] / 1000, 2),
        "max_us": round(latencies[-1] / 1000, 1),
    }


def portfolio_engine(accounts: list[bytes], ctx: ex.Context) -> ex.Engine:
    """Default config, oracle prices, and every account with several holdings."""
    doc = tomllib.loads((ROOT / "exchange" / "default_config.toml").read_text())
    doc["exchange"]["max_open_orders_per_account"] = 5000
    engine = ex.Engine(ex.load(doc))
    cfg = engine.config
    apply = engine.apply
    apply(ex.SetOraclePrice(cfg.oracle, P_WETH, 3000 * USD), ctx)
    apply(ex.SetOraclePrice(cfg.oracle, P_WBTC, 60_000 * USD), ctx)
    lender = b"\x11" * 20  # deep USDC offers for automatic borrowing, 5 rate levels
    apply(ex.Deposit(lender, P_USDC, 10**15), ctx)
    for k in range(5):
        apply(ex.PlaceOrder(lender, P_USDC_LEND, 1, 50_000_000 + k * 1_000_000, 10**14), ctx)
    for i, a in enumerate(accounts):
        apply(ex.Deposit(a, P_USDC, 50_000 * USD), ctx)
        apply(ex.Deposit(a, P_WETH, 10 * 10**18), ctx)
        apply(ex.Deposit(a, P_WBTC, 10**8), ctx)
    # Perp positions: neighbours trade with each other (1 WETH, 0.05 WBTC).
    for i in range(0, len(accounts) - 1, 2):
        a, b = accounts[i], accounts[i + 1]
        for market, qty in ((P_ETH_PERP, 1000 * 10**15), (P_BTC_PERP, 500 * 10**4)):
            apply(ex.PlaceOrder(a, market, 0, P_MIDS[market], qty), ctx)
            apply(ex.PlaceOrder(b, market, 1, P_MIDS[market], qty, time_in_force=ex.TimeInForce.IOC), ctx)
    # Loans: even accounts offer 5,000 USDC, odd ones borrow 4,000.
    for i in range(0, len(accounts) - 1, 2):
        apply(ex.PlaceOrder(accounts[i], P_USDC_LEND, 1, 40_000_000, 5000 * USD), ctx)
        apply(ex.PlaceOrder(accounts[i + 1], P_USDC_LEND, 0, 40_000_000, 4000 * USD,
                            time_in_force=ex.TimeInForce.IOC), ctx)
    # Spend most of the borrowers' free USDC so their spot buys borrow.
    for i in range(1, len(accounts), 2):
        apply(ex.Withdraw(accounts[i], P_USDC, engine.balances(accounts[i])[P_USDC][0] - 200 * USD), ctx)
    return engine


def portfolio_stream(rng: random.Random, n: int, accounts: list[bytes], block_commands: int) -> list:
    """Commands of the --portfolio run; cancels name orders by client id; a Tick
    (a new block, one second later) every ``block_commands`` commands."""
    commands = []
    live: list[tuple[bytes, int]] = []
    next_cid = [1] * len(accounts)
    tif_ioc = ex.TimeInForce.IOC
    for i in range(n):
        if i % block_commands == block_commands - 1:
            commands.append(ex.Tick())
            continue
        r = rng.random()
        k = rng.randrange(len(accounts))
        a = accounts[k]
        if r < 0.40 and live:  # about as many cancels as resting orders: open orders stay level
            j = rng.randrange(len(live))
            live[j], live[-1] = live[-1], live[j]
            owner, cid = live.pop()
            commands.append(ex.CancelByClientId(owner, cid))
        elif r < 0.70:  # perp order resting off the mid: the portfolio check
            market = P_ETH_PERP if rng.random() < 0.5 else P_BTC_PERP
            side = rng.randrange(2)
            offset = rng.randint(1, 50) * 10
            price = P_MIDS[market] - offset if side == 0 else P_MIDS[market] + offset
            lot = 10**15 if market == P_ETH_PERP else 10**4
            cid = next_cid[k]
            next_cid[k] += 1
            commands.append(ex.PlaceOrder(a, market, side, price, rng.randint(1, 20) * lot, client_order_id=cid))
            live.append((a, cid))
        elif r < 0.75:  # perp IOC that takes
            market = P_ETH_PERP if rng.random() < 0.5 else P_BTC_PERP
            side = rng.randrange(2)
            price = P_MIDS[market] + 600 if side == 0 else P_MIDS[market] - 600
            lot = 10**15 if market == P_ETH_PERP else 10**4
            commands.append(ex.PlaceOrder(a, market, side, price, rng.randint(1, 10) * lot, time_in_force=tif_ioc))
        elif r < 0.80:  # spot buy by a borrower: more than its free USDC, borrows
            kb = k | 1 if (k | 1) < len(accounts) else 1  # odd accounts borrow
            b = accounts[kb]
            cid = next_cid[kb]
            next_cid[kb] += 1
            price = P_MIDS[P_ETH_USDC] - rng.randint(1, 50) * 10
            commands.append(ex.PlaceOrder(b, P_ETH_USDC, 0, price, rng.randint(50, 150) * 10**15,
                                          client_order_id=cid))
            live.append((b, cid))
        elif r < 0.83:  # borrow on the lending book
            commands.append(ex.PlaceOrder(a, P_USDC_LEND, 0, 60_000_000, rng.randint(1, 100) * USD,
                                          time_in_force=tif_ioc))
        elif r < 0.88:  # withdrawal by an account with debt or positions
            commands.append(ex.Withdraw(a, P_WETH, rng.randint(1, 10) * 10**15))
        else:  # passive spot order (part 1's fast path)
            side = rng.randrange(2)
            offset = rng.randint(1, 50) * 10
            price = P_MIDS[P_ETH_USDC] - offset if side == 0 else P_MIDS[P_ETH_USDC] + offset
            cid = next_cid[k]
            next_cid[k] += 1
            commands.append(ex.PlaceOrder(a, P_ETH_USDC, side, price, rng.randint(1, 10) * 10**15,
                                          client_order_id=cid))
            live.append((a, cid))
    return commands


def portfolio_run(n: int, seed: int, gc_gen0: int, oracle_accounts: int,
                  block_commands: int) -> dict:
    rng = random.Random(seed)
    ctx = ex.Context(block_number=1, timestamp=1_700_000_000)
    accounts = addresses()
    engine = portfolio_engine(accounts, ctx)
    engine.state_digest()
    commands = portfolio_stream(rng, n, accounts, block_commands)
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(gc_gen0, *GC_THRESHOLDS[1:])
    apply = engine.apply
    checkpoint, commit = engine.checkpoint, engine.commit
    digest = engine.state_digest
    clock = time.perf_counter_ns
    Err = ex.ExchangeError
    Tick, Fill = ex.Tick, ex.Fill  # locals: the loop's own cost stays out of the engine's figure
    latencies = [0] * n
    rejected: dict = {}
    kinds: dict = {}
    borrows = 0
    block = 1
    now = ctx.timestamp
    tick_ns = []  # the per-block hooks (funding, margin, maturities, re-banding), apart
    started = clock()
    for i, command in enumerate(commands):
        tick = command.__class__ is Tick
        if tick:
            # The block ends: the chain seals it (the digest), then the next
            # block's first command runs the Tick (node/chain.py's order).
            digest()
            block += 1
            now += 1
            ctx = ex.Context(block, now)
        t0 = clock()
        cp = checkpoint()
        try:
            _, events = apply(command, ctx)
        except Err as e:
            rejected[e.reason.name] = rejected.get(e.reason.name, 0) + 1
            events = ()
        commit(cp)
        latencies[i] = clock() - t0
        if tick:
            tick_ns.append(latencies[i])
        elif events and events[0].__class__ is Fill and events[0].market == P_USDC_LEND:
            borrows += 1
    elapsed = clock() - started
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    for c in commands:
        kind = c.__class__.__name__
        if kind == "PlaceOrder":
            kind += {P_ETH_USDC: "-spot", P_ETH_PERP: "-perp", P_BTC_PERP: "-perp", P_USDC_LEND: "-lend"}[c.market]
        kinds[kind] = kinds.get(kind, 0) + 1
    latencies.sort()
    report = engine.balance_report()
    problems = engine.audit() + engine.lending.audit()
    if not report.balanced or problems:
        raise SystemExit(f"engine invariants broken: {report} {problems[:5]}")
    loans = sum(len(engine._accounts[a].loans) for a in accounts)
    result = {
        "mode": "portfolio",
        **_rates(n, elapsed, latencies),
        "rejected": rejected,
        "kinds": kinds,
        "auto_borrows": borrows,
        "block_commands": block_commands,
        "ticks": len(tick_ns),
        "tick_ms_p50": round(sorted(tick_ns)[len(tick_ns) // 2] / 1e6, 2) if tick_ns else 0,
        "commands_per_s_without_ticks": round((n - len(tick_ns)) / ((elapsed - sum(tick_ns)) / 1e9)),
        "loans_held_by_accounts": loans,
    }
    result.update(oracle_update(oracle_accounts))
    return result


def oracle_update(n_accounts: int) -> dict:
    """``n_accounts`` accounts with perp exposure (and spot and a loan for
    half of them); time one SetOraclePrice through Engine.apply, and, beside
    it, a re-evaluation of every exposed account's margin (the work an
    update without an index would do)."""
    ctx = ex.Context(block_number=1, timestamp=1_700_000_000)
    accounts = [(i + 1).to_bytes(20, "big") for i in range(n_accounts)]
    engine = portfolio_engine(accounts, ctx)
    oracle = engine.config.oracle
    gc.collect()
    gc.freeze()
    times = []
    price = 3000 * USD
    for k in range(5):  # 1 % moves up and down
        price = price * (101 if k % 2 == 0 else 99) // 100
        cp = engine.checkpoint()
        t0 = time.perf_counter_ns()
        engine.apply(ex.SetOraclePrice(oracle, P_WETH, price), ctx)
        times.append(time.perf_counter_ns() - t0)
        engine.commit(cp)
    t0 = time.perf_counter_ns()
    below = 0
    for a in accounts:
        if engine.margin(a, ctx.timestamp, assume_orders=True).available_liq <= 0:
            below += 1
    full_ns = time.perf_counter_ns() - t0
    gc.unfreeze()
    times.sort()
    return {"oracle_update_ms_10k_accounts" if n_accounts == 10_000 else f"oracle_update_ms_{n_accounts}_accounts":
            round(times[len(times) // 2] / 1e6, 3),
            "oracle_accounts": n_accounts,
            "full_margin_reevaluation_ms": round(full_ns / 1e6, 1),
            "accounts_at_or_below_liq": below}


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
    parser.add_argument("--portfolio", action="store_true",
                        help="perps, loans and the portfolio check on 1,000 accounts; oracle update on 10,000")
    parser.add_argument("--oracle-accounts", type=int, default=10_000)
    parser.add_argument("--block-commands", type=int, default=10_000,
                        help="--portfolio: commands per block (a Tick starts each block); the default is "
                             "one 1 s block at the chain's ~10k commands/s; its digest is taken before the Tick")
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    if args.portfolio:
        n = args.commands if args.commands != 300_000 else 100_000
        result = portfolio_run(n, args.seed, args.gc_gen0, args.oracle_accounts,
                               args.block_commands)
        print(f"portfolio: {result['commands_per_s']:,} commands/s, p50 {result['p50_us']} us, "
              f"p99 {result['p99_us']} us, p99.9 {result['p999_us']} us, max {result['max_us']} us; "
              f"{result['auto_borrows']} automatic borrows; rejected {result['rejected']}", flush=True)
        print(f"oracle update with {result['oracle_accounts']:,} exposed accounts: "
              f"{result.get('oracle_update_ms_10k_accounts')} ms through Engine.apply; a full margin "
              f"re-evaluation of all of them takes {result['full_margin_reevaluation_ms']} ms", flush=True)
        print(json.dumps(result))
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

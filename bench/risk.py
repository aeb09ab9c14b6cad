"""Portfolio risk model benchmark (exchange/risk.py): evaluate and the oracle-update path.

    python bench/risk.py [--runs N] [--accounts N] [--evaluations N] [--seed S]

1. ``evaluate`` on portfolios of 5 holdings (USDC and WETH balances, an ETH
   perp, a USDC loan lent, a WETH borrow; and the same with the perp on BTC so
   two underlyings go through the correlated form), timed including what the
   engine adds per check: building the ``Portfolio`` from per-account tuples
   and the what-if of the order (one perp size changed). µs per check and the
   checks/s that gives (the engine's budget is 50,000 commands/s, ≤ 20 µs per
   command in all, so the risk part should take ≤ 8 µs).
2. ``ThresholdIndex`` for --accounts accounts (default 10,000) holding ETH
   spot, ETH and BTC perps and a borrow at random leverage: bands at the
   liquidation level built once (timed apart), then an ETH oracle move of
   -0.5 %, -2 %, +5 %, -10 %, -30 %: ``crossed`` + for each crossed account rebuild
   its portfolio at the new marks, ``evaluate``, ``safe_band`` and ``set`` -
   the whole work of an oracle update. Each move starts from the same freshly
   built index (and a gc.collect(), so the build's garbage is not charged to
   the update).

The accounts come from random.Random(seed): the benchmark may use randomness,
the model may not. The collector is set up the way the node runs it
(``gc.freeze()``, generation-0 threshold 50,000). Medians of --runs runs
(default 5). Prints human lines,
then last one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exchange.risk import LIQ, Portfolio, RiskModel, ThresholdIndex, UnderlyingRisk  # noqa: E402

USDC, WETH, WBTC = 0, 1, 2
USD = 10**6
ETH = 10**18
BTC = 10**8
ETH_PX = 3000 * USD
BTC_PX = 60_000 * USD

MODEL = RiskModel(USDC, {USDC: UnderlyingRisk(6, 0, 0), WETH: UnderlyingRisk(18), WBTC: UnderlyingRisk(8)},
                  {(WETH, WBTC): 800_000})


def evaluate_case(perp_asset: int, n: int) -> float:
    """µs per check: build the Portfolio (the engine's adapter work), apply the
    order's what-if to the perp size, evaluate."""
    prices = {WETH: ETH_PX, WBTC: BTC_PX}
    mark = prices[perp_asset]
    size = -ETH if perp_asset == WETH else -BTC // 20
    balances = {USDC: 5000 * USD, WETH: 2 * ETH}
    lent = [(USDC, 1000 * USD)]
    borrowed = [(WETH, ETH // 2, ETH // 1000)]
    evaluate = MODEL.evaluate
    start = time.perf_counter()
    for i in range(n):
        what_if = size - (i & 7)  # the order's worst-case fill
        p = Portfolio(balances, [(perp_asset, what_if, what_if * mark // 10**18, mark, 12)], lent, borrowed)
        if evaluate(p, prices).available_open < 0:
            raise AssertionError("bench portfolio should pass")
    return (time.perf_counter() - start) / n * 1e6


def make_accounts(rng: random.Random, count: int) -> list:
    """(key, holdings) with holdings = (usdc, eth, eth_perp, btc_perp, borrowed usdc):
    leverage from hedged to about 4x, so the bands spread over a wide range."""
    accounts = []
    for i in range(count):
        eth = rng.randrange(0, 20 * ETH)
        hedge = rng.random()
        eth_perp = -int(eth * hedge) + rng.randrange(-5 * ETH, 5 * ETH)
        btc_perp = rng.randrange(-BTC, BTC)
        gross_usd = (abs(eth) + abs(eth_perp)) * ETH_PX // ETH + abs(btc_perp) * BTC_PX // BTC
        usdc = gross_usd // rng.randrange(3, 12) + 1000 * USD
        borrowed = rng.randrange(0, max(1, usdc // 2))
        accounts.append((i.to_bytes(20, "big"), (usdc, eth, eth_perp, btc_perp, borrowed)))
    return accounts


def portfolio(h: tuple, eth_px: int, btc_px: int) -> Portfolio:
    usdc, eth, eth_perp, btc_perp, borrowed = h
    return Portfolio({USDC: usdc, WETH: eth},
                     [(WETH, eth_perp, eth_perp * ETH_PX // ETH, eth_px, 0),
                      (WBTC, btc_perp, btc_perp * BTC_PX // BTC, btc_px, 0)],
                     (), [(USDC, borrowed, borrowed // 400)])


def build_index(accounts: list) -> tuple[ThresholdIndex, float]:
    idx = ThresholdIndex()
    start = time.perf_counter()
    for key, h in accounts:
        p = portfolio(h, ETH_PX, BTC_PX)
        prices = {WETH: ETH_PX, WBTC: BTC_PX}
        idx.set(key, MODEL.safe_band(p, prices, LIQ))
    return idx, (time.perf_counter() - start) * 1e3


def oracle_update(idx: ThresholdIndex, holdings: dict, move_ppm: int) -> tuple[float, int]:
    """ms for one ETH oracle update: crossed, then re-evaluate and re-band them."""
    new_px = ETH_PX * (1_000_000 + move_ppm) // 1_000_000
    prices = {WETH: new_px, WBTC: BTC_PX}
    evaluate = MODEL.evaluate
    safe_band = MODEL.safe_band
    start = time.perf_counter()
    keys = idx.crossed(WETH, ETH_PX, new_px)
    for key in keys:
        p = portfolio(holdings[key], new_px, BTC_PX)
        margin = evaluate(p, prices)
        idx.set(key, safe_band(p, prices, LIQ, 0, margin))  # (p, p) bands if liquidatable
    return (time.perf_counter() - start) * 1e3, len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--evaluations", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(50_000)  # the node's collector setting (PERFORMANCE.md, bench/engine.py --gc-gen0)
    result: dict = {}
    for name, asset in (("evaluate_us_1_underlying", WETH), ("evaluate_us_2_underlyings", WBTC)):
        runs = [evaluate_case(asset, args.evaluations) for _ in range(args.runs)]
        result[name] = round(statistics.median(runs), 2)
        print(f"{name}: median {result[name]} µs ({1e6 / result[name]:,.0f} checks/s) "
              f"runs {[round(r, 2) for r in runs]}")
    accounts = make_accounts(random.Random(args.seed), args.accounts)
    holdings = dict(accounts)
    builds = []
    moves: dict = {m: [] for m in (-5_000, -20_000, 50_000, -100_000, -300_000)}
    crossed: dict = {}
    for _ in range(args.runs):
        for move in moves:
            idx, build_ms = build_index(accounts)
            builds.append(build_ms)
            gc.collect()  # the build's garbage is not the update's
            ms, n = oracle_update(idx, holdings, move)
            moves[move].append(ms)
            crossed[move] = n
    result["index_build_ms"] = round(statistics.median(builds), 1)
    print(f"index build ({args.accounts:,} accounts: evaluate + safe_band + set each): "
          f"median {result['index_build_ms']} ms")
    for move, runs in moves.items():
        label = f"oracle_update_ms_{args.accounts // 1000}k_accounts_move_{move / 10_000:+g}pct"
        result[label] = round(statistics.median(runs), 2)
        result[label.replace("_ms_", "_crossed_")] = crossed[move]
        print(f"ETH {move / 10_000:+g} %: crossed {crossed[move]:,} of {args.accounts:,}, "
              f"median {result[label]} ms  runs {[round(r, 2) for r in runs]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""What one command kind costs on the portfolio benchmark's state, for valgrind.

    python bench/command_costs.py KIND N

Builds the state `bench/engine.py --portfolio` reaches after 10,000 commands
(1,000 accounts with spot balances, perp positions, loans, resting orders), then
applies N commands of one KIND the way that benchmark does (checkpoint, apply,
commit), or N calls of one part of the pre-trade check. Run it under valgrind
twice with two N and difference the instruction counts (bench/command_costs.sh
does) to get the instructions of one command, set-up excluded - a figure this
shared machine cannot move, to say where the time of `--portfolio` goes.

KIND:
  perp         passive perp orders (resting, the full pre-trade check)
  spot         passive spot orders of leveraged accounts (their check too)
  cancel-perp  cancels by client id of resting perp orders
  cancel-spot  cancels by client id of resting spot orders
  deposit      deposits: the floor of checkpoint + apply + commit + a handler
  check        PerpClearing._check_margin alone, for the perp orders above
  portfolio    PerpClearing.portfolio_of alone (the check's portfolio)
  available    portfolio_of, then the opening-level figure (what the check adds
               to it is the difference with ``portfolio``)
"""

from __future__ import annotations

import gc
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine as bench  # noqa: E402  (bench/engine.py)
import exchange as ex  # noqa: E402

from node.cli import GC_THRESHOLDS  # noqa: E402

KINDS = ("perp", "spot", "cancel-perp", "cancel-spot", "deposit", "check", "portfolio", "available")
GTC = ex.TimeInForce.GTC


def _passive(commands, markets):
    """The stream's resting orders on ``markets`` (spot: not the borrowing buys)."""
    return [c for c in commands if c.__class__ is ex.PlaceOrder and c.market in markets
            and c.time_in_force == GTC and (c.market != bench.P_ETH_USDC or c.quantity < 50 * 10**15)]


def _apply_all(engine, commands, ctx) -> None:
    """Each command as the benchmark runs it: inside checkpoint() / commit()."""
    for c in commands:
        cp = engine.checkpoint()
        try:
            engine.apply(c, ctx)
        except ex.ExchangeError:
            pass
        engine.commit(cp)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in KINDS:
        print(__doc__)
        return 2
    kind, n = sys.argv[1], int(sys.argv[2])
    ctx = ex.Context(block_number=1, timestamp=1_700_000_000)
    accounts = bench.addresses()
    engine = bench.portfolio_engine(accounts, ctx)
    _apply_all(engine, bench.portfolio_stream(random.Random(1), 9_990, accounts, 10_000), ctx)
    engine.state_digest()
    later = bench.portfolio_stream(random.Random(7), 200_000, accounts, 10**9)
    perps = engine._perps
    perps.now = ctx.timestamp
    commands: list = []
    calls: list = []
    if kind in ("perp", "deposit", "check", "portfolio", "available"):
        orders = _passive(later, (bench.P_ETH_PERP, bench.P_BTC_PERP))[:n]
        if kind == "perp":
            commands = orders
        elif kind == "deposit":
            commands = [ex.Deposit(c.account, bench.P_USDC, 1) for c in orders]
        else:
            model = perps.risk_model()
            for c in orders:
                m = engine._markets[c.market]
                a = engine._accounts[c.account]
                lots = c.quantity // m.lot_size
                if kind == "check":
                    calls.append((perps._check_margin, (m, a, c.side, c.price, lots, False)))
                elif kind == "portfolio":
                    calls.append((perps.portfolio_of, (a, ctx.timestamp, (m, c.side, c.price, lots), None, True, True)))
                else:
                    calls.append((lambda *args: perps._available(model, *perps.portfolio_of(*args)),
                                  (a, ctx.timestamp, (m, c.side, c.price, lots), None, True, True)))
    elif kind == "spot":
        commands = _passive(later, (bench.P_ETH_USDC,))[:n]
    else:  # cancels: rest orders with fresh client ids first (in both runs), cancel N of them
        markets = (bench.P_ETH_PERP, bench.P_BTC_PERP) if kind == "cancel-perp" else (bench.P_ETH_USDC,)
        for j, c in enumerate(_passive(later, markets)[:6_000]):
            c = ex.PlaceOrder(c.account, c.market, c.side, c.price, c.quantity, client_order_id=10**9 + j)
            try:
                engine.apply(c, ctx)
            except ex.ExchangeError:
                continue
            commands.append(ex.CancelByClientId(c.account, c.client_order_id))
        commands = commands[:n]
    if len(commands) + len(calls) < n:
        raise SystemExit(f"only {len(commands) + len(calls)} {kind} commands in the stream")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    for f, args in calls:
        try:
            f(*args)
        except ex.ExchangeError:
            pass
    _apply_all(engine, commands, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())

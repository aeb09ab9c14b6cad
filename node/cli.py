"""`blixt`: the command line. `blixt devnet` starts the node; `blixt stress` loads one."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from node.config import ConfigError, load_config

# PERFORMANCE.md point 8: the collector's thresholds while the node runs (after
# gc.freeze()); bench/engine.py runs the engine under the same ones.
GC_THRESHOLDS = (50_000, 20, 100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "stress":
        from node.stress import main as stress_main

        return stress_main(argv[1:])
    parser = argparse.ArgumentParser(prog="blixt", description="Blixt: a trading-tuned Ethereum L2 devnet")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devnet", help="start the devnet node")
    dev.add_argument("--config", help="TOML file (see configs/devnet.toml)")
    dev.add_argument("--host", help="address to bind (default 127.0.0.1)")
    dev.add_argument("--port", type=int, help="JSON-RPC HTTP+WebSocket port (default 8545)")
    dev.add_argument("--chain-id", type=int)
    dev.add_argument("--data-dir", help="LevelDB data directory (default ./.blixt)")
    dev.add_argument("--ephemeral", action="store_true", default=None, help="keep everything in memory")
    dev.add_argument("--instant", action="store_true", default=None,
                     help="automine: every transaction is its own block, at once")
    dev.add_argument("--block-time", type=float, help="seconds between sealed blocks (default 1)")
    dev.add_argument("--miniblock-interval", type=float, help="milliseconds between mini-blocks (default 10)")
    dev.add_argument("--gas-limit", type=int, help="block gas limit")
    dev.add_argument("--accounts", type=int, help="number of dev accounts (default 10)")
    dev.add_argument("--balance", type=int, help="ETH per dev account (default 10000)")
    dev.add_argument("--mnemonic")
    dev.add_argument("--log-level", default="INFO")
    sub.add_parser("stress", help="load-test a node (see `blixt stress --help`)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        "rpc": {"host": args.host, "port": args.port},
        "chain": {"chain_id": args.chain_id, "gas_limit": args.gas_limit},
        "storage": {"data_dir": args.data_dir, "ephemeral": args.ephemeral},
        "sequencer": {
            "instant": args.instant,
            "block_time_ms": None if args.block_time is None else int(args.block_time * 1000),
            "miniblock_interval_ms": None if args.miniblock_interval is None else int(args.miniblock_interval),
        },
        "accounts": {"count": args.accounts, "balance_eth": args.balance, "mnemonic": args.mnemonic},
    }
    try:
        config = load_config(args.config, overrides)
    except (ConfigError, OSError) as exc:
        print(f"blixt: {exc}", file=sys.stderr)
        return 2
    if config.sequencer.block_time_ms <= 0 and not config.sequencer.instant:
        print("blixt: --block-time must be positive (use --instant for automine)", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        pass
    return asyncio.run(serve(config))


async def serve(config) -> int:
    from node.node import Node, StartupError
    from node.rpc.eth import EthApi
    from node.rpc.server import RpcServer

    from node.metrics import NodeMetrics

    metrics = NodeMetrics()
    try:
        node = Node(config, metrics)
        metrics.watch_exchange(node.exchange)
    except StartupError as exc:
        print(f"blixt: {exc}", file=sys.stderr)
        return 1
    api = EthApi(node)
    # PERFORMANCE.md point 8: long-lived start-up objects leave the GC's view, and a
    # larger gen-0 threshold keeps collections off the per-transaction path.
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

    def render_metrics():
        metrics.mempool.set(len(node.pool))
        metrics.ws_subscribers.set(len(api.subscriptions))
        return metrics.render()

    server = RpcServer(api.methods(), host=config.rpc.host, port=config.rpc.port,
                       max_body_bytes=config.rpc.max_body_bytes, max_batch=config.rpc.max_batch,
                       routes={"/metrics": render_metrics}, observer=metrics.rpc)
    await server.start()
    node.producer.start()
    print_banner(node, server.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    await node.producer.stop()
    node.kv.close()
    return 0


def print_banner(node, port: int) -> None:
    config = node.config
    lines = ["", "Blixt devnet", "============", ""]
    lines.append("Available Accounts")
    lines.append("==================")
    balance = config.accounts.balance_eth
    for i, (address, _key) in enumerate(node.accounts):
        lines.append(f"({i}) {to_checksum(address)} ({balance} ETH)")
    lines += ["", "Private Keys", "=================="]
    for i, (_address, key) in enumerate(node.accounts):
        lines.append(f"({i}) 0x{key.hex()}")
    lines += ["", "Wallet", "==================", f"Mnemonic:          {config.accounts.mnemonic}",
              "Derivation path:   m/44'/60'/0'/0/", ""]
    seq = config.sequencer
    cadence = "instant (one block per transaction)" if seq.instant else \
        f"mini-blocks every {seq.miniblock_interval_ms} ms, blocks every {seq.block_time_ms} ms"
    storage = "in memory (ephemeral)" if config.storage.ephemeral else f"LevelDB at {config.storage.data_dir}"
    lines += [f"Chain ID:          {config.chain.chain_id}",
              f"Block gas limit:   {config.chain.gas_limit}",
              f"Cadence:           {cadence}",
              f"Storage:           {storage}",
              f"Head block:        {node.chain.head.number}",
              "",
              f"Listening on {config.rpc.host}:{port}",
              f"RPC URL: http://{config.rpc.host}:{port}  (WebSocket: ws://{config.rpc.host}:{port})",
              ""]
    print("\n".join(lines), flush=True)


def to_checksum(address: bytes) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


if __name__ == "__main__":
    sys.exit(main())

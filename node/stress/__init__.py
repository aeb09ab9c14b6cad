"""`blixt stress`: a load generator and meter for any Ethereum JSON-RPC node.

Responsible for: pre-signing many EIP-1559 transactions from many accounts, sending
them open-loop over HTTP keep-alive (single or batched, optionally pipelined) or
WebSocket, and measuring what the node did with them — accepted and included tx/s,
inclusion latency percentiles, errors by reason, block cadence — and what the run
cost in CPU, the generator's and (when local) the node's. It works against Blixt,
anvil, hardhat node or anything that funds the standard dev accounts; only the
`orders` workload needs Blixt's exchange precompile (`orderbook-sol` sends the same
order flow to a Solidity order book on any node).

The flow (`cli.main`, three phases, each bounded in time):

    setup.prepare        chain id, base fee; workload setup (deploy, hand out tokens);
      │                  fund the derived senders from the dev accounts; plan nonces
      ▼
    signing.presign      coincurve + raw RLP, over 2 processes when large   (not timed
      │                  against the node; reported as pre-sign tx/s)
      ▼
    runner.LoadRun       encode_requests once → write bytes at the schedule
      │                  (rate / as fast as possible, bounded by count and duration)
      │                  answers → accepted / errors; block watcher → inclusion times
      │                  drain: wait for inclusion of what was accepted (bounded)
      ▼
    report               summary dict (→ --json) and the table on stdout

Modules:
    cli        argparse (prog "blixt stress"), the phases, exit codes
    keys       dev accounts from the mnemonic (BIP-39/32), senders from a seed
    signing    fast EIP-1559 signing, multi-process presign
    workloads  registry: transfers, erc20, call, orders (hook; `precompiles/stress.py`
               is imported first and registers the real `orders` and `orderbook-sol`);
               contracts/ holds the Solidity sources and their compiled artifacts
               (solcjs 0.8.37, evm shanghai, optimizer 200 runs)
    setup      the setup phase
    rpc        raw HTTP/1.1 keep-alive protocol; RpcClient (HTTP or WebSocket)
    runner     the load phase: dispatch, answers, block watcher, progress line
    stats      percentiles, schedule arithmetic, error grouping, CPU readers
    report     the summary and its table (and, for workloads with `receipt_outcomes`,
               every included receipt counted by status: orders accepted / reverted)

States of a transaction in a run: planned → signed → sent (bytes written) →
accepted (node answered with a hash) or error (reason) → included (seen in a block;
in --sync mode, the receipt in the answer). Sends cut by --duration are "unsent".

Errors: `SetupError` (the chain could not be prepared), `WorkloadUnavailable` (e.g.
`orders` on a node without the precompile), `UnsupportedMethod` (--sync on a node
without EIP-7966), `rpc.TransportError` (unreachable node): each ends the run with a
message on stderr and exit code 2. Per-transaction JSON-RPC errors do not stop a run;
they are counted by reason (numbers and hex masked so like errors group together).
A connection the node closes is reopened (at most 64 times a run); when none is left
the run ends and the rest is reported as unsent. Every wait is bounded: setup by
--setup-timeout, sending by --count/--duration, inclusion by --drain/--drain-idle.
"""

from .cli import build_parser, main
from .workloads import WORKLOADS, Workload, WorkloadUnavailable, register_workload

__all__ = ["main", "build_parser", "WORKLOADS", "Workload", "WorkloadUnavailable", "register_workload"]

"""Cost of the JSON-RPC transport alone (node/rpc/server.py), over loopback.

The server runs in a child process with one trivial method (`eth_chainId` -> "0x1"),
on uvloop; this process is the load generator (uvloop, raw asyncio protocols, pre-built
request bytes, responses counted by length so the client stays cheap). Every load is
bounded in requests and in seconds.

Scenarios (each run several times; medians reported):
  http-single    C keep-alive connections, one request in flight each (how web3.py
                 and ethers talk: no pipelining)
  http-pipe      C connections, D pipelined requests in flight each
  http-batch16   C connections, one batch of 16 in flight each
  ws-single      C WebSocket connections, D requests in flight each
  ws-batch16     C WebSocket connections, one batch of 16 in flight each
  http-rtt       1 connection, 1 request in flight: round-trip latency percentiles
  ws-notify      C WebSocket subscribers, each pushed N ~700-byte notifications
                 (Session.notify): server µs per notification
Reported per scenario: requests/s, the server's CPU seconds per request (µs/req —
the figure PERFORMANCE.md quotes; in brackets its user-space part, the rest is the
kernel's socket work charged to the server), and its CPU use (% of one core).

  .venv/bin/python bench/rpc_transport.py                 # all scenarios, 5 runs
  .venv/bin/python bench/rpc_transport.py --runs 3 --requests 100000 --seconds 5
  .venv/bin/python bench/rpc_transport.py --micro         # websockets framing cost
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import time

import orjson

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TICKS = os.sysconf("SC_CLK_TCK")
# A newHeads-sized push (a block header is ~600 bytes of JSON).
NOTIFICATION = {"subscription": "0x1", "result": {"number": "0x1", "hash": "0x" + "ab" * 32,
                                                   "parentHash": "0x" + "cd" * 32,
                                                   "stateRoot": "0x" + "ef" * 32,
                                                   "logsBloom": "0x" + "00" * 256}}


# -- server side (child process) ----------------------------------------------------


def serve() -> None:
    import uvloop

    from node.rpc.server import RpcServer

    async def main() -> None:
        def flood(params, session):
            # Subscription fan-out cost: one push per block to each subscriber.
            for _ in range(params[0]):
                session.notify("eth_subscription", NOTIFICATION)
            return params[0]

        server = RpcServer({"eth_chainId": lambda params, session: "0x1", "flood": flood},
                           port=0, max_ws_buffer_bytes=1 << 30)
        await server.start()
        print(server.port, flush=True)
        # Serve until the parent closes our stdin.
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        await server.stop()

    uvloop.run(main())


def server_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the server process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


# -- load generator -------------------------------------------------------------------


def http_request(body: bytes) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def ws_frame(payload: bytes) -> bytes:
    """A masked client text frame (the mask is fixed: fine for a load generator)."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    else:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + masked


WS_HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class Budget:
    def __init__(self, requests: int, seconds: float):
        self.left = requests
        self.deadline = time.perf_counter() + seconds
        self.completed = 0
        self.in_flight = 0
        self.done = asyncio.get_running_loop().create_future()
        self.latencies: list[float] | None = None

    def take(self, wanted: int) -> int:
        if time.perf_counter() > self.deadline:
            self.left = 0
        granted = min(wanted, self.left)
        self.left -= granted
        self.in_flight += granted
        if self.left == 0 and self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)  # the deadline passed with nothing in flight
        return granted

    def settle(self, count: int) -> None:
        self.completed += count
        self.in_flight -= count
        if self.left == 0 and self.in_flight == 0 and not self.done.done():
            self.done.set_result(None)


class LoadConnection(asyncio.Protocol):
    """Keeps `depth` requests in flight; counts responses by their fixed length."""

    def __init__(self, budget: Budget, request: bytes, response_len: int, depth: int,
                 handshake: bytes | None = None):
        self.budget, self.request, self.response_len = budget, request, response_len
        self.depth, self.handshake = depth, handshake
        self.buffered = 0
        self.sent_at: list[float] = []

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.handshake is not None:
            transport.write(self.handshake)
            self.head = b""
        else:
            self.start()

    def start(self) -> None:
        self.send(self.budget.take(self.depth))

    def send(self, count: int) -> None:
        if count:
            if self.budget.latencies is not None:
                self.sent_at.append(time.perf_counter())
            self.transport.write(self.request * count)

    def data_received(self, data: bytes) -> None:
        if self.handshake is not None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, rest = self.head.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head
            self.handshake = None
            self.start()
            data = rest
        self.buffered += len(data)
        done, self.buffered = divmod(self.buffered, self.response_len)
        if done:
            if self.budget.latencies is not None:
                now = time.perf_counter()
                self.budget.latencies.extend(now - self.sent_at.pop(0) for _ in range(done))
            self.budget.settle(done)
            self.send(self.budget.take(done))


def probe_response(port: int, request: bytes, handshake: bool) -> bytes:
    """One real exchange: check the answer and learn its exact length."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        if handshake:
            s.sendall(WS_HANDSHAKE)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert head.startswith(b"HTTP/1.1 101"), head
            rest = head.split(b"\r\n\r\n", 1)[1]
        else:
            rest = b""
        s.sendall(request)
        data = rest
        while not complete(data, handshake):
            chunk = s.recv(1 << 20)
            assert chunk, data
            data += chunk
        return data


def complete(data: bytes, ws: bool) -> bool:
    if ws:
        if len(data) < 2:
            return False
        n, head = data[1] & 0x7F, 2
        if n == 126:
            n, head = int.from_bytes(data[2:4], "big"), 4
        return len(data) >= head + n
    if b"\r\n\r\n" not in data:
        return False
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return len(body) >= length


async def run_load(port: int, scenario: dict, requests: int, seconds: float,
                   latencies: bool = False) -> tuple[int, float, list[float] | None]:
    loop = asyncio.get_running_loop()
    budget = Budget(requests, seconds)
    if latencies:
        budget.latencies = []
    transports = []
    started = time.perf_counter()
    for _ in range(scenario["connections"]):
        transport, _ = await loop.create_connection(
            lambda: LoadConnection(budget, scenario["request"], scenario["response_len"],
                                   scenario["depth"], scenario.get("handshake")),
            "127.0.0.1", port)
        transports.append(transport)
    await asyncio.wait_for(budget.done, seconds + 30)
    elapsed = time.perf_counter() - started
    for transport in transports:
        transport.close()
    return budget.completed, elapsed, budget.latencies


def scenarios(port: int, connections: int, depth: int) -> dict[str, dict]:
    single = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    batch = orjson.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []}
                          for i in range(16)])
    out = {}
    for name, body, per, conns, dep, ws in [
        ("http-single", single, 1, connections, 1, False),
        ("http-pipe", single, 1, connections, depth, False),
        ("http-batch16", batch, 16, connections, 1, False),
        ("ws-single", single, 1, connections, depth, True),
        ("ws-batch16", batch, 16, connections, 1, True),
        ("http-rtt", single, 1, 1, 1, False),
    ]:
        request = ws_frame(body) if ws else http_request(body)
        answer = probe_response(port, request, ws)
        expected = orjson.loads(answer.split(b"\r\n\r\n", 1)[1] if not ws
                                else answer[4:] if answer[1] == 126 else answer[2:])
        if per == 1:
            assert expected == {"jsonrpc": "2.0", "id": 1, "result": "0x1"}, answer
        else:
            assert [r["result"] for r in expected] == ["0x1"] * 16, answer
        out[name] = dict(request=request, response_len=len(answer), per=per,
                         connections=conns, depth=dep,
                         handshake=WS_HANDSHAKE if ws else None)
    return out


async def notify_load(port: int, connections: int, per_connection: int) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    request = ws_frame(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "flood",
                                     "params": [per_connection]}))
    push = orjson.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": NOTIFICATION})
    answer = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": per_connection})
    frame_len = len(push) + (2 if len(push) < 126 else 4)
    expected = per_connection * frame_len + len(answer) + 2
    budget = Budget(connections, 60)
    started = time.perf_counter()
    transports = []
    for _ in range(connections):
        transport, _ = await loop.create_connection(
            lambda: LoadConnection(budget, request, expected, 1, WS_HANDSHAKE), "127.0.0.1", port)
        transports.append(transport)
    await asyncio.wait_for(budget.done, 60)
    elapsed = time.perf_counter() - started
    for transport in transports:
        transport.close()
    return connections * per_connection, elapsed


async def bench(args) -> None:
    child = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, cwd=ROOT)
    try:
        port = int(child.stdout.readline())
        table = scenarios(port, args.connections, args.depth)
        wanted = args.only.split(",") if args.only else list(table)
        print(f"server pid {child.pid} port {port}; {args.runs} runs per scenario, each "
              f"≤{args.requests} messages and ≤{args.seconds}s; medians")
        print(f"{'scenario':14} {'conns×depth':>11} {'req/s':>10} {'server µs/req (user)':>21} "
              f"{'server CPU':>10}  extra")
        if not args.only or "ws-notify" in wanted:
            rates, costs, users, loads = [], [], [], []
            for _ in range(args.runs):
                user0, sys0 = server_cpu_seconds(child.pid)
                count, elapsed = await notify_load(
                    port, args.connections, min(args.requests * 4 // args.connections, 50_000))
                user1, sys1 = server_cpu_seconds(child.pid)
                cpu = user1 - user0 + sys1 - sys0
                rates.append(count / elapsed)
                costs.append(cpu / count * 1e6)
                users.append((user1 - user0) / count * 1e6)
                loads.append(cpu / elapsed * 100)
            print(f"{'ws-notify':14} {args.connections:>5}×{'':5} {statistics.median(rates):>10,.0f} "
                  f"{statistics.median(costs):>8.2f} ({statistics.median(users):.2f}) "
                  f"{statistics.median(loads):>9.0f}%  notifications/s", flush=True)
        for name in (w for w in wanted if w in table):
            sc = table[name]
            rates, costs, users, loads, p50s, p99s = [], [], [], [], [], []
            for _ in range(args.runs):
                user0, sys0 = server_cpu_seconds(child.pid)
                count, elapsed, lat = await run_load(
                    port, sc, args.requests, args.seconds, latencies=(name == "http-rtt"))
                user1, sys1 = server_cpu_seconds(child.pid)
                cpu = user1 - user0 + sys1 - sys0
                reqs = count * sc["per"]
                rates.append(reqs / elapsed)
                costs.append(cpu / reqs * 1e6)
                users.append((user1 - user0) / reqs * 1e6)
                loads.append(cpu / elapsed * 100)
                if lat:
                    lat.sort()
                    p50s.append(lat[len(lat) // 2] * 1e6)
                    p99s.append(lat[int(len(lat) * 0.99)] * 1e6)
            extra = (f"RTT p50 {statistics.median(p50s):.0f} µs, p99 {statistics.median(p99s):.0f} µs"
                     if p50s else "")
            print(f"{name:14} {sc['connections']:>5}×{sc['depth']:<5} "
                  f"{statistics.median(rates):>10,.0f} {statistics.median(costs):>8.2f} "
                  f"({statistics.median(users):.2f}) {statistics.median(loads):>9.0f}%  {extra}",
                  flush=True)
    finally:
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def micro(rounds: int = 5, count: int = 50_000) -> None:
    """Per-message cost of websockets' sans-I/O protocol as the server uses it:
    parse one masked client frame, and serialize one text frame back."""
    from websockets.protocol import Protocol, Side, State

    frame = ws_frame(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
    answer = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x1"})
    results = []
    for _ in range(rounds):
        ws = Protocol(Side.SERVER, state=State.OPEN, max_size=5 << 20)
        t0 = time.perf_counter()
        for _ in range(count):
            ws.receive_data(frame)
            for f in ws.events_received():
                ws.send_text(answer)
            ws.data_to_send()
        results.append((time.perf_counter() - t0) / count * 1e6)
    print(f"websockets Protocol: receive+send one message {statistics.median(results):.2f} µs "
          f"(median of {rounds}×{count})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--micro", action="store_true", help="only the websockets framing micro-benchmark")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=60_000, help="messages per run (a batch is one)")
    parser.add_argument("--seconds", type=float, default=4.0, help="time bound per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--depth", type=int, default=8, help="in flight per connection when pipelining")
    parser.add_argument("--only", default="", help="comma-separated scenarios")
    args = parser.parse_args()
    if args.serve:
        serve()
    elif args.micro:
        micro()
    else:
        import uvloop

        uvloop.run(bench(args))


if __name__ == "__main__":
    main()

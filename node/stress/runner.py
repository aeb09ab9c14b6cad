"""Load phase: send pre-encoded requests open-loop, watch blocks, measure.

    schedule (rate or as fast as possible) ──► free connection slot? ──► write bytes
             │ no slot: backlog (open loop: the clock keeps running)        │
             ▼                                                               ▼
    response callback: accepted / error reason ◄──────────────── node answers
    block watcher: new block ► its tx hashes ► inclusion time of our transactions

A send is stamped when its bytes are written; inclusion is when the watcher first
sees a block holding the transaction (so it is bounded below by the poll interval);
in `--sync` mode the receipt in the answer is the inclusion.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass

import orjson

from .rpc import Endpoint, HttpConnection, RpcClient, RpcError, TransportError, http_request_bytes
from .stats import (
    due_count,
    error_reason,
    own_cpu_seconds,
    process_tree,
    scheduled_time,
    tree_cpu_seconds,
)

_UNSUPPORTED_CODES = (-32601,)  # method not found
_MAX_RECONNECTS = 64
_MIN_TICK = 0.001  # seconds


@dataclass
class LoadOptions:
    rate: float | None
    duration: float | None
    batch: int
    connections: int
    inflight: int
    sync: bool
    sync_timeout_ms: int | None
    watch: str  # poll | newheads | miniblocks | none
    poll_interval: float
    drain: float
    drain_idle: float
    node_pid: int | None
    progress: bool


def encode_requests(raws: list[bytes], batch: int, sync: bool, sync_timeout_ms: int | None) -> list[bytes]:
    """JSON-RPC bodies, one per request; the JSON id of each call is its transaction's
    index, so answers map back without a lookup table."""
    method = b"eth_sendRawTransactionSync" if sync else b"eth_sendRawTransaction"
    extra = b"" if sync_timeout_ms is None or not sync else b",%d" % sync_timeout_ms
    calls = [
        b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":["0x%s"%s]}' % (i, method, raw.hex().encode(), extra)
        for i, raw in enumerate(raws)
    ]
    if batch <= 1:
        return calls
    return [b"[" + b",".join(calls[i : i + batch]) + b"]" for i in range(0, len(calls), batch)]


class UnsupportedMethod(Exception):
    """The node does not implement the method this run needs (e.g. EIP-7966)."""


class LoadRun:
    def __init__(self, endpoint: Endpoint, bodies: list[bytes], hashes: list[bytes], start_block: int, options: LoadOptions):
        self.endpoint = endpoint
        self.options = options
        self.batch = max(1, options.batch)
        self.n_tx = len(hashes)
        self.n_requests = len(bodies)
        if endpoint.is_websocket:
            self.payloads = bodies
        else:
            self.payloads = [http_request_bytes(endpoint, body) for body in bodies]
        self.hash_index = {"0x" + h.hex(): i for i, h in enumerate(hashes)}
        self.start_block = start_block
        # Per request: when its bytes were written. Per transaction: accepted flag and
        # inclusion time (NaN until seen).
        self.sent_at = array("d", [math.nan]) * self.n_requests
        self.answered_at = array("d", [math.nan]) * self.n_requests
        self.accepted = bytearray(self.n_tx)
        self.included_at = array("d", [math.nan]) * self.n_tx
        self.schedule_lag: list[float] = []
        self.errors: Counter = Counter()
        self.sync_latencies: list[float] = []
        self.accepted_count = 0
        self.included_count = 0
        self.error_count = 0
        self.unsent = 0
        self.blocks: list[tuple[int, int, float, int, int]] = []  # number, timestamp, arrival, our txs, all txs
        self.unsupported: str | None = None
        self.watch_error: str | None = None
        self.notes: list[str] = []
        # Dispatch state.
        self.next_request = 0
        self.backlog: deque[int] = deque()
        self.idle: deque = deque()
        self.outstanding = 0
        self.stopping = False
        self.reconnects = 0
        self._slots: list = []
        self._reopening = 0
        self._watching = True
        self.t_start = 0.0
        self.t_first_send = math.nan
        self.t_last_send = math.nan
        self.t_last_answer = math.nan
        self.t_last_inclusion = math.nan
        self.t_send_done = math.nan
        self.t_end = math.nan
        self.cpu: dict = {}

    # ------------------------------------------------------------------ entry
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._all_answered = asyncio.Event()
        self._all_included = asyncio.Event()
        self._feed_done = asyncio.Event()
        node_pids = process_tree(self.options.node_pid) if self.options.node_pid else []
        watcher = None
        if self.options.watch != "none":
            watcher = await RpcClient.connect(self.endpoint)
            watch_task = loop.create_task(self._watch_blocks(watcher))
        senders = await self._open_senders()
        progress_task = loop.create_task(self._progress(node_pids)) if self.options.progress else None

        cpu0, node0 = own_cpu_seconds(), tree_cpu_seconds(node_pids)
        self.t_start = time.perf_counter()
        try:
            await self._dispatch()
            self.t_send_done = time.perf_counter()
            cpu1, node1 = own_cpu_seconds(), tree_cpu_seconds(node_pids)
            if not self.options.sync and self.options.watch != "none":
                await self._drain()
        finally:
            self.t_end = time.perf_counter()
            cpu2, node2 = own_cpu_seconds(), tree_cpu_seconds(node_pids)
            if progress_task:
                progress_task.cancel()
            if watcher is not None:
                # A flag as well as the cancel: Python 3.11's wait_for can swallow a
                # cancellation that races with its inner future completing.
                self._watching = False
                watch_task.cancel()
                await asyncio.wait([watch_task], timeout=5)
                await watcher.close()
            await self._close_senders(senders)
        send_wall = self.t_send_done - self.t_start
        total_wall = self.t_end - self.t_start
        self.cpu = {
            "generator_core_share_sending": _share(cpu1 - cpu0, send_wall),
            "generator_core_share_total": _share(cpu2 - cpu0, total_wall),
            "node_core_share_sending": _share(node1 - node0, send_wall) if node0 is not None and node1 is not None else None,
            "node_core_share_total": _share(node2 - node0, total_wall) if node0 is not None and node2 is not None else None,
            "node_pids": node_pids,
        }
        if self.unsupported:
            raise UnsupportedMethod(self.unsupported)

    # --------------------------------------------------------------- dispatch
    async def _dispatch(self) -> None:
        options = self.options
        request_rate = options.rate / self.batch if options.rate else None
        deadline = self.t_start + options.duration if options.duration else math.inf
        if request_rate:
            while self.next_request < self.n_requests and not self.stopping:
                now = time.perf_counter()
                if now >= deadline:
                    break
                due = due_count(now - self.t_start, request_rate, self.n_requests)
                while self.next_request < due:
                    request = self.next_request
                    self.next_request += 1
                    self._submit(request)
                if self.next_request >= self.n_requests:
                    break
                wake = self.t_start + scheduled_time(self.next_request, request_rate)
                # At least one timer tick: libuv timers have 1 ms resolution and a
                # shorter sleep returns at once (a busy loop that burned a core at
                # 10k tx/s). Sends that fall due meanwhile go out together next tick.
                await asyncio.sleep(max(wake - time.perf_counter(), _MIN_TICK))
        else:
            # As fast as possible: fill every slot; each answer releases the next send.
            while self.idle and self.next_request < self.n_requests:
                request = self.next_request
                self.next_request += 1
                self._submit(request)
            while self.next_request < self.n_requests and time.perf_counter() < deadline:
                try:
                    await asyncio.wait_for(self._feed_done.wait(), min(1.0, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    pass
                if not self.outstanding and not self._reopening and not any(s.is_open for s in self._slots):
                    # Every connection is gone and none is being reopened: nothing
                    # would ever release the next send.
                    self._count_error("no open connection to the node", 0)
                    break
        self.stopping = True
        self.unsent += len(self.backlog) * self.batch
        if self.next_request < self.n_requests:
            self.unsent += self.n_tx - self.next_request * self.batch
        self.backlog.clear()
        if self.outstanding:
            try:
                await asyncio.wait_for(self._all_answered.wait(), self.options.drain + 30)
            except asyncio.TimeoutError:
                self.errors["no answer before the run ended"] += self.outstanding * self.batch
                self.error_count += self.outstanding * self.batch

    def _submit(self, request: int) -> None:
        while self.idle:
            slot = self.idle.popleft()
            if slot.is_open:
                self._send(slot, request)
                return
            self._replace(slot)  # closed while idle (e.g. the node's keep-alive timeout)
        self.backlog.append(request)

    def _send(self, slot, request: int) -> None:
        now = time.perf_counter()
        if self.options.rate:
            self.schedule_lag.append(now - self.t_start - scheduled_time(request, self.options.rate / self.batch))
        self.sent_at[request] = now
        if self.t_first_send != self.t_first_send:  # NaN: first send
            self.t_first_send = now
        self.t_last_send = now
        self.outstanding += 1
        slot.send(self.payloads[request], request)

    def _slot_free(self, slot) -> None:
        if self.stopping and not self.outstanding:
            self._all_answered.set()
        if not slot.is_open:
            self._replace(slot)
            return
        if self.backlog:
            self._send(slot, self.backlog.popleft())
        elif not self.options.rate and not self.stopping and self.next_request < self.n_requests:
            request = self.next_request
            self.next_request += 1
            self._send(slot, request)
            if self.next_request >= self.n_requests:
                self._feed_done.set()
        else:
            self.idle.append(slot)

    # ------------------------------------------------------------- answers
    def _on_answer(self, slot, request: int, status: int, body: bytes) -> None:
        try:
            reply = orjson.loads(body)
        except orjson.JSONDecodeError:
            reply = None
        if reply is None:
            self._count_error(f"HTTP {status}: unparsable body", self._request_size(request))
            self.outstanding -= 1
            self._slot_free(slot)
            return
        self._on_reply_body(slot, request, reply)

    def _on_reply_body(self, slot, request: int, reply: object) -> None:
        now = time.perf_counter()
        self.outstanding -= 1
        self.answered_at[request] = now
        self.t_last_answer = now
        if isinstance(reply, list):
            for item in reply:
                self._on_reply(item, request, now)
        elif isinstance(reply, dict) and "id" in reply and reply["id"] is not None:
            self._on_reply(reply, request, now)
        else:  # an error for the request as a whole (e.g. batch too large)
            self._count_error(reply.get("error", reply) if isinstance(reply, dict) else reply, self._request_size(request))
        self._slot_free(slot)

    def _on_reply(self, reply: dict, request: int, now: float) -> None:
        index = reply.get("id")
        if not isinstance(index, int) or not 0 <= index < self.n_tx:
            self._count_error("answer with an unknown id", 1)
            return
        if "error" in reply:
            error = reply["error"]
            if self.options.sync and isinstance(error, dict) and error.get("code") in _UNSUPPORTED_CODES:
                self.unsupported = (
                    f"the node does not support eth_sendRawTransactionSync (EIP-7966): {error.get('message')}"
                )
                self.stopping = True
            self._count_error(error, 1)
            return
        self.accepted[index] = 1
        self.accepted_count += 1
        if self.options.sync and isinstance(reply.get("result"), dict):
            self.sync_latencies.append(now - self.sent_at[request])
            self._mark_included(index, now)

    def _on_failure(self, slot, request: int, reason: str) -> None:
        self.outstanding -= 1
        self._count_error(reason, self._request_size(request))
        if self.stopping and not self.outstanding:
            self._all_answered.set()

    def _count_error(self, error: object, count: int) -> None:
        """Count `count` transactions under the error's reason; with 0 it is an event
        of the run (a lost connection), kept as a note rather than a transaction count."""
        reason = error_reason(error)
        if count:
            self.errors[reason] += count
            self.error_count += count
        elif reason not in self.notes:
            self.notes.append(reason)

    def _request_size(self, request: int) -> int:
        return min(self.batch, self.n_tx - request * self.batch)

    def _mark_included(self, index: int, when: float) -> None:
        if self.included_at[index] != self.included_at[index]:  # NaN: first sighting
            self.included_at[index] = when
            self.included_count += 1
            self.t_last_inclusion = when
            if self.stopping and not self.outstanding and self.included_count >= self.accepted_count:
                self._all_included.set()

    # --------------------------------------------------------- connections
    async def _open_senders(self) -> list:
        for _ in range(self.options.connections):
            slot = await self._open_slot()
            self._slots.append(slot)
            for _ in range(self.options.inflight):
                self.idle.append(slot)
        return self._slots

    async def _open_slot(self):
        if self.endpoint.is_websocket:
            slot = _WebSocketSlot(self)
            await slot.open()
            return slot
        return await HttpConnection.open(self.endpoint, self._on_answer, self._on_http_failure)

    def _on_http_failure(self, connection: HttpConnection, request: int, reason: str) -> None:
        self._on_failure(connection, request, reason)
        self._replace(connection)

    def _replace(self, slot) -> None:
        """Open one new connection for a closed one (once per closed connection, and
        at most _MAX_RECONNECTS per run), so a node that drops connections does not
        silently shrink the load."""
        if getattr(slot, "replaced", False) or self.stopping or self.reconnects >= _MAX_RECONNECTS:
            return
        slot.replaced = True
        self.reconnects += 1
        self._reopening += 1
        asyncio.get_running_loop().create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            slot = await self._open_slot()
        except TransportError as exc:
            self._count_error(f"reconnect failed: {exc}", 0)
            return
        finally:
            self._reopening -= 1
        self._slots.append(slot)
        for _ in range(self.options.inflight):
            self._slot_free(slot)

    async def _close_senders(self, slots: list) -> None:
        for slot in slots:
            slot.close()
        for slot in slots:
            if isinstance(slot, _WebSocketSlot):
                await slot.wait_closed()

    # -------------------------------------------------------------- watcher
    async def _drain(self) -> None:
        """Wait for the accepted transactions to show up in blocks: until all have,
        `drain` seconds have passed, or nothing new was included for `drain_idle`
        seconds (a node that strands transactions in its pool ends the run too)."""
        deadline = time.perf_counter() + self.options.drain
        last_count, last_change = self.included_count, time.perf_counter()
        while self.included_count < self.accepted_count:
            now = time.perf_counter()
            if self.included_count != last_count:
                last_count, last_change = self.included_count, now
            if now >= deadline or now - last_change >= self.options.drain_idle:
                return
            try:
                await asyncio.wait_for(self._all_included.wait(), min(0.25, deadline - now))
            except asyncio.TimeoutError:
                pass

    async def _watch_blocks(self, rpc: RpcClient) -> None:
        try:
            if self.options.watch == "poll":
                await self._poll_blocks(rpc)
            elif self.options.watch == "newheads":
                await self._follow_heads(rpc)
            else:
                await self._follow_miniblocks(rpc)
        except asyncio.CancelledError:
            raise
        except (RpcError, TransportError) as exc:
            self.watch_error = f"block watcher stopped: {exc}"

    async def _poll_blocks(self, rpc: RpcClient) -> None:
        next_block = self.start_block + 1
        while self._watching:
            head = int(await rpc.call("eth_blockNumber"), 16)
            if head >= next_block:
                next_block = await self._fetch_blocks(rpc, next_block, head, None)
            else:
                await asyncio.sleep(self.options.poll_interval)

    async def _follow_heads(self, rpc: RpcClient) -> None:
        heads = await rpc.subscribe("newHeads")
        next_block = self.start_block + 1
        while self._watching:
            arrival, head = await heads.get()
            number = int(head["number"], 16)
            if number >= next_block:
                next_block = await self._fetch_blocks(rpc, next_block, number, arrival)

    async def _fetch_blocks(self, rpc: RpcClient, first: int, last: int, arrival: float | None) -> int:
        """Fetch blocks first..last (hashes only) and record them; return the next number."""
        while first <= last:
            upto = min(last, first + 255)
            blocks = await rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in range(first, upto + 1)])
            seen = time.perf_counter() if arrival is None else arrival
            for block in blocks:
                if block is None or isinstance(block, RpcError):
                    return first  # not there yet (a node may announce before serving)
                self._record_block(block, seen)
                first += 1
        return first

    async def _follow_miniblocks(self, rpc: RpcClient) -> None:
        """Blixt's `miniBlocks` subscription: preconfirmation, every ~10 ms."""
        miniblocks = await rpc.subscribe("miniBlocks")
        while self._watching:
            arrival, miniblock = await miniblocks.get()
            self._record_block(miniblock, arrival)

    def _record_block(self, block: dict, arrival: float) -> None:
        transactions = block.get("transactions") or []
        ours = 0
        index_of = self.hash_index.get
        for tx in transactions:
            index = index_of(tx if isinstance(tx, str) else tx.get("hash"))
            if index is not None:
                ours += 1
                self._mark_included(index, arrival)
        number = block.get("number", block.get("blockNumber"))  # Blixt's miniBlocks carry blockNumber
        timestamp = block.get("timestamp")
        self.blocks.append(
            (
                int(number, 16) if isinstance(number, str) else (number or 0),
                int(timestamp, 16) if isinstance(timestamp, str) else (timestamp or 0),
                arrival,
                ours,
                len(transactions),
            )
        )

    # ------------------------------------------------------------- progress
    async def _progress(self, node_pids: list[int]) -> None:
        stream = sys.stderr
        end = "\r" if stream.isatty() else "\n"
        last_wall, last_cpu, last_node = time.perf_counter(), own_cpu_seconds(), tree_cpu_seconds(node_pids)
        last_sent = 0
        while True:
            await asyncio.sleep(1.0)
            now, cpu, node = time.perf_counter(), own_cpu_seconds(), tree_cpu_seconds(node_pids)
            wall = now - last_wall
            sent = min(self.next_request * self.batch, self.n_tx) - len(self.backlog) * self.batch
            node_text = f" node {100 * (node - last_node) / wall:4.0f}%" if node is not None and last_node is not None else ""
            head = self.blocks[-1][0] if self.blocks else self.start_block
            stream.write(
                f"[{now - self.t_start:6.1f}s] sent {sent:>9,} ({(sent - last_sent) / wall:>8,.0f}/s)"
                f" accepted {self.accepted_count:>9,} included {self.included_count:>9,}"
                f" errors {self.error_count:>6,} | block {head} | cpu gen {100 * (cpu - last_cpu) / wall:3.0f}%{node_text}{end}"
            )
            stream.flush()
            last_wall, last_cpu, last_node, last_sent = now, cpu, node, sent


class _WebSocketSlot:
    """A WebSocket used like a connection slot: requests are queued to a writer task
    (websockets' send is a coroutine), answers are matched by JSON id."""

    def __init__(self, run: LoadRun):
        self.run = run
        self.ws = None
        self._queue: deque = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def open(self) -> None:
        import websockets.asyncio.client as ws_client

        try:
            self.ws = await ws_client.connect(self.run.endpoint.url, compression=None, max_size=None)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.run.endpoint.url}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()), loop.create_task(self._read())]

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.state.name == "OPEN"

    def send(self, payload: bytes, request: int) -> None:
        self._queue.append(payload)
        self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self.ws.send(self._queue.popleft(), text=True)

    async def _read(self) -> None:
        run = self.run
        batch = run.batch
        try:
            async for message in self.ws:
                reply = orjson.loads(message)
                first = reply[0] if isinstance(reply, list) and reply else reply
                index = first.get("id") if isinstance(first, dict) else None
                if not isinstance(index, int):
                    run._count_error(first.get("error", first) if isinstance(first, dict) else first, 0)
                    continue
                run._on_reply_body(self, index // batch, reply)
        except Exception as exc:
            run._count_error(f"websocket closed: {exc}", 0)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()


def _share(cpu_seconds: float, wall_seconds: float) -> float | None:
    return round(cpu_seconds / wall_seconds, 3) if wall_seconds > 0 else None

"""JSON-RPC transports for the stress tester.

Two layers:
- `HttpConnection`: a raw asyncio.Protocol speaking HTTP/1.1 keep-alive, parsed with
  httptools. It writes pre-encoded request bytes and hands each response body to a
  callback with the caller's token, in order (so it also pipelines when asked). This
  is the load path: no per-request task, no header building, no framework.
- `RpcClient` (HTTP or WebSocket): awaitable `call` / `batch` for setup, the block
  watcher and tests. Slow-path convenience, not for load.

Errors: `RpcError` for a JSON-RPC error object, `TransportError` for anything below
it (refused, closed, HTTP status, unparsable body).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import httptools
import orjson


class RpcError(Exception):
    """The node answered with a JSON-RPC error object."""

    def __init__(self, error: dict, method: str = ""):
        self.error = error
        self.code = error.get("code")
        self.message = str(error.get("message", ""))
        super().__init__(f"{method}: {self.message} (code {self.code})" if method else f"{self.message} (code {self.code})")


class TransportError(Exception):
    """The request did not get a JSON-RPC answer (connection, HTTP status, framing)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # "http", "https", "ws", "wss"
    host: str
    port: int
    path: str
    url: str

    @property
    def is_websocket(self) -> bool:
        return self.scheme in ("ws", "wss")

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "wss")


def parse_endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f"--rpc must be an http://, https://, ws:// or wss:// URL, got {url!r}")
    port = parts.port or {"http": 80, "ws": 80, "https": 443, "wss": 443}[parts.scheme]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Endpoint(parts.scheme, parts.hostname, port, path, url)


def http_request_bytes(endpoint: Endpoint, body: bytes) -> bytes:
    """A complete HTTP/1.1 POST, ready to write as is (pre-encoded once per request)."""
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# Callbacks get the connection itself first, so one pair serves many connections.
ResponseCallback = Callable[["HttpConnection", Any, int, bytes], None]
FailureCallback = Callable[["HttpConnection", Any, str], None]


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; responses are matched to tokens in order."""

    def __init__(self, on_response: ResponseCallback, on_failure: FailureCallback):
        self._on_response = on_response
        self._on_failure = on_failure
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.inflight: deque = deque()
        self.closing = False  # the node said `Connection: close`: send nothing more here
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, endpoint: Endpoint, on_response: ResponseCallback, on_failure: FailureCallback) -> "HttpConnection":
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(
                lambda: cls(on_response, on_failure),
                endpoint.host,
                endpoint.port,
                ssl=ssl.create_default_context() if endpoint.tls else None,
            )
        except OSError as exc:
            raise TransportError(f"cannot connect to {endpoint.url}: {exc}") from exc
        return protocol

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.closing and not self.closed.done()

    def send(self, request: bytes, token: Any) -> None:
        self.inflight.append(token)
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail_all(f"bad HTTP response: {exc}")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all("connection closed by the node" if exc is None else f"connection lost: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body.clear()
        if not self._parser.should_keep_alive():
            self.closing = True
        if self.inflight:
            self._on_response(self, self.inflight.popleft(), self._parser.get_status_code(), body)

    def _fail_all(self, reason: str) -> None:
        while self.inflight:
            self._on_failure(self, self.inflight.popleft(), reason)


class RpcClient:
    """Awaitable JSON-RPC calls over one HTTP keep-alive connection or one WebSocket."""

    def __init__(self, endpoint: Endpoint, timeout: float = 30.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._http: HttpConnection | None = None
        self._ws = None
        self._ws_reader: asyncio.Task | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self.subscriptions: dict[str, asyncio.Queue] = {}

    @classmethod
    async def connect(cls, url: str | Endpoint, timeout: float = 30.0) -> "RpcClient":
        client = cls(parse_endpoint(url) if isinstance(url, str) else url, timeout)
        await client._open()
        return client

    async def _open(self) -> None:
        if self.endpoint.is_websocket:
            import websockets.asyncio.client as ws_client

            try:
                self._ws = await ws_client.connect(
                    self.endpoint.url, compression=None, max_size=None, open_timeout=self.timeout
                )
            except (OSError, asyncio.TimeoutError) as exc:
                raise TransportError(f"cannot connect to {self.endpoint.url}: {exc}") from exc
            self._ws_reader = asyncio.create_task(self._read_ws())
        else:
            self._http = await HttpConnection.open(self.endpoint, self._http_response, self._http_failure)

    async def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._ws is not None:
            await self._ws.close()
        if self._ws_reader is not None:
            self._ws_reader.cancel()
            try:
                await self._ws_reader
            except (asyncio.CancelledError, Exception):
                pass

    async def call(self, method: str, params: list | None = None) -> Any:
        reply = await self._exchange(orjson.dumps(self._request(method, params)), multi=False)
        if "error" in reply:
            raise RpcError(reply["error"], method)
        return reply.get("result")

    async def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        """Results in call order; an RpcError object stands in for a failed call."""
        if not calls:
            return []
        requests = [self._request(method, params) for method, params in calls]
        replies = await self._exchange(orjson.dumps(requests), multi=True)
        if isinstance(replies, dict):  # a node that rejects the batch as a whole
            raise RpcError(replies.get("error", {"message": str(replies)}), "batch")
        by_id = {reply.get("id"): reply for reply in replies}
        results = []
        for request, (method, _) in zip(requests, calls):
            reply = by_id.get(request["id"])
            if reply is None:
                results.append(RpcError({"code": None, "message": "no reply in batch"}, method))
            elif "error" in reply:
                results.append(RpcError(reply["error"], method))
            else:
                results.append(reply.get("result"))
        return results

    async def subscribe(self, kind: str, *params: Any) -> asyncio.Queue:
        """eth_subscribe over WebSocket; notifications arrive as (arrival, result) on the queue."""
        if self._ws is None:
            raise TransportError("subscriptions need a ws:// endpoint")
        subscription = await self.call("eth_subscribe", [kind, *params])
        queue: asyncio.Queue = asyncio.Queue()
        self.subscriptions[subscription] = queue
        return queue

    def _request(self, method: str, params: list | None) -> dict:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}

    async def _exchange(self, body: bytes, multi: bool) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._ws is not None:
            first_id = orjson.loads(body)
            key = (first_id[0] if multi else first_id)["id"]
            self._waiting[key] = future
            await self._ws.send(body.decode())
        else:
            if not self._http.is_open:
                self._http = await HttpConnection.open(self.endpoint, self._http_response, self._http_failure)
            self._http.send(http_request_bytes(self.endpoint, body), future)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError as exc:
            raise TransportError(f"no answer from {self.endpoint.url} within {self.timeout} s") from exc

    def _http_response(self, connection, future: asyncio.Future, status: int, body: bytes) -> None:
        if future.done():
            return
        try:
            future.set_result(orjson.loads(body))
        except orjson.JSONDecodeError:
            future.set_exception(TransportError(f"HTTP {status}: {body[:200]!r}"))

    def _http_failure(self, connection, future: asyncio.Future, reason: str) -> None:
        if not future.done():
            future.set_exception(TransportError(reason))

    async def _read_ws(self) -> None:
        reason = "websocket closed"
        try:
            async for message in self._ws:
                arrival = time.perf_counter()
                reply = orjson.loads(message)
                if isinstance(reply, list):
                    key = reply[0].get("id") if reply else None
                    reply_value: Any = reply
                elif reply.get("method") == "eth_subscription":
                    params = reply.get("params", {})
                    queue = self.subscriptions.get(params.get("subscription"))
                    if queue is not None:
                        queue.put_nowait((arrival, params.get("result")))
                    continue
                else:
                    key, reply_value = reply.get("id"), reply
                # A batch reply may come back in any order: look its ids up one by one.
                if isinstance(reply_value, list):
                    future = next((self._waiting.pop(r.get("id")) for r in reply_value if r.get("id") in self._waiting), None)
                else:
                    future = self._waiting.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(reply_value)
        except Exception as exc:  # broken: fail whoever waits
            reason = f"websocket closed: {exc}"
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(TransportError(reason))
            self._waiting.clear()

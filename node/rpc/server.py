"""JSON-RPC 2.0 transport: HTTP/1.1 and WebSocket on one port.

The eth_* methods live elsewhere (the method map handed to `RpcServer`); this module
only moves requests in and responses out, as cheaply as Python allows:

    socket ──► _Connection (asyncio.Protocol)
                 │ HTTP: httptools parser ── POST body ─┐
                 │       GET route / OPTIONS / errors   │
                 │ WS:   websockets' sans-I/O Protocol ─┤ (after the 101 upgrade)
                 ▼                                      ▼
               RpcServer.dispatch(body, session) ── orjson ── handler(params, session)
                 │   result (sync) ──► response bytes, written at once
                 │   awaitable      ──► task; the response is written when it settles
                 ▼
               HTTP: responses leave in request order (pipelining), keep-alive
               WS:   responses leave as they settle; Session.notify pushes messages

Why no framework: PERFORMANCE.md measured aiohttp at 3.6-4.5x the cost of a raw
protocol per request, and the RPC shares one core with execution.

A connection's states: HTTP (keep-alive, pipelined) ──101──► WebSocket (OPEN ──►
CLOSING ──► closed); from HTTP, a Connection: close, an HTTP/1.0 request without
keep-alive or a rejected request (400/413/431) leads to "finishing": the answers
still owed go out in order, then a half-close, reading and discarding whatever the
client still sends for up to 2 s (so it sees our answer, not a reset), then close.

Bounds, so that no client grows the server's memory without limit:
  - request body / WS message      max_body_bytes (5 MiB, as geth)
  - request head                   max_header_bytes (1 MiB, as Go's net/http)
  - answers owed on a connection   128 (pipelined HTTP requests or WS requests whose
                                   handler still awaits); past that the connection is
                                   not read until half of them are out
  - outgoing WS buffer             max_ws_buffer_bytes (16 MiB): a subscriber that
                                   does not read gets close 1008 and its Session is
                                   closed at once (on_close callbacks run, notify
                                   becomes a no-op); if it still does not take the
                                   close frame within ws_close_timeout (5 s), the TCP
                                   connection is dropped
  - kernel write buffer full       the connection is not read until it drains

Rules for handlers and the code that pushes notifications:
  - everything runs on the event loop thread; call Session.notify from it;
  - notifications a *synchronous* handler sends on its own session are delivered
    after that handler's answer (an eth_subscribe answer precedes its first push);
    from an async handler there is no such ordering, so keep eth_subscribe sync;
  - on HTTP, Session.notify is a no-op (is_websocket tells the handler);
  - a connection that closes while its handler still awaits: the handler runs to
    completion (it is not cancelled), its answer is dropped; RpcServer.stop()
    cancels the handlers still awaiting.
  - Content-Type is not checked (geth answers 415 to anything but JSON; anvil and
    curl users send anything), no compression is negotiated on WebSocket.

Errors (what a client sees; codes follow geth and anvil):
  -32700 parse error            body is not JSON
  -32600 invalid request        not an object, bad "jsonrpc", missing method, bad id,
                                empty batch, batch over `max_batch`
  -32601 method not found       "the method X does not exist/is not available"
  -32602 invalid params         params neither array nor object, or the handler
                                raised TypeError (a bad arity)
  RpcError(code, message, data) raised by a handler goes out as is
  -32603 internal error         any other exception (logged with its traceback)
  HTTP 413                      body over `max_body_bytes` (message as geth's:
                                "content length too large (N>M)"), then the connection
                                is closed cleanly, as Go's net/http does
  HTTP 405 / 400 / 431          other HTTP methods / unparsable HTTP / huge headers
  WS close 1009                 incoming message over `max_body_bytes`
  WS close 1008                 outgoing buffer over `max_ws_buffer_bytes` (a consumer
                                that does not read its subscriptions)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import logging
from collections import deque
from time import perf_counter
from typing import Awaitable, Callable

import httptools
import orjson
from websockets.frames import Opcode
from websockets.protocol import Protocol as WsProtocol
from websockets.protocol import Side, State

log = logging.getLogger(__name__)

__all__ = ["RpcError", "Session", "Handler", "RpcServer"]


class RpcError(Exception):
    """A JSON-RPC error a handler raises on purpose; sent to the client as is."""

    def __init__(self, code: int, message: str, data: object = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Session:
    """One client connection, as a handler sees it.

    `notify` pushes a JSON-RPC notification (WebSocket only; on HTTP, and once the
    connection is closed, it is a no-op). `on_close` callbacks run once when the
    connection closes, or as soon as the server gives up on a consumer that does not
    read (the subscriptions should stop producing then)."""

    __slots__ = ("is_websocket", "closed", "_connection", "_close_callbacks", "_deferred")

    def __init__(self, connection: "_Connection", is_websocket: bool = False):
        self.is_websocket = is_websocket
        self.closed = False
        self._connection = connection
        self._close_callbacks: list[Callable[[], None]] = []
        # While a handler runs synchronously on this session, its own notifications
        # wait here so that e.g. an eth_subscribe answer precedes the first push.
        self._deferred: list[bytes] | None = None

    def notify(self, method: str, params: object) -> None:
        if self.closed or not self.is_websocket:
            return
        try:
            message = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params})
        except TypeError:
            log.exception("notification %s is not JSON-serializable; dropped", method)
            return
        if self._deferred is not None:
            self._deferred.append(message)
        else:
            self._connection.ws_send(message)

    def on_close(self, callback: Callable[[], None]) -> None:
        if self.closed:
            callback()
        else:
            self._close_callbacks.append(callback)

    def _mark_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("session close callback failed")


Handler = Callable[[list | dict, Session], object]
Route = Callable[[], tuple[str, bytes]]
Observer = Callable[[str, float, int | None], None]

# Types a handler returns synchronously on the hot path; anything else is checked for
# being awaitable.
_PLAIN = frozenset({str, int, dict, list, bool, type(None), float, tuple})

# Observer labels for requests that name no method of the map: the metric stays
# bounded whatever names clients send.
UNKNOWN_METHOD = "<unknown>"
INVALID_REQUEST = "<invalid>"


def _error(req_id: object, code: int, message: str, data: object = None) -> dict:
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": error}


_PARSE_ERROR = orjson.dumps(_error(None, -32700, "parse error"))
_EMPTY_BATCH = orjson.dumps(_error(None, -32600, "empty batch"))
_INVALID_REQUEST = _error(None, -32600, "invalid request")


class RpcServer:
    """Serves a method map over HTTP and WebSocket on one TCP port."""

    def __init__(
        self,
        methods: dict[str, Handler],
        *,
        host: str = "127.0.0.1",
        port: int = 8545,
        max_body_bytes: int = 5 * 1024 * 1024,
        max_batch: int = 1000,
        routes: dict[str, Route] | None = None,
        observer: Observer | None = None,
        max_ws_buffer_bytes: int = 16 * 1024 * 1024,
        max_header_bytes: int = 1024 * 1024,
        ws_close_timeout: float = 5.0,
    ):
        self.methods = methods
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.routes = dict(routes or {})
        self.observer = observer
        self.max_ws_buffer_bytes = max_ws_buffer_bytes
        self.max_header_bytes = max_header_bytes
        self.ws_close_timeout = ws_close_timeout
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Future] = set()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for connection in list(self._connections):
            connection.shutdown()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    # -- JSON-RPC dispatch -----------------------------------------------------------

    def dispatch(self, body: bytes, session: Session) -> bytes | None | asyncio.Future:
        """Answer one HTTP body or WS message: response bytes, None (only
        notifications), or a future of either when a handler is asynchronous."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._observe(INVALID_REQUEST, 0.0, -32700)
            return _PARSE_ERROR
        if type(message) is dict:
            response = self._call(message, session)
            if type(response) is dict:
                return self._encode(response)
            if response is None:
                return None
            return self._spawn(self._settle_one(response))
        if type(message) is list:
            if not message:
                self._observe(INVALID_REQUEST, 0.0, -32600)
                return _EMPTY_BATCH
            if len(message) > self.max_batch:
                # geth answers a one-element batch carrying the first call's id.
                first_id = next(
                    (m["id"] for m in message if type(m) is dict and "id" in m), None
                )
                self._observe(INVALID_REQUEST, 0.0, -32600)
                return self._encode([_error(first_id, -32600, "batch too large")])
            responses = []
            pending = False
            for item in message:
                if type(item) is dict:
                    response = self._call(item, session)
                    if response is None:
                        continue
                    if type(response) is not dict:
                        pending = True
                else:
                    self._observe(INVALID_REQUEST, 0.0, -32600)
                    response = _INVALID_REQUEST
                responses.append(response)
            if pending:
                return self._spawn(self._settle_batch(responses))
            return self._encode(responses) if responses else None
        self._observe(INVALID_REQUEST, 0.0, -32600)
        return self._encode(_INVALID_REQUEST)

    def _call(self, request: dict, session: Session) -> dict | None | asyncio.Future:
        """One request object: a response dict, None for a notification, or the
        task that will produce the response dict."""
        is_call = "id" in request
        req_id = request.get("id")
        method = request.get("method")
        if (
            request.get("jsonrpc") != "2.0"
            or type(method) is not str
            or type(req_id) is dict
            or type(req_id) is list
        ):
            self._observe(INVALID_REQUEST, 0.0, -32600)
            return _error(req_id if type(req_id) not in (dict, list) else None, -32600, "invalid request")
        handler = self.methods.get(method)
        if handler is None:
            self._observe(UNKNOWN_METHOD, 0.0, -32601)
            if not is_call:
                return None
            return _error(req_id, -32601, f"the method {method} does not exist/is not available")
        params = request.get("params")
        if params is None:
            params = []
        elif type(params) is not list and type(params) is not dict:
            self._observe(method, 0.0, -32602)
            return _error(req_id, -32602, "non-array args") if is_call else None
        started = perf_counter() if self.observer is not None else 0.0
        try:
            result = handler(params, session)
        except Exception as exc:
            response = self._fail(req_id, method, exc, started)
            return response if is_call else None
        if type(result) not in _PLAIN and inspect.isawaitable(result):
            task = self._spawn(self._settle_call(req_id, method, result, started))
            return task if is_call else None
        if started:
            self._observe(method, perf_counter() - started, None)
        if not is_call:
            return None
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    async def _settle_call(
        self, req_id: object, method: str, awaitable: Awaitable, started: float
    ) -> dict:
        try:
            result = await awaitable
        except Exception as exc:
            return self._fail(req_id, method, exc, started)
        if started:
            self._observe(method, perf_counter() - started, None)
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    async def _settle_one(self, task: asyncio.Future) -> bytes:
        return self._encode(await task)

    async def _settle_batch(self, responses: list) -> bytes:
        for index, response in enumerate(responses):
            if type(response) is not dict:
                responses[index] = await response
        return self._encode(responses)

    def _fail(self, req_id: object, method: str, exc: Exception, started: float) -> dict:
        if isinstance(exc, RpcError):
            code, message, data = exc.code, exc.message, exc.data
        elif isinstance(exc, TypeError):
            # A handler called with the wrong number or kind of params; geth calls
            # this invalid params too. Logged at debug: a TypeError from a bug deeper
            # down looks the same from here.
            log.debug("invalid params for %s", method, exc_info=True)
            code, message, data = -32602, f"invalid params: {exc}", None
        else:
            log.error("internal error in %s", method, exc_info=exc)
            code, message, data = -32603, "internal error", None
        if started:
            self._observe(method, perf_counter() - started, code)
        return _error(req_id, code, message, data)

    def _encode(self, response: dict | list) -> bytes:
        try:
            return orjson.dumps(response)
        except TypeError:
            # A handler returned something orjson cannot write (bytes, a custom
            # object): answer that call with an internal error, keep the others.
            log.error("result is not JSON-serializable", exc_info=True)
            if type(response) is list:
                return b"[" + b",".join(self._encode(r) for r in response) + b"]"
            return orjson.dumps(_error(response.get("id"), -32603, "internal error"))

    def _observe(self, method: str, seconds: float, code: int | None) -> None:
        observer = self.observer
        if observer is None:
            return
        try:
            observer(method, seconds, code)
        except Exception:
            log.exception("rpc observer failed")

    def _spawn(self, coroutine) -> asyncio.Future:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


# -- HTTP and WebSocket framing ------------------------------------------------------

_REASONS = {
    200: b"OK", 204: b"No Content", 400: b"Bad Request", 404: b"Not Found",
    405: b"Method Not Allowed", 413: b"Request Entity Too Large",
    426: b"Upgrade Required", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}
_JSON = b"application/json"
_CORS = b"Access-Control-Allow-Origin: *\r\n"
_OK_JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + _CORS + b"Content-Length: %d\r\n\r\n"
_OK_JSON_HEAD_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + _CORS
    + b"Connection: close\r\nContent-Length: %d\r\n\r\n"
)
_OK_JSON_HEAD_KEEP_10 = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + _CORS
    + b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n"
)
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TEXT_FIN, _TEXT_FIN_16, _TEXT_FIN_64 = b"\x81", b"\x81\x7e", b"\x81\x7f"
_SHORT_LENGTHS = [bytes((n,)) for n in range(126)]
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Pipelined requests a connection may have outstanding before we stop reading it.
_MAX_PIPELINE = 128
# After a 413 we keep draining what the client still sends for this long, so that our
# response is not destroyed by a TCP reset, then drop the connection.
_LINGER_SECONDS = 2.0


def _response(status: int, body: bytes = b"", content_type: bytes = _JSON,
              extra: bytes = b"", close: bool = False) -> bytes:
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error"))
    if body or status not in (204,):
        head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
    head += _CORS + extra
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


class _Connection(asyncio.Protocol):
    """One TCP connection: HTTP/1.1 until a WebSocket upgrade, then WebSocket."""

    def __init__(self, server: RpcServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.session = Session(self)
        self.parser = httptools.HttpRequestParser(self)
        self.ws: WsProtocol | None = None
        # HTTP request being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        # Bytes of the chunks that touched the request head being read: httptools
        # buffers a head internally, so this is where its size is bounded.
        self.head_bytes = 0
        self.reading_head = True
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.rejected = False  # this request was already answered (413/431)
        # Responses in request order; a slot is [bytes | None, close_after].
        self.pending: deque[list] = deque()
        self.batched: list[bytes] | None = None  # writes gathered during data_received
        self.closing = False  # no more requests are read on this connection
        self.read_paused_for_write = False
        self.read_paused_for_pipeline = False
        self.linger: asyncio.TimerHandle | None = None
        self.eof_sent = False
        self.fragments: list[bytes] | None = None  # WS message being reassembled
        self.ws_in_flight = 0  # WS requests whose handler is still awaiting
        self.close_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.closing = True
        for timer in (self.linger, self.close_timer):
            if timer is not None:
                timer.cancel()
        self.session._mark_closed()

    def pause_writing(self) -> None:
        self.read_paused_for_write = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.read_paused_for_write = False
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        # Everything answered while handling this chunk (pipelined requests, a WS
        # batch of messages) leaves in one write.
        self.batched = []
        try:
            if self.ws is not None:
                self._ws_receive(data)
            elif self.closing:
                pass  # draining after a 413 or a Connection: close
            else:
                try:
                    self.parser.feed_data(data)
                    if self.reading_head:
                        # Counts whole chunks, so it can overshoot by one chunk
                        # (<= 256 KiB on uvloop); the limit is Go's 1 MiB default.
                        self.head_bytes += len(data)
                        if self.head_bytes > self.server.max_header_bytes:
                            self._reject(431, "request header fields too large")
                except httptools.HttpParserUpgrade as upgrade:
                    self._upgrade(data[upgrade.args[0]:])
                except httptools.HttpParserError as exc:
                    self._reject(400, f"bad HTTP request: {exc}")
        finally:
            self._flush_batched()

    def eof_received(self) -> bool:
        # The client finished sending; answer what is still pending, then close.
        if self.ws is None and self.pending:
            self.closing = True
            self.pending[-1][1] = True
            return True
        return False

    # -- HTTP parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.body_bytes = 0
        self.rejected = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.head_bytes = 0
        if self.rejected or self.closing:
            return
        limit = self.server.max_body_bytes
        for name, value in self.headers:
            # Length first: lower-casing every header name is a measurable cost.
            if len(name) == 14 and name.lower() == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0
                if length > limit:
                    self._reject(413, f"content length too large ({length}>{limit})")
                    return
            elif len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
                # curl waits for this before sending bodies over 1 KiB.
                self._write(_CONTINUE)

    def on_body(self, chunk: bytes) -> None:
        if self.rejected:
            return
        self.body_bytes += len(chunk)
        if self.body_bytes > self.server.max_body_bytes:
            # Chunked bodies announce no length: we learn it while reading.
            self._reject(
                413, f"content length too large ({self.body_bytes}>{self.server.max_body_bytes})"
            )
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.reading_head = True
        if self.rejected or self.closing or self.parser.should_upgrade():
            # Answered already, past a Connection: close, or an upgrade that
            # data_received handles.
            return
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        if method == b"POST":
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            answer = self.server.dispatch(body, self.session)
            if keep_alive:
                head = _OK_JSON_HEAD if self.parser.get_http_version() == "1.1" else _OK_JSON_HEAD_KEEP_10
            else:
                head = _OK_JSON_HEAD_CLOSE
            if type(answer) is bytes:
                self._emit((head % len(answer)) + answer, not keep_alive)
            elif answer is None:
                # Only notifications: JSON-RPC answers nothing; like geth, an empty 200.
                self._emit(head % 0, not keep_alive)
            else:
                slot = [None, not keep_alive]
                self._queue(slot)
                answer.add_done_callback(lambda task: self._settle(slot, task, head))
        elif method == b"GET" or method == b"HEAD":
            self._emit(self._route(method, keep_alive), not keep_alive)
        elif method == b"OPTIONS":
            self._emit(self._preflight(keep_alive), not keep_alive)
        else:
            self._emit(
                _response(405, orjson.dumps(_error(None, -32600, "method not allowed")),
                          extra=b"Allow: POST, GET, OPTIONS\r\n", close=not keep_alive),
                not keep_alive,
            )

    # -- HTTP answers ------------------------------------------------------------------

    def _settle(self, slot: list, task: asyncio.Future, head: bytes) -> None:
        if task.cancelled():
            slot[0], slot[1] = b"", True  # the server is stopping
        else:
            body = task.result() or b""
            slot[0] = (head % len(body)) + body
        self._drain_pending()

    def _route(self, method: bytes, keep_alive: bool) -> bytes:
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        route = self.server.routes.get(path)
        if route is None:
            # As geth: a plain GET is a health check and answers 200 with no body.
            return _response(200, b"", close=not keep_alive)
        try:
            content_type, body = route()
        except Exception:
            log.exception("route %s failed", path)
            return _response(500, b"internal error", b"text/plain", close=not keep_alive)
        if method == b"HEAD":
            head = _response(200, body, content_type.encode(), close=not keep_alive)
            return head[: len(head) - len(body)]
        return _response(200, body, content_type.encode(), close=not keep_alive)

    def _preflight(self, keep_alive: bool) -> bytes:
        requested = b"Content-Type"
        for name, value in self.headers:
            if name.lower() == b"access-control-request-headers":
                requested = value
        extra = (
            b"Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n"
            b"Access-Control-Allow-Headers: %s\r\nAccess-Control-Max-Age: 600\r\n" % requested
        )
        return _response(204, extra=extra, close=not keep_alive)

    def _reject(self, status: int, message: str) -> None:
        """Answer this request with an HTTP error and stop reading the connection:
        what follows in the stream can no longer be framed reliably."""
        self.rejected = True
        if self.closing:
            return
        body = orjson.dumps(_error(None, -32600, message))
        self._emit(_response(status, body, close=True), True)
        self.closing = True

    # -- writing in request order --------------------------------------------------------

    def _emit(self, data: bytes, close_after: bool) -> None:
        if self.pending:
            self._queue([data, close_after])
            self._drain_pending()
            return
        self._write(data)
        if close_after:
            self._finish()

    def _queue(self, slot: list) -> None:
        self.pending.append(slot)
        if len(self.pending) > _MAX_PIPELINE and not self.read_paused_for_pipeline:
            self.read_paused_for_pipeline = True
            self._update_reading()

    def _drain_pending(self) -> None:
        pending = self.pending
        while pending and pending[0][0] is not None:
            data, close_after = pending.popleft()
            if data:
                self._write(data)
            if close_after:
                pending.clear()
                self._finish()
                return
        if self.read_paused_for_pipeline and len(pending) <= _MAX_PIPELINE // 2:
            self.read_paused_for_pipeline = False
            self._update_reading()

    def _write(self, data: bytes) -> None:
        if self.batched is not None:
            self.batched.append(data)
        elif not self.eof_sent and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _flush_batched(self) -> None:
        batched, self.batched = self.batched, None
        if batched and not self.eof_sent and not self.transport.is_closing():
            self.transport.write(batched[0] if len(batched) == 1 else b"".join(batched))

    def _finish(self) -> None:
        """The last response is out: half-close and drain, then close."""
        self.closing = True
        self._flush_batched()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
            self.eof_sent = True
            self.linger = asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.abort)
            self._update_reading()
        else:
            transport.close()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        paused = self.read_paused_for_write or self.read_paused_for_pipeline
        # While lingering we must keep reading so the peer's data is drained.
        if paused and self.linger is None:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def shutdown(self) -> None:
        """The server stops: WS peers get a 1001 close, HTTP connections close."""
        self.closing = True
        self.session._mark_closed()
        if self.transport is None or self.transport.is_closing():
            return
        if self.ws is not None and self.ws.state is State.OPEN:
            self.ws.send_close(1001, "server shutting down")
            self._ws_flush()
        self.transport.close()

    # -- WebSocket -----------------------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        headers: dict[bytes, bytes] = {}
        for name, value in self.headers:
            name = name.lower()
            headers[name] = value if name not in headers else headers[name] + b"," + value
        upgrade = headers.get(b"upgrade", b"").lower()
        connection = headers.get(b"connection", b"").lower()
        if (
            self.parser.get_method() != b"GET"
            or b"websocket" not in upgrade
            or b"upgrade" not in connection
            or self.pending  # a 101 must not overtake answers still owed
        ):
            self._reject(400, "unsupported upgrade")
            return
        if headers.get(b"sec-websocket-version", b"").strip() != b"13":
            self._emit(_response(426, b"", extra=b"Sec-WebSocket-Version: 13\r\n", close=True), True)
            return
        key = headers.get(b"sec-websocket-key", b"").strip()
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if not valid_key:
            self._reject(400, "invalid Sec-WebSocket-Key")
            return
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        self._write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept
        )
        # websockets' sans-I/O protocol does the framing (masking, fragments, control
        # frames, close handshake); the handshake above is ours, so no extension
        # (permessage-deflate) is negotiated: on loopback, compression is pure cost.
        self.ws = WsProtocol(Side.SERVER, state=State.OPEN, max_size=self.server.max_body_bytes)
        self.session.is_websocket = True
        self.headers = []
        self.read_paused_for_pipeline = False
        self._update_reading()
        if rest:
            self._ws_receive(rest)

    def _ws_receive(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for frame in ws.events_received():
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._ws_message(frame.data)
                else:
                    self.fragments = [frame.data]
            elif opcode is Opcode.CONT:
                # websockets already bounds the total size of a fragmented message.
                self.fragments.append(frame.data)
                if frame.fin:
                    message, self.fragments = b"".join(self.fragments), None
                    self._ws_message(message)
        self._ws_flush()

    def _ws_message(self, message: bytes) -> None:
        if self.ws.state is not State.OPEN:
            return
        session = self.session
        session._deferred = deferred = []
        try:
            answer = self.server.dispatch(message, session)
        finally:
            session._deferred = None
        if answer is _PARSE_ERROR and not _is_utf8(message):
            self.ws.fail(1007, "invalid UTF-8")  # RFC 6455 8.1
            self._ws_flush()
            return
        if type(answer) is bytes:
            self.ws_send(answer)
        elif answer is not None:
            # Bound the answers a WS client may have outstanding, as for pipelining.
            self.ws_in_flight += 1
            if self.ws_in_flight > _MAX_PIPELINE and not self.read_paused_for_pipeline:
                self.read_paused_for_pipeline = True
                self._update_reading()
            answer.add_done_callback(self._ws_settle)
        for notification in deferred:
            self.ws_send(notification)

    def _ws_settle(self, task: asyncio.Future) -> None:
        self.ws_in_flight -= 1
        if self.read_paused_for_pipeline and self.ws_in_flight <= _MAX_PIPELINE // 2:
            self.read_paused_for_pipeline = False
            self._update_reading()
        if not task.cancelled() and task.result() is not None:
            self.ws_send(task.result())

    def ws_send(self, message: bytes) -> None:
        ws = self.ws
        if ws is None or ws.state is not State.OPEN or self.transport.is_closing():
            return
        # A server's frame is unmasked and we never fragment, so the frame is written
        # here: websockets' send_text costs 1.0 µs a message, this 0.3 µs.
        n = len(message)
        if n < 126:
            head = _TEXT_FIN + _SHORT_LENGTHS[n]
        elif n < 65536:
            head = _TEXT_FIN_16 + n.to_bytes(2, "big")
        else:
            head = _TEXT_FIN_64 + n.to_bytes(8, "big")
        self._write(head + message)
        if self.transport.get_write_buffer_size() > self.server.max_ws_buffer_bytes:
            # The peer does not read what we send: stop here rather than buffer
            # without bound. The close frame queues behind the unread data, so the
            # peer gets `close_timeout` to take it before the connection is dropped.
            log.warning("websocket consumer too slow; closing with 1008")
            self.session._mark_closed()
            ws.send_close(1008, "outgoing buffer limit exceeded")
            self._ws_flush()

    def _ws_flush(self) -> None:
        ws = self.ws
        transport = self.transport
        for chunk in ws.data_to_send():
            if chunk:
                self._write(chunk)
            else:
                # websockets asks for a TCP close (closing handshake done, or failed).
                self._flush_batched()
                transport.close()
        if ws.state is not State.OPEN:
            self.session._mark_closed()
            # Whether we wait for the peer's close frame or for our buffer to drain
            # into a peer that does not read, the wait is bounded.
            if self.close_timer is None:
                self.close_timer = asyncio.get_running_loop().call_later(
                    self.server.ws_close_timeout, transport.abort
                )


def _is_utf8(data: bytes) -> bool:
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True

"""The JSON-RPC transport (node/rpc/server.py) against real clients over loopback.

Each server runs on port 0 in an event loop on a background thread (uvloop and the
stock asyncio loop both); the tests talk to it with raw sockets (framing edge cases),
http.client, the websockets sync client and web3.py. Nothing sleeps: every wait is on
an event, a socket timeout or a future, with a bound.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import logging
import os
import socket
import struct
import threading
from collections import defaultdict

import orjson
import pytest
import uvloop
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from node.rpc.server import RpcError, RpcServer, Session

TIMEOUT = 5.0
MAX_BODY = 64 * 1024


# -- harness -----------------------------------------------------------------------------


class LoopThread:
    """An event loop on its own thread, driven from the test thread."""

    def __init__(self, kind: str):
        self.loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def call(self, fn, *args):
        done: concurrent.futures.Future = concurrent.futures.Future()

        def invoke():
            try:
                done.set_result(fn(*args))
            except BaseException as exc:  # handed back to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return done.result(TIMEOUT)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


class App:
    """A tiny method map with knobs the tests turn."""

    def __init__(self):
        self.gates: dict[str, asyncio.Future] = {}
        self.entered: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.seen_params: list = []
        self.subscribers: dict[str, Session] = {}
        self.closed_sessions: list[Session] = []
        self.session_closed = threading.Event()
        self.observed: list[tuple[str, float, int | None]] = []

    def methods(self) -> dict:
        return {
            "eth_chainId": lambda params, session: "0x7a69",
            "eth_blockNumber": lambda params, session: "0x10",
            "echo": self.echo,
            "add": lambda params, session: (lambda a, b: a + b)(*params),
            "gated": self.gated,
            "revert": self.revert,
            "broken": self.broken,
            "bytes_result": lambda params, session: b"\x00",
            "is_ws": lambda params, session: session.is_websocket,
            "eth_subscribe": self.subscribe,
            "eth_unsubscribe": self.unsubscribe,
            "subscribe_and_push": self.subscribe_and_push,
        }

    def echo(self, params, session):
        self.seen_params.append(params)
        return params

    async def gated(self, params, session):
        """Answers only when the test opens the gate named params[0]."""
        name = params[0]
        self.gates[name] = asyncio.get_running_loop().create_future()
        self.entered[name].set()
        return await self.gates[name]

    def revert(self, params, session):
        raise RpcError(3, "execution reverted", "0x08c379a0")

    def broken(self, params, session):
        raise ValueError("a bug")

    def subscribe(self, params, session):
        if not session.is_websocket:
            raise RpcError(-32001, "notifications not supported")
        sub_id = hex(len(self.subscribers) + 1)
        self.subscribers[sub_id] = session
        session.on_close(lambda: self._closed(session))
        return sub_id

    def subscribe_and_push(self, params, session):
        # A push issued while the subscribe call runs must reach the client after
        # the answer that carries the subscription id.
        sub_id = self.subscribe(params, session)
        session.notify("eth_subscription", {"subscription": sub_id, "result": "first"})
        return sub_id

    def unsubscribe(self, params, session):
        return self.subscribers.pop(params[0], None) is not None

    def _closed(self, session):
        self.closed_sessions.append(session)
        self.session_closed.set()

    def observer(self, method, seconds, code):
        self.observed.append((method, seconds, code))


def metrics_route():
    return "text/plain; version=0.0.4", b"blixt_up 1\n"


class Node:
    def __init__(self, kind: str, **options):
        self.app = App()
        self.loop = LoopThread(kind)
        options.setdefault("max_body_bytes", MAX_BODY)
        options.setdefault("max_batch", 20)
        self.server = RpcServer(self.app.methods(), port=0, routes={"/metrics": metrics_route},
                                observer=self.app.observer, **options)
        self.loop.run(self.server.start())
        self.port = self.server.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def stop(self):
        self.loop.run(self.server.stop())
        self.loop.close()


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def node(request):
    node = Node(request.param)
    yield node
    node.stop()


@pytest.fixture
def fresh(request):
    """A server of its own, for tests that stop it or set odd limits."""
    nodes = []

    def make(**options):
        nodes.append(Node("uvloop", **options))
        return nodes[-1]

    yield make
    for n in nodes:
        n.stop()


def post(node, payload, path="/", headers=None):
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=TIMEOUT)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), (orjson.loads(data) if data else None)
    finally:
        conn.close()


def call(node, method, params=None, req_id=1):
    request = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        request["params"] = params
    status, _, body = post(node, request)
    assert status == 200
    return body


class RawHttp:
    """A bare socket that reads HTTP responses one at a time (for pipelining)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        """True when the server ends the connection with a FIN (not a reset)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except ConnectionResetError:
            return False

    def close(self):
        self.sock.close()


def http_post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def req(method, req_id=1, params=None) -> bytes:
    r = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        r["params"] = params
    return orjson.dumps(r)


# -- JSON-RPC semantics over HTTP --------------------------------------------------------


def test_single_call_answers_with_json_and_cors(node):
    status, headers, body = post(node, {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"})
    assert status == 200
    assert body == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}
    assert headers["Content-Type"] == "application/json"
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("req_id", [0, 2**63, -5, "abc", "", None, 1.5])
def test_ids_come_back_exactly(node, req_id):
    assert call(node, "eth_chainId", req_id=req_id) == {"jsonrpc": "2.0", "id": req_id, "result": "0x7a69"}


def test_omitted_or_null_params_are_an_empty_list(node):
    assert call(node, "echo")["result"] == []
    assert call(node, "echo", None)["result"] == []
    status, _, body = post(node, {"jsonrpc": "2.0", "id": 1, "method": "echo", "params": None})
    assert body["result"] == []
    assert call(node, "echo", {"a": 1})["result"] == {"a": 1}


def test_notification_gets_an_empty_answer(node):
    status, _, body = post(node, {"jsonrpc": "2.0", "method": "echo", "params": ["note"]})
    assert (status, body) == (200, None)
    assert ["note"] in node.app.seen_params


def test_errors_follow_geth_codes(node):
    status, _, body = post(node, b'{"jsonrpc": "2.0", "id": 1, "method": ')
    assert status == 200 and body["error"]["code"] == -32700 and body["id"] is None
    assert post(node, b"5")[2]["error"]["code"] == -32600
    assert post(node, {"jsonrpc": "2.0", "id": 3})[2] == {
        "jsonrpc": "2.0", "id": 3, "error": {"code": -32600, "message": "invalid request"}}
    assert post(node, {"jsonrpc": "1.0", "id": 4, "method": "eth_chainId"})[2]["error"]["code"] == -32600
    assert post(node, {"jsonrpc": "2.0", "id": {"x": 1}, "method": "eth_chainId"})[2]["error"]["code"] == -32600
    assert call(node, "eth_nope") == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32601, "message": "the method eth_nope does not exist/is not available"}}
    assert call(node, "echo", "not-a-list")["error"] == {"code": -32602, "message": "non-array args"}
    assert call(node, "add", [1, 2])["result"] == 3
    assert call(node, "add", [1])["error"]["code"] == -32602
    assert call(node, "revert") == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": 3, "message": "execution reverted", "data": "0x08c379a0"}}


def test_internal_errors_are_logged_and_the_server_keeps_serving(node, caplog):
    with caplog.at_level(logging.ERROR, logger="node.rpc.server"):
        assert call(node, "broken")["error"] == {"code": -32603, "message": "internal error"}
        assert call(node, "bytes_result")["error"]["code"] == -32603
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in caplog.records)
    assert call(node, "eth_chainId")["result"] == "0x7a69"


def test_batch_answers_in_order_and_skips_notifications(node):
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "method": "echo", "params": ["quiet"]},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_nope"},
        7,
        {"jsonrpc": "2.0", "id": None, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 4, "method": "revert"},
    ]
    status, _, body = post(node, batch)
    assert status == 200
    assert [r.get("result", r.get("error", {}).get("code")) for r in body] == [
        "0x7a69", -32601, -32600, "0x10", 3]
    assert [r["id"] for r in body] == ["a", 2, None, None, 4]


def test_batch_limits(node):
    assert post(node, [])[2] == {"jsonrpc": "2.0", "id": None,
                                 "error": {"code": -32600, "message": "empty batch"}}
    too_many = [{"jsonrpc": "2.0", "id": i + 100, "method": "eth_chainId"} for i in range(21)]
    assert post(node, too_many)[2] == [{"jsonrpc": "2.0", "id": 100,
                                        "error": {"code": -32600, "message": "batch too large"}}]
    only_notes = [{"jsonrpc": "2.0", "method": "echo"}] * 3
    assert post(node, only_notes)[:3:2] == (200, None)


def test_async_batch_keeps_order(node):
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "gated", "params": ["batch-1"]},
             {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"}]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, node, batch)
        assert node.app.entered["batch-1"].wait(TIMEOUT)
        node.loop.call(node.app.gates["batch-1"].set_result, "late")
        assert [r["result"] for r in answer.result(TIMEOUT)[2]] == ["late", "0x7a69"]


def test_observer_sees_each_call_with_bounded_names(node):
    node.app.observed.clear()
    call(node, "eth_chainId")
    call(node, "revert")
    call(node, "eth_random_name_123")
    names = [(m, c) for m, _, c in node.app.observed]
    assert names == [("eth_chainId", None), ("revert", 3), ("<unknown>", -32601)]
    assert all(s >= 0 for _, s, _ in node.app.observed)


# -- concurrency and ordering ------------------------------------------------------------


def test_awaiting_handler_does_not_block_other_connections(node):
    slow = RawHttp(node.port)
    try:
        slow.send(http_post(req("gated", 1, ["other-conn"])))
        assert node.app.entered["other-conn"].wait(TIMEOUT)
        assert call(node, "eth_blockNumber")["result"] == "0x10"  # meanwhile, elsewhere
        node.loop.call(node.app.gates["other-conn"].set_result, "released")
        assert orjson.loads(slow.response()[2])["result"] == "released"
    finally:
        slow.close()


def test_pipelined_responses_leave_in_request_order(node):
    raw = RawHttp(node.port)
    try:
        raw.send(http_post(req("gated", 1, ["pipe"])) + http_post(req("echo", 2, ["fast"]))
                 + b"".join(http_post(req("eth_chainId", i)) for i in range(3, 40)))
        assert node.app.entered["pipe"].wait(TIMEOUT)
        assert call(node, "eth_chainId")["result"] == "0x7a69"  # the server is not stuck
        raw.sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # the fast answers wait behind the slow one
            raw.sock.recv(1)
        raw.sock.setblocking(True)
        raw.sock.settimeout(TIMEOUT)
        node.loop.call(node.app.gates["pipe"].set_result, "slow")
        answers = [orjson.loads(raw.response()[2]) for _ in range(39)]
        assert [a["id"] for a in answers] == list(range(1, 40))
        assert answers[0]["result"] == "slow" and answers[1]["result"] == ["fast"]
    finally:
        raw.close()


def test_keep_alive_serves_many_requests_on_one_connection(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=TIMEOUT)
    try:
        for i in range(50):
            conn.request("POST", "/", req("eth_chainId", i), {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert orjson.loads(response.read())["id"] == i
            assert not response.will_close
    finally:
        conn.close()


# -- HTTP framing ------------------------------------------------------------------------


def test_chunked_body_is_accepted(node):
    body = req("echo", 9, ["chunked"])
    parts = [body[:10], body[10:]]
    raw = RawHttp(node.port)
    try:
        raw.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
        status, _, answer = raw.response()
        assert status == 200 and orjson.loads(answer)["result"] == ["chunked"]
    finally:
        raw.close()


def test_expect_continue_gets_an_interim_answer(node):
    body = req("eth_chainId", 1)
    raw = RawHttp(node.port)
    try:
        raw.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
        assert raw.response()[0] == 100
        raw.send(body)
        assert orjson.loads(raw.response()[2])["result"] == "0x7a69"
    finally:
        raw.close()


def test_oversized_body_gets_413_like_geth_and_a_clean_close(node):
    raw = RawHttp(node.port)
    try:
        size = MAX_BODY + 1
        raw.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * 4096)
        status, headers, body = raw.response()
        assert status == 413 and headers["connection"] == "close"
        assert orjson.loads(body)["error"]["message"] == f"content length too large ({size}>{MAX_BODY})"
        raw.send(b"x" * (size - 4096))  # the client may still be sending; we drain it
        assert raw.closed_by_server()
    finally:
        raw.close()
    assert call(node, "eth_chainId")["result"] == "0x7a69"


def test_oversized_chunked_body_gets_413(node):
    raw = RawHttp(node.port)
    try:
        chunk = b"y" * 16384
        raw.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%s\r\n" % (len(chunk), chunk) * (MAX_BODY // len(chunk) + 1))
        status, _, body = raw.response()
        assert status == 413 and "content length too large" in orjson.loads(body)["error"]["message"]
        assert raw.closed_by_server()
    finally:
        raw.close()


def test_garbage_http_gets_400_and_the_server_keeps_serving(node):
    raw = RawHttp(node.port)
    try:
        raw.send(b"\x16\x03\x01 this is not http\r\n\r\n")
        assert raw.response()[0] == 400
        assert raw.closed_by_server()
    finally:
        raw.close()
    assert call(node, "eth_chainId")["result"] == "0x7a69"


def test_huge_headers_get_431(fresh):
    node = fresh(max_header_bytes=4096)
    raw = RawHttp(node.port)
    try:
        raw.send(b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        raw.send(b"z" * 8192)
        assert raw.response()[0] == 431
    finally:
        raw.close()


def test_get_routes_health_options_and_wrong_methods(node):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"blixt_up 1\n")
        assert response.getheader("Content-Type") == "text/plain; version=0.0.4"
        conn.request("GET", "/")  # geth's health check: an empty 200
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"")
        conn.request("OPTIONS", "/", headers={
            "Origin": "http://dapp.local", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        response = conn.getresponse()
        response.read()
        assert response.status == 204
        assert response.getheader("Access-Control-Allow-Origin") == "*"
        assert "POST" in response.getheader("Access-Control-Allow-Methods")
        assert response.getheader("Access-Control-Allow-Headers") == "content-type"
        conn.request("PUT", "/", body=b"{}")
        response = conn.getresponse()
        response.read()
        assert response.status == 405
    finally:
        conn.close()


def test_http10_without_keep_alive_is_closed_after_the_answer(node):
    raw = RawHttp(node.port)
    try:
        body = req("eth_chainId", 1)
        raw.send(b"POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        status, headers, answer = raw.response()
        assert status == 200 and headers["connection"] == "close"
        assert orjson.loads(answer)["result"] == "0x7a69"
        assert raw.closed_by_server()
    finally:
        raw.close()


def test_http10_keep_alive_is_honoured(node):
    raw = RawHttp(node.port)
    try:
        for i in range(2):
            body = req("eth_chainId", i)
            raw.send(b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\n\r\n"
                     % len(body) + body)
            status, headers, answer = raw.response()
            assert headers["connection"] == "keep-alive" and orjson.loads(answer)["id"] == i
    finally:
        raw.close()


def test_binds_loopback_only_by_default(node):
    assert RpcServer({}).host == "127.0.0.1"
    assert node.server._server.sockets[0].getsockname()[0] == "127.0.0.1"


def test_http_session_is_not_a_websocket(node):
    assert call(node, "is_ws")["result"] is False
    assert call(node, "eth_subscribe", ["newHeads"])["error"]["code"] == -32001


def test_web3_http_provider(node):
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(node.url, request_kwargs={"timeout": TIMEOUT}))
    assert w3.eth.chain_id == 31337
    assert w3.eth.block_number == 16
    with w3.batch_requests() as batch:
        batch.add(w3.eth.get_block_number())
        batch.add(w3.eth.get_block_number())
        assert batch.execute() == [16, 16]


# -- WebSocket ---------------------------------------------------------------------------


def ws_open(node, **options):
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("close_timeout", TIMEOUT)
    return ws_connect(node.ws_url, **options)


def test_ws_requests_batches_and_binary_frames(node):
    with ws_open(node) as ws:
        ws.send(req("eth_chainId", 1).decode())
        assert orjson.loads(ws.recv(TIMEOUT)) == {"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}
        ws.send(orjson.dumps([{"jsonrpc": "2.0", "id": 2, "method": "is_ws"},
                              {"jsonrpc": "2.0", "id": 3, "method": "eth_nope"}]))  # binary
        answer = orjson.loads(ws.recv(TIMEOUT))
        assert answer[0]["result"] is True and answer[1]["error"]["code"] == -32601
        ws.send("{not json")
        assert orjson.loads(ws.recv(TIMEOUT))["error"]["code"] == -32700


def test_ws_fragmented_message_and_ping(node):
    with ws_open(node) as ws:
        text = req("echo", 5, ["x" * 3000]).decode()
        ws.send([text[:1000], text[1000:2000], text[2000:]])  # one message, three frames
        assert orjson.loads(ws.recv(TIMEOUT))["result"] == ["x" * 3000]
        assert ws.ping(b"hi").wait(TIMEOUT)


def test_ws_async_answers_do_not_hold_up_others(node):
    with ws_open(node) as ws:
        ws.send(req("gated", 1, ["ws-gate"]).decode())
        assert node.app.entered["ws-gate"].wait(TIMEOUT)
        ws.send(req("eth_chainId", 2).decode())
        assert orjson.loads(ws.recv(TIMEOUT))["id"] == 2
        node.loop.call(node.app.gates["ws-gate"].set_result, "done")
        assert orjson.loads(ws.recv(TIMEOUT)) == {"jsonrpc": "2.0", "id": 1, "result": "done"}


def test_ws_subscription_flow(node):
    with ws_open(node) as ws:
        ws.send(req("subscribe_and_push", 1, ["newHeads"]).decode())
        answer = orjson.loads(ws.recv(TIMEOUT))
        sub_id = answer["result"]
        first = orjson.loads(ws.recv(TIMEOUT))
        assert first == {"jsonrpc": "2.0", "method": "eth_subscription",
                         "params": {"subscription": sub_id, "result": "first"}}
        session = node.app.subscribers[sub_id]
        for n in range(3):
            node.loop.call(session.notify, "eth_subscription",
                           {"subscription": sub_id, "result": {"number": hex(n)}})
        pushed = [orjson.loads(ws.recv(TIMEOUT))["params"]["result"]["number"] for _ in range(3)]
        assert pushed == ["0x0", "0x1", "0x2"]
        ws.send(req("eth_unsubscribe", 2, [sub_id]).decode())
        assert orjson.loads(ws.recv(TIMEOUT))["result"] is True
        node.app.session_closed.clear()
    assert node.app.session_closed.wait(TIMEOUT)
    assert session.closed and session in node.app.closed_sessions
    node.loop.call(session.notify, "eth_subscription", {"late": True})  # no-op once closed


def test_ws_oversized_message_closes_with_1009(node):
    with ws_open(node, max_size=None) as ws:
        ws.send("[" + "1," * MAX_BODY + "1]")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.rcvd.code == 1009


def test_ws_invalid_utf8_closes_with_1007(node):
    raw = RawWs(node.port)
    try:
        raw.send_frame(0x1, b"\xff\xfe not utf-8")
        opcode, payload = raw.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1007
    finally:
        raw.close()


def test_ws_close_handshake_from_the_client(node):
    raw = RawWs(node.port)
    try:
        raw.send_frame(0x9, b"ping!")
        assert raw.read_frame() == (0xA, b"ping!")
        raw.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
        opcode, payload = raw.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
        assert raw.sock.recv(1) == b""  # the server closes the TCP connection
    finally:
        raw.close()


def test_ws_bad_handshake_is_refused(node):
    raw = RawHttp(node.port)
    try:
        raw.send(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: "
                 + base64.b64encode(os.urandom(16)) + b"\r\n\r\n")
        status, headers, _ = raw.response()
        assert status == 426 and headers["sec-websocket-version"] == "13"
    finally:
        raw.close()


def test_ws_slow_consumer_is_closed_with_1008(fresh):
    node = fresh(max_ws_buffer_bytes=256 * 1024)
    raw = RawWs(node.port, rcvbuf=16384)
    try:
        raw.send_frame(0x1, req("eth_subscribe", 1, ["newHeads"]))
        assert orjson.loads(raw.read_frame()[1])["result"] == "0x1"
        session = node.app.subscribers["0x1"]
        blob = {"subscription": "0x1", "result": "z" * 16384}

        def flood():
            # The client reads nothing; the kernel buffers fill, then ours.
            for sent in range(20000):
                if session.closed:
                    return sent
                session.notify("eth_subscription", blob)
            return None

        sent = node.loop.call(flood)
        assert sent is not None and node.app.session_closed.wait(TIMEOUT)
        frames = []
        while True:  # what was queued arrives, then the close frame
            opcode, payload = raw.read_frame()
            frames.append(opcode)
            if opcode == 0x8:
                assert struct.unpack("!H", payload[:2])[0] == 1008
                break
        assert frames.count(0x1) <= sent
    finally:
        raw.close()


def test_stop_closes_websockets_with_1001_and_runs_close_callbacks(fresh):
    node = fresh()
    with ws_open(node) as ws:
        ws.send(req("eth_subscribe", 1, ["logs"]).decode())
        assert orjson.loads(ws.recv(TIMEOUT))["result"] == "0x1"
        node.loop.run(node.server.stop())
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert closed.value.rcvd.code == 1001
    assert node.app.session_closed.is_set()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", node.port), timeout=TIMEOUT).close()


class RawWs:
    """A hand-driven WebSocket client, for frames the library client won't send."""

    def __init__(self, port, rcvbuf: int | None = None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101")

    def send_frame(self, opcode: int, payload: bytes):
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def _need(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def read_frame(self):
        self._need(2)
        opcode, n, head = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        if n == 126:
            self._need(4)
            n, head = struct.unpack("!H", self.buffer[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, head = struct.unpack("!Q", self.buffer[2:10])[0], 10
        self._need(head + n)
        payload, self.buffer = self.buffer[head:head + n], self.buffer[head + n:]
        return opcode, payload

    def close(self):
        self.sock.close()

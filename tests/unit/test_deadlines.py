"""The total deadline of an outbound call, against real servers on loopback that trickle their
answer a byte a second or never answer: each call returns within its deadline (plus a
generous margin: a correctness bound, not a benchmark)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rollback_operator.deadlines import Deadline, DeadlineExceededError, connect, request
from tests.slow_servers import silent as silent_server
from tests.slow_servers import trickle

MARGIN = 2.0


def test_the_time_left_shrinks_and_a_nested_deadline_never_outlasts_its_parent() -> None:
    now = [100.0]
    deadline = Deadline(5, clock=lambda: now[0])
    now[0] = 103.0
    assert deadline.left() == pytest.approx(2.0)
    assert deadline.within(10).left() == pytest.approx(2.0)
    assert deadline.within(1).left() == pytest.approx(1.0)
    now[0] = 106.0
    assert deadline.left() == 0
    with pytest.raises(DeadlineExceededError):
        deadline.timeout()


@pytest.mark.parametrize("headers", [True, False], ids=["status line", "body"])
def test_an_http_answer_trickled_a_byte_a_second_ends_at_the_deadline(headers: bool) -> None:
    with trickle(0.5, headers=headers) as server:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            request("GET", server.url, deadline=Deadline(2))
        took = time.monotonic() - started
    assert 1.5 <= took < 2 + MARGIN


def test_a_server_that_never_answers_costs_the_deadline() -> None:
    with silent_server() as server:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            request("POST", server.url, deadline=Deadline(1.5), json={"a": 1})
        assert time.monotonic() - started < 1.5 + MARGIN


def test_a_raw_connection_honours_the_deadline_in_every_operation() -> None:
    with trickle(0.5, raw=b"+") as server:
        deadline = Deadline(2)
        started = time.monotonic()
        sock = connect("127.0.0.1", server.port, deadline)
        reply = b""
        with sock, pytest.raises(DeadlineExceededError):
            while True:
                try:
                    sock.settimeout(deadline.timeout())
                    reply += sock.recv(16)
                except TimeoutError:
                    deadline.timeout()
        assert reply.startswith(b"++")
        assert time.monotonic() - started < 2 + MARGIN


def test_an_unresolvable_name_and_a_refused_port_fail_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        connect("127.0.0.1", port, Deadline(5))
    with pytest.raises(OSError):
        connect("no-such-host.invalid", 80, Deadline(5))


def test_a_fast_answer_is_read_whole_through_the_bounded_connections() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers["Content-Length"])
            body = b"got " + self.rfile.read(size)
            self.send_response(201)
            self.send_header("X-Id", "7")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        reply = request("POST", url, deadline=Deadline(5), content=b"it")
    finally:
        server.shutdown()
    assert (reply.status_code, reply.text, reply.headers["x-id"]) == (201, "got it", "7")
    assert reply.is_success

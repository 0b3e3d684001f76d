"""Small servers on loopback standing in for the application: HTTP pages answering a few fixed
routes (a health page, the smoke test's endpoint), and TCP listeners such as a Redis that
answers PING."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Hit:
    method: str
    path: str
    status: int
    body: Any  # the JSON sent, if any


class SiteServer:
    """An HTTP server on loopback answering a few fixed routes: an application's health page,
    the smoke test's endpoint. Records every request."""

    Route = Callable[[dict[str, str], bytes], tuple[int, str]]

    def __init__(
        self, name: str, routes: dict[tuple[str, str], Route], default: Route | None = None
    ) -> None:
        """`default` answers every request no route matches (404 without it)."""
        self.name, self.routes, self.default = name, routes, default
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.1,), daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                route = site.routes.get((self.command, self.path.split("?", 1)[0]), site.default)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, text = route(headers, body) if route else (404, '{"error":"not found"}')
                try:
                    sent = json.loads(body) if body else None
                except ValueError:
                    sent = body.decode(errors="replace")
                with site.lock:
                    site.hits.append(Hit(self.command, self.path, status, sent))
                data = text.encode()
                self.send_response(status)
                kind = "text/html" if text.startswith("<") else "application/json"
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


TcpHandler = Callable[[socket.socket], None]


class TcpListener:
    """A TCP server on loopback, each connection served by `handle` in a thread."""

    def __init__(self, handle: TcpHandler) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def tcp_listeners() -> Iterator[Callable[[TcpHandler], int]]:
    """Yields a function that starts a TcpListener for the given handler and returns its port;
    every listener is closed on exit."""
    listeners: list[TcpListener] = []

    def start(handle: TcpHandler) -> int:
        listener = TcpListener(handle)
        listeners.append(listener)
        return listener.port

    try:
        yield start
    finally:
        for listener in listeners:
            listener.close()


def redis_like(reply: bytes) -> TcpHandler:
    """A handler that reads one line and answers PING with `reply`, as a Redis does with +PONG
    (or with -NOAUTH when it wants a password), and anything else with an error."""

    def handle(conn: socket.socket) -> None:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = conn.recv(64)
            if not chunk:
                return
            data += chunk
        conn.sendall(reply if data == b"PING\r\n" else b"-ERR unknown command\r\n")

    return handle

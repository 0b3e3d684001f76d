"""Servers that never finish answering, on loopback, for the outbound calls' total deadlines
(unit and e2e tests alike).

- `trickle`: reads the request, then sends an answer one byte a time, a byte every `pace`
  seconds, forever: each read of the client gets a byte well within any per-read timeout,
  so only a total deadline ends the call. `headers=True` trickles from the status line on;
  `headers=False` sends the status line and headers at once, then trickles the body (declared
  as a megabyte long). For a raw TCP probe, `raw=b"+"` trickles these bytes over and over.
- `silent`: accepts the connection, reads what comes, and never answers.

Each server runs in daemon threads of the test's process, and `close()` ends every connection.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1048576\r\nX-Slow: yes\r\n\r\n"
)


@dataclass
class SlowServer:
    mode: str  # trickle or silent
    pace: float = 1.0
    headers: bool = True
    raw: bytes | None = None
    connections: int = 0
    port: int = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self._listener.settimeout(0.2)
        threading.Thread(target=self._serve, daemon=True, name="slow-server").start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def __enter__(self) -> SlowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            if self.raw is None:
                self._read_request(conn)
            if self.mode == "silent":
                while not self._stop.wait(0.2):
                    try:
                        if conn.recv(4096) == b"":
                            return
                    except TimeoutError:
                        continue
                    except OSError:
                        return
                return
            if self.raw is not None:
                answer = self.raw
            elif self.headers:
                answer = HEADERS
            else:
                conn.sendall(HEADERS)
                answer = b"x"
            index = 0
            while not self._stop.wait(self.pace):
                try:
                    conn.sendall(answer[index % len(answer) : index % len(answer) + 1])
                except OSError:
                    return
                index += 1
                if index % len(answer) == 0 and self.raw is None and self.headers:
                    answer = b"x"  # past the headers' first bytes: an endless header value

    def _read_request(self, conn: socket.socket) -> None:
        """Reads until the end of the request's headers, and its body when one is declared."""
        data = b""
        started = time.monotonic()
        while b"\r\n\r\n" not in data and time.monotonic() - started < 5:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            data += chunk


def trickle(pace: float = 1.0, *, headers: bool = True, raw: bytes | None = None) -> SlowServer:
    return SlowServer("trickle", pace=pace, headers=headers, raw=raw)


def silent() -> SlowServer:
    return SlowServer("silent")

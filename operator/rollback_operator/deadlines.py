"""Total deadlines for the operator's outbound calls (safety rule 12): resolving, connecting,
sending and reading the whole reply, all within one budget, whatever the server does.

Timeouts per operation are not enough: a server that sends one byte a second never trips a
5 s read timeout, and holds the thread that called it for as long as it likes. So every socket
operation of a call is given the time left of one `Deadline`, never more:

- raw sockets (the tcp checks): `connect`, then `settimeout(deadline.timeout())` before each
  send and receive;
- HTTP (the CDN, Prometheus, the webhooks, the http checks): `request`, whose connections ask
  the deadline before every read and write (and whose TLS handshake is cut at the deadline),
  and which reads the reply's body within it too.

A call past its deadline raises `DeadlineExceededError` (raw sockets) or an `httpx.TimeoutException`
(HTTP), which each caller already reports as "no answer within ...". Name resolution is bounded
too: a resolver that hangs is left behind in a thread of its own.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from httpx._utils import get_environment_proxies  # the proxies httpx itself would use

from rollback_operator.egress import address_refusal

# A smoke endpoint's or an API's answer is small: a call reads at most this much of a body.
MAX_BODY_BYTES = 1024 * 1024


class DeadlineExceededError(TimeoutError):
    """The call's total deadline passed."""


class Deadline:
    """A moment on the monotonic clock by which a call must be over."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = max(0.0, seconds)
        self._clock = clock
        self.at = clock() + self.seconds

    @property
    def shown(self) -> str:
        """Its length as messages show it: 4s, 2.5s."""
        return f"{round(self.seconds, 1):g}s"

    def left(self) -> float:
        return max(0.0, self.at - self._clock())

    def within(self, seconds: float) -> Deadline:
        """A deadline `seconds` from now, or this one if it comes first."""
        return Deadline(min(seconds, self.left()), clock=self._clock)

    def timeout(self) -> float:
        """The time left, for the next operation; raises DeadlineExceededError when none is."""
        left = self.left()
        if left <= 0:
            raise DeadlineExceededError(f"the call's total deadline of {self.shown} passed")
        return left


# --- raw sockets


def connect(
    host: str,
    port: int,
    deadline: Deadline,
    *,
    options: Iterable[tuple[int, int, int | bytes]] = (),
) -> socket.socket:
    """A TCP connection to `host`:`port`, resolved and connected within `deadline` (each address
    tried in turn, with the time left). The socket's timeout is left at the time left: callers
    set it again before each operation.

    An address `egress.address_refusal` names (link-local, cloud metadata) is never connected
    to, whatever name led to it: checked here, on the address actually used, so that a name
    which resolved elsewhere when Preflight looked (DNS rebinding) is refused too."""
    last: OSError | None = None
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        refused = address_refusal(str(address[0]))
        if refused is not None:
            last = ConnectionRefusedError(
                f"{address[0]} is {refused}: the operator does not connect to it"
            )
            continue
        sock = socket.socket(family, kind, proto)
        try:
            for option in options:
                sock.setsockopt(*option)
            sock.settimeout(deadline.timeout())
            sock.connect(address)
            return sock
        except TimeoutError as error:
            sock.close()
            raise DeadlineExceededError(f"no connection within {deadline.shown}") from error
        except OSError as error:
            sock.close()
            last = error
    raise last or OSError(f"no address for {host}")


AddressInfo = list[tuple[Any, Any, int, str, Any]]


def resolve_addresses(host: str, seconds: float) -> list[str]:
    """The addresses `host` resolves to, within `seconds`; empty when it does not resolve."""
    try:
        found = _resolve(host, 0, Deadline(seconds))
    except OSError:
        return []
    return sorted({str(address[0]) for *_, address in found})


def _resolve(host: str, port: int, deadline: Deadline) -> AddressInfo:
    try:  # an address needs no resolver
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass
    found: list[AddressInfo] = []
    failed: list[OSError] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as error:
            failed.append(error)

    resolver = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    resolver.start()
    resolver.join(deadline.timeout())
    if found:
        return found[0]
    if failed:
        raise failed[0]
    raise DeadlineExceededError(f"{host} was not resolved within {deadline.shown}")


# --- HTTP


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read within its deadline: at most `MAX_BODY_BYTES` of its body."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def request(
    method: str,
    url: str,
    *,
    deadline: Deadline,
    transport: httpx.BaseTransport | None = None,
    read_body: bool = True,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    data: Mapping[str, str] | None = None,
    json: Any = None,
) -> Reply:
    """One HTTP call, connection to the last byte read, within `deadline`. Redirects are not
    followed. Raises what httpx raises (an `httpx.TimeoutException` past the deadline).

    `transport` replaces the network (tests); the deadline is then checked between the
    chunks of the body only.
    """
    if deadline.left() <= 0:
        raise httpx.ConnectTimeout(f"the call's total deadline of {deadline.shown} passed")
    mounts: dict[str, httpx.BaseTransport | None] = {}
    if transport is None:
        transport = _Transport(deadline)
        for pattern, proxy in get_environment_proxies().items():
            mounts[pattern] = _Transport(deadline, proxy=proxy) if proxy else None
    timeout = httpx.Timeout(deadline.left())
    with (
        httpx.Client(transport=transport, mounts=mounts, timeout=timeout) as client,
        client.stream(
            method, url, headers=headers, content=content, data=data, json=json
        ) as response,
    ):
        body = bytearray()
        if read_body:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_BODY_BYTES:
                    break
                if deadline.left() <= 0:
                    raise httpx.ReadTimeout(f"the call's total deadline of {deadline.shown} passed")
        return Reply(
            response.status_code,
            response.reason_phrase,
            response.headers,
            bytes(body[:MAX_BODY_BYTES]),
        )


class _Transport(httpx.HTTPTransport):
    """httpx's transport, with connections that honour one deadline in total."""

    def __init__(self, deadline: Deadline, proxy: str | None = None) -> None:
        super().__init__(proxy=proxy)
        # The pool (direct or through a proxy) opens its connections through this backend.
        self._pool._network_backend = _Backend(deadline)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), *(socket_options or ())]
        try:
            sock = connect(host, port, self.deadline, options=options)  # type: ignore[arg-type]
        except DeadlineExceededError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        return _Stream(sock, self.deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.deadline.left()))


class _Stream(httpcore.NetworkStream):
    """A socket whose every read and write gets the time left of the deadline at most."""

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        self.sock, self.deadline = sock, deadline

    def _timeout(self, asked: float | None, error: type[Exception]) -> float:
        left = self.deadline.left()
        if left <= 0:
            raise error(f"the call's total deadline of {self.deadline.shown} passed")
        return left if asked is None else min(asked, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.sock.settimeout(self._timeout(timeout, httpcore.ReadTimeout))
        try:
            return self.sock.recv(max_bytes)
        except TimeoutError as error:
            raise httpcore.ReadTimeout(str(error) or "timed out") from error
        except OSError as error:
            raise httpcore.ReadError(str(error)) from error

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        while buffer:
            self.sock.settimeout(self._timeout(timeout, httpcore.WriteTimeout))
            try:
                sent = self.sock.send(buffer)
            except TimeoutError as error:
                raise httpcore.WriteTimeout(str(error) or "timed out") from error
            except OSError as error:
                raise httpcore.WriteError(str(error)) from error
            buffer = buffer[sent:]

    def close(self) -> None:
        self.sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._timeout(timeout, httpcore.ConnectTimeout)
        self.sock.settimeout(left)
        # The handshake reads many records, each with the socket's timeout: cut it at the
        # deadline, whatever pace the server keeps.
        watchdog = threading.Timer(left, _shut, args=(self.sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            wrapped = ssl_context.wrap_socket(self.sock, server_hostname=server_hostname)
        except (TimeoutError, OSError) as error:
            self.sock.close()
            if self.deadline.left() <= 0 or isinstance(error, TimeoutError):
                raise httpcore.ConnectTimeout(str(error) or "TLS handshake timed out") from error
            raise httpcore.ConnectError(str(error)) from error
        finally:
            watchdog.cancel()
        return _Stream(wrapped, self.deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "ssl_object" and isinstance(self.sock, ssl.SSLSocket):
            return self.sock
        if info == "client_addr":
            return self.sock.getsockname()
        if info == "server_addr":
            return self.sock.getpeername()
        if info == "socket":
            return self.sock
        if info == "is_readable":  # an idle connection that is readable was closed by the peer
            return bool(select.select([self.sock], [], [], 0)[0])
        return None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)

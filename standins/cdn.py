"""Local CDN purge APIs for the e2e tests and the demo: Cloudflare, Fastly and a purge webhook,
each an HTTP server on loopback that checks a request the way the provider's API documentation
describes it and answers with the provider's documented shapes.

- `FakeCloudflare`: `POST /client/v4/zones/<zone>/purge_cache` with `Authorization: Bearer
  <token>`, `Content-Type: application/json` and exactly one of `{"purge_everything": true}`,
  `{"files": [...]}` or `{"prefixes": [...]}` (1 to 100 entries). Success: 200 and the v4
  envelope `{"success": true, "errors": [], "messages": [], "result": {"id": <zone>}}`. A wrong
  token: 403 with error 10000 "Authentication error"; an unknown zone: 404 with error 7003; a
  bad body: 400 with error 1012. Throttling (scripted): 429 with `Retry-After` and error 971.
- `FakeFastly`: `POST /service/<id>/purge_all` (answer `{"status": "ok"}`) or `POST
  /service/<id>/purge` with `{"surrogate_keys": [...]}` (1 to 256; answer each key mapped to a
  purge id), with the `Fastly-Key` header. A wrong key: 401 `{"msg": "Provided credentials are
  missing or invalid"}`. Throttling (scripted): 429 with `Fastly-RateLimit-Remaining: 0` and
  `Fastly-RateLimit-Reset` (an epoch second), which is how Fastly documents it.
- `FakeWebhook`: a JSON POST to one path, with the `Idempotency-Key` header equal to the body's
  `idempotencyKey`, and `Authorization: Bearer <token>` when it was given a token. Success: 202
  with `{"id": ...}`.

Every request is kept (`requests`), with its arrival time; one that breaks the documented form
is also listed in `violations` with the reason, so a test can assert there were none. Any
provider can be told to answer differently first (`answer_first`): a 429 with Retry-After, a
503, anything. `on_request` runs a callback as each request arrives (e.g. to look at the
cluster at that moment).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # JSON-able, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    # Headers computed as the reply is sent (a rate-limit reset relative to that moment).
    late_headers: Callable[[], dict[str, str]] | None = None


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    raw: bytes
    status: int  # what the server answered

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None


class FakeProvider:
    """The common part: a threaded HTTP server on 127.0.0.1 that records and scripts answers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.violations: list[str] = []
        self.on_request: Callable[[], None] | None = None
        self._script: deque[Reply] = deque()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer_first(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order (after checking their form)."""
        with self.lock:
            self._script.extend(replies)

    def server_error(self, status: int = 503) -> Reply:
        return Reply(status, {"error": "upstream unavailable"})

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    # --- for subclasses

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """An error reply (and a violation) for a request the provider would refuse; None
        when it is well-formed."""
        raise NotImplementedError

    def success(self, path: str, body: bytes) -> Reply:
        raise NotImplementedError

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.on_request is not None:
            self.on_request()
        refusal = self.check(method, path, headers, body)
        if refusal is not None:
            return refusal
        with self.lock:
            scripted = self._script.popleft() if self._script else None
        return scripted or self.success(path, body)

    def violation(self, reason: str) -> None:
        with self.lock:
            self.violations.append(reason)


# --- Cloudflare


def cloudflare_error(code: int, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


class FakeCloudflare(FakeProvider):
    def __init__(self, zone_id: str, token: str) -> None:
        super().__init__()
        self.zone_id, self.token = zone_id, token

    @property
    def api_base(self) -> str:
        return f"{self.base}/client/v4"

    @staticmethod
    def throttled(retry_after: int) -> Reply:
        return Reply(
            429,
            cloudflare_error(971, "Please wait and consider throttling your request speed"),
            {"Retry-After": str(retry_after)},
        )

    def server_error(self, status: int = 503) -> Reply:
        return Reply(status, cloudflare_error(10000 + status, "Service temporarily unavailable"))

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if method != "POST":
            self.violation(f"{method} {path}: the purge is a POST")
            return Reply(405, cloudflare_error(10405, "Method not allowed"))
        if path != f"/client/v4/zones/{self.zone_id}/purge_cache":
            self.violation(f"POST {path}: not the zone's purge_cache path")
            return Reply(
                404,
                cloudflare_error(
                    7003, f"Could not route to {path}, perhaps your object identifier is invalid?"
                ),
            )
        if headers.get("authorization") != f"Bearer {self.token}":
            # Not a violation when it is well-formed: a wrong token is what a test may want.
            if not headers.get("authorization", "").startswith("Bearer "):
                self.violation("no Authorization: Bearer header")
            return Reply(403, cloudflare_error(10000, "Authentication error"))
        if headers.get("content-type", "").split(";")[0] != "application/json":
            self.violation(f"Content-Type {headers.get('content-type')!r}")
            return Reply(400, cloudflare_error(6003, "Invalid request headers"))
        problem = _cloudflare_body_problem(body)
        if problem:
            self.violation(problem)
            return Reply(400, cloudflare_error(1012, problem))
        return None

    def success(self, path: str, body: bytes) -> Reply:
        return Reply(
            200, {"success": True, "errors": [], "messages": [], "result": {"id": self.zone_id}}
        )


def _cloudflare_body_problem(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(data, dict) or len(data) != 1:
        return f"the body must have exactly one purge field: {data!r}"
    [(kind, value)] = data.items()
    if kind == "purge_everything":
        return None if value is True else "purge_everything must be true"
    if kind in ("files", "prefixes"):
        if not isinstance(value, list) or not 1 <= len(value) <= 100:
            return f"{kind} must list 1 to 100 entries"
        if not all(isinstance(v, str) and v for v in value):
            return f"{kind} must be strings"
        return None
    return f"unknown purge field {kind!r}"


# --- Fastly


class FakeFastly(FakeProvider):
    def __init__(self, service_id: str, token: str) -> None:
        super().__init__()
        self.service_id, self.token = service_id, token
        self._purges = 0

    @property
    def api_base(self) -> str:
        return self.base

    @staticmethod
    def throttled(reset_in: int) -> Reply:
        """429 as Fastly documents it: the window resets `reset_in` seconds after this answer
        (rounded up to Fastly's whole epoch second)."""
        return Reply(
            429,
            {"msg": "Too many requests", "detail": "Rate limit exceeded"},
            {"Fastly-RateLimit-Remaining": "0"},
            late_headers=lambda: {"Fastly-RateLimit-Reset": str(math.ceil(time.time() + reset_in))},
        )

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        service = f"/service/{self.service_id}"
        if method != "POST" or path not in (f"{service}/purge_all", f"{service}/purge"):
            self.violation(f"{method} {path}: not a purge of service {self.service_id}")
            return Reply(404, {"msg": "Record not found", "detail": f"Cannot find {path}"})
        if headers.get("fastly-key") != self.token:
            if not headers.get("fastly-key"):
                self.violation("no Fastly-Key header")
            return Reply(401, {"msg": "Provided credentials are missing or invalid"})
        if path.endswith("/purge_all"):
            if body:
                self.violation("purge_all takes no body")
                return Reply(400, {"msg": "Bad request", "detail": "purge_all takes no body"})
            return None
        if headers.get("content-type", "").split(";")[0] != "application/json":
            self.violation(f"Content-Type {headers.get('content-type')!r}")
            return Reply(400, {"msg": "Bad request", "detail": "expected application/json"})
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        keys = data.get("surrogate_keys") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or set(data) != {"surrogate_keys"}
            or not isinstance(keys, list)
            or not 1 <= len(keys) <= 256
            or not all(isinstance(k, str) and k for k in keys)
        ):
            self.violation(f"bad surrogate key purge body: {data!r}")
            return Reply(400, {"msg": "Bad request", "detail": "surrogate_keys: 1 to 256 keys"})
        return None

    def success(self, path: str, body: bytes) -> Reply:
        if path.endswith("/purge_all"):
            return Reply(200, {"status": "ok"})
        keys = json.loads(body)["surrogate_keys"]
        with self.lock:
            self._purges += 1
            serial = self._purges
        return Reply(200, {key: f"108-{1391560174 + serial}-{i}" for i, key in enumerate(keys)})


# --- a purge webhook


class FakeWebhook(FakeProvider):
    def __init__(self, path: str = "/v1/purge", token: str | None = None) -> None:
        super().__init__()
        self.path, self.token = path, token

    @property
    def url(self) -> str:
        return f"{self.base}{self.path}"

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if method != "POST" or path != self.path:
            self.violation(f"{method} {path}: not a POST to {self.path}")
            return Reply(404, {"error": "not found"})
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            if not headers.get("authorization", "").startswith("Bearer "):
                self.violation("no Authorization: Bearer header")
            return Reply(403, {"error": "forbidden"})
        if self.token is None and "authorization" in headers:
            self.violation("an Authorization header without credentials in the spec")
        if headers.get("content-type", "").split(";")[0] != "application/json":
            self.violation(f"Content-Type {headers.get('content-type')!r}")
            return Reply(415, {"error": "expected application/json"})
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("event") != "rollback.purge":
            self.violation(f"not a rollback.purge event: {data!r}")
            return Reply(400, {"error": "bad event"})
        if headers.get("idempotency-key") != data.get("idempotencyKey") or not data.get(
            "idempotencyKey"
        ):
            self.violation("Idempotency-Key header and body disagree")
            return Reply(400, {"error": "bad idempotency key"})
        return None

    def success(self, path: str, body: bytes) -> Reply:
        return Reply(202, {"id": "purge-" + json.loads(body)["idempotencyKey"][:8]})


def _handler(provider: FakeProvider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read `requests`

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            at, wall = time.monotonic(), time.time()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = provider.handle(self.command, self.path, headers, body)
            raw = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            with provider.lock:
                provider.requests.append(
                    Received(at, wall, self.command, self.path, headers, body, reply.status)
                )
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            late = reply.late_headers() if reply.late_headers else {}
            for name, value in {**reply.headers, **late}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

    return Handler

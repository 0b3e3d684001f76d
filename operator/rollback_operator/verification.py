"""Verification checks (runbook §2.4): what `spec.verification` asks, and the probes that answer.

"Make sure DB, Redis and the AI Gateway connections are healthy again": each check is named,
and is one of

- `http`: one request (httpx), passing on an expected status code and, optionally, a text in
  the body: the application's own smoke endpoints, the AI Gateway's health URL;
- `tcp`: a connection, optionally a probe sent and the reply's first bytes compared, so that a
  Redis `PING` answered by `+PONG` proves a working Redis rather than an open port, without a
  client library for every protocol;
- `job`: the team's own smoke test as a Job (see `jobs.py`): run once, never recreated.

This module holds the typed spec and the probes; the Verify step (`steps/verify.py`) decides
when to run them and records each check's last result in `status.checks`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import httpx

from rollback_operator.deadlines import Deadline, connect, request
from rollback_operator.model import SpecSection, parse_duration
from rollback_operator.redaction import display_url

DEFAULT_TIMEOUT = "5m"
DEFAULT_PROBE_TIMEOUT = "5s"
DEFAULT_JOB_TIMEOUT = "5m"
USER_AGENT = "rollback-operator/verify"
# How long one call of the Verify step waits for its probes (see `Probing`).
CALL_SECONDS = 4.0
PROBE_THREADS = 32  # probes in flight at once, for every run together
# How much of an unexpected reply a message quotes: enough to read "-NOAUTH ...", not a dump.
QUOTE_BYTES = 64


@dataclass(frozen=True)
class HttpProbe:
    url: str
    method: str = "GET"
    expect_status: tuple[int, ...] = (200,)
    body_contains: str | None = None
    timeout_seconds: float = 5.0

    @property
    def target(self) -> str:
        """The method and URL as messages show them: no credentials, no query string."""
        return f"{self.method} {display_url(self.url)}"


@dataclass(frozen=True)
class TcpProbe:
    host: str
    port: int
    send: str | None = None  # each character is one byte (U+0000-U+00FF, see `as_bytes`)
    expect: str | None = None
    timeout_seconds: float = 5.0

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class JobProbe:
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    # Kubernetes EnvVar dicts: {name, value} or {name, valueFrom: {secretKeyRef: {name, key}}}.
    env: tuple[dict[str, Any], ...] = ()
    timeout_seconds: float = 300.0


Probe = HttpProbe | TcpProbe | JobProbe


@dataclass(frozen=True)
class Check:
    name: str
    probe: Probe

    @property
    def type(self) -> str:
        """http, tcp or job: as the CRD names them, and as status.checks records them."""
        if isinstance(self.probe, HttpProbe):
            return "http"
        if isinstance(self.probe, TcpProbe):
            return "tcp"
        return "job"

    @property
    def purpose(self) -> str:
        """The job check's purpose for `jobs.run_job_once`: part of the Job's deterministic name
        (and its container's name), so each check has a Job of its own."""
        return f"check-{self.name}"

    def describe(self) -> str:
        """One line for plans and docs: what the check looks at."""
        probe = self.probe
        if isinstance(probe, HttpProbe):
            wanted = ", ".join(str(s) for s in probe.expect_status)
            text = f" containing {probe.body_contains!r}" if probe.body_contains else ""
            return f"{self.name} (http: {probe.target} answers {wanted}{text})"
        if isinstance(probe, TcpProbe):
            reply = f", reply starting {quote(as_bytes(probe.expect))}" if probe.expect else ""
            return f"{self.name} (tcp: {probe.target}{reply})"
        return f"{self.name} (job: {probe.image} {' '.join(probe.command)})"


@dataclass(frozen=True)
class VerificationSpec(SpecSection):
    """`spec.verification`, typed. Absent: no checks, no sign-off, only the Deployments."""

    SPEC_KEY = "verification"  # absent: Verify checks the Deployments only (ONLY_DEPLOYMENTS)

    timeout_seconds: float = 300.0
    require_approval: bool = False
    checks: tuple[Check, ...] = ()

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> VerificationSpec:
        """Types for the section as the API server stored it (validated, defaults applied).

        The CRD's defaults are applied here too, so that a section built by hand (a unit test,
        an object from an older CRD) reads the same.
        """
        if not raw:
            return cls()
        return cls(
            timeout_seconds=parse_duration(raw.get("timeout") or DEFAULT_TIMEOUT),
            require_approval=bool(raw.get("requireApproval", False)),
            checks=tuple(_parse_check(c) for c in raw.get("checks") or ()),
        )


# What Verify does for a request without spec.verification: no checks, no sign-off.
ONLY_DEPLOYMENTS = VerificationSpec()


def _parse_check(raw: dict[str, Any]) -> Check:
    return Check(raw["name"], _parse_probe(raw))


def _parse_probe(raw: dict[str, Any]) -> Probe:
    if (http := raw.get("http")) is not None:
        return HttpProbe(
            url=http["url"],
            method=http.get("method") or "GET",
            expect_status=tuple(http.get("expectStatus") or (200,)),
            body_contains=http.get("bodyContains") or None,
            timeout_seconds=_timeout(http, DEFAULT_PROBE_TIMEOUT),
        )
    if (tcp := raw.get("tcp")) is not None:
        return TcpProbe(
            host=tcp["host"],
            port=int(tcp["port"]),
            send=tcp.get("send") or None,
            expect=tcp.get("expect") or None,
            timeout_seconds=_timeout(tcp, DEFAULT_PROBE_TIMEOUT),
        )
    job = raw["job"]
    return JobProbe(
        image=job["image"],
        command=tuple(job["command"]),
        args=tuple(job.get("args") or ()),
        env=tuple(_env_var(e) for e in job.get("env") or ()),
        timeout_seconds=_timeout(job, DEFAULT_JOB_TIMEOUT),
    )


def _timeout(probe: dict[str, Any], default: str) -> float:
    return parse_duration(probe.get("timeout") or default)


def _env_var(raw: dict[str, Any]) -> dict[str, Any]:
    """The CRD's `{name, value}` / `{name, secretKeyRef}` as a Kubernetes EnvVar: a Secret is
    referenced, never read, so its value reaches only the Job's container."""
    if raw.get("secretKeyRef") is not None:
        ref = raw["secretKeyRef"]
        return {
            "name": raw["name"],
            "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}},
        }
    return {"name": raw["name"], "value": raw.get("value", "")}


def secret_refs(verification: VerificationSpec) -> list[tuple[str, str, str]]:
    """(check, Secret, key) for every Secret a job check's environment references."""
    refs = []
    for check in verification.checks:
        if isinstance(check.probe, JobProbe):
            for var in check.probe.env:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.append((check.name, ref["name"], ref["key"]))
    return refs


# --- results


@dataclass(frozen=True)
class ProbeResult:
    passed: bool
    message: str


# --- http


def probe_http(probe: HttpProbe) -> ProbeResult:
    """One request; passes on an expected status and, when asked, the text in the body.

    The whole attempt (connection, request, status, headers and the body read) fits in the
    probe's timeout: a server trickling its answer ends the attempt there. Redirects are not
    followed: the status is what is checked, so a health URL that starts redirecting (to a
    login page, say) fails unless its redirect status is listed.
    """
    started = time.monotonic()
    deadline = Deadline(probe.timeout_seconds)
    reads_body = probe.body_contains is not None  # else the body is not even read
    headers = {"User-Agent": USER_AGENT}
    try:
        response = request(
            probe.method, probe.url, deadline=deadline, read_body=reads_body, headers=headers
        )
    except httpx.TimeoutException:
        return ProbeResult(False, f"{probe.target}: no answer within {deadline.shown}")
    except httpx.HTTPError as error:
        return ProbeResult(False, f"{probe.target}: {_http_error(error)}")
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    status, body = response.status_code, response.content
    if status not in probe.expect_status:
        wanted = " or ".join(str(s) for s in probe.expect_status)
        return ProbeResult(False, f"{probe.target}: HTTP {status}, expected {wanted}")
    if probe.body_contains is not None:
        if probe.body_contains.encode() not in body:
            return ProbeResult(
                False,
                f"{probe.target}: HTTP {status}, but the body ({len(body)} bytes read) does not "
                f"contain {probe.body_contains!r}",
            )
        return ProbeResult(
            True, f"{probe.target}: HTTP {status}, body contains {probe.body_contains!r} ({took})"
        )
    return ProbeResult(True, f"{probe.target}: HTTP {status} ({took})")


def _http_error(error: httpx.HTTPError) -> str:
    """A short cause: the exception text names the problem (refused, TLS, DNS) without the
    URL's query string, which messages never show."""
    cause = str(error) or type(error).__name__
    return f"{type(error).__name__}: {cause}"


# --- tcp


def as_bytes(text: str | None) -> bytes:
    """The bytes a probe sends or expects: each character one byte (latin-1), so that YAML
    escapes such as `"\\x04\\xd2"` write any byte, and `"PING\\r\\n"` is plain ASCII."""
    return (text or "").encode("latin-1", errors="replace")


def quote(data: bytes) -> str:
    """Bytes as a readable, bounded quote: printable ASCII as is, the rest escaped."""
    text = "".join(
        _QUOTED.get(b) or (chr(b) if 32 <= b < 127 else f"\\x{b:02x}") for b in data[:QUOTE_BYTES]
    )
    return f"'{text}'" + ("..." if len(data) > QUOTE_BYTES else "")


_QUOTED = {13: "\\r", 10: "\\n", 9: "\\t", 0: "\\0", 92: "\\\\"}


def probe_tcp(probe: TcpProbe) -> ProbeResult:
    """Connects; sends the probe, if any; reads until the reply can be compared with `expect`.

    The whole attempt (resolving, connecting, sending, reading) shares one total deadline, the
    probe's timeout: each operation gets what is left of it. Without `expect`, a connection
    accepted (and the probe sent) is a pass.
    """
    deadline = Deadline(probe.timeout_seconds)
    started = time.monotonic()
    expect = as_bytes(probe.expect)
    try:
        with connect(probe.host, probe.port, deadline) as s:
            if probe.send:
                s.settimeout(deadline.timeout())
                s.sendall(as_bytes(probe.send))
            reply = b""
            while len(reply) < len(expect):
                s.settimeout(deadline.timeout())
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        return ProbeResult(False, f"{probe.target}: no answer within {deadline.shown}")
    except socket.gaierror as error:
        return ProbeResult(False, f"{probe.target}: cannot resolve {probe.host}: {error.strerror}")
    except OSError as error:
        return ProbeResult(False, f"{probe.target}: {error.strerror or error}")
    took = f"{(time.monotonic() - started) * 1000:.0f} ms"
    if not expect:
        sent = " and took the probe" if probe.send else ""
        return ProbeResult(True, f"{probe.target}: connection accepted{sent} ({took})")
    if not reply.startswith(expect):
        seen = f"the reply {quote(reply)}" if reply else "the connection closed without a reply"
        return ProbeResult(False, f"{probe.target}: {seen} does not start with {quote(expect)}")
    return ProbeResult(True, f"{probe.target}: replied {quote(reply[: len(expect)])} ({took})")


# --- probing in the background


class Probing:
    """Runs probes in the background and waits for them a bounded time.

    A check's timeout may be up to a minute, but a call of the Verify step must return within
    `CALL_SECONDS` (the runner sees an abort only between calls): a probe still running then
    goes on in the background, and a later call of the same run collects its result instead of
    starting another. Probes only read, so one left behind by an abort does no harm; it ends
    at its own deadline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flight: dict[tuple[Hashable, str], tuple[Future[ProbeResult], float]] = {}

    def run(
        self,
        key: Hashable,
        checks: list[Check],
        prober: Callable[[Check], ProbeResult],
        budget: Deadline,
    ) -> tuple[dict[str, ProbeResult], list[str]]:
        """The results of `checks` ready within `budget`, and the names still running."""
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (f, at) in self._flight.items() if f.done() and at < now - 600]:
                del self._flight[stale]  # a run that went away (aborted, deleted)
            futures = {}
            for check in checks:
                entry = self._flight.get((key, check.name))
                if entry is None:
                    entry = (_POOL.submit(_attempt, prober, check), now)
                    self._flight[(key, check.name)] = entry
                futures[check.name] = entry[0]
        wait(futures.values(), timeout=budget.left())
        results: dict[str, ProbeResult] = {}
        with self._lock:
            for name, future in futures.items():
                if future.done():
                    results[name] = future.result()
                    self._flight.pop((key, name), None)
        return results, [name for name in futures if name not in results]


# The probes' own threads, shared by every run (started as needed): never the runner's workers.
_POOL = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="verify")


def _attempt(prober: Callable[[Check], ProbeResult], check: Check) -> ProbeResult:
    try:
        return prober(check)
    except Exception as error:  # a probe that crashed is a failed attempt, not a dead step
        return ProbeResult(False, f"the probe crashed: {type(error).__name__}: {error}")


def _seconds(value: float) -> str:
    return f"{value:g}s"

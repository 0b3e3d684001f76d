"""Verification checks: the spec's types, the http and tcp probes against real local servers,
and the Verify step's decisions (when to probe, to start a Job, to ask QA, to fail).

The probes talk to real sockets on loopback (an HTTP server and TCP listeners run in threads);
the step's decision logic is tested with a recording prober and job runner, so each test says
exactly which check was run when. The e2e tier runs the same step in the operator process.
"""

from __future__ import annotations

import copy
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rollback_operator.kube import Kube
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, Targets
from rollback_operator.redaction import display_url
from rollback_operator.status import Status
from rollback_operator.steps.base import Approval, Done, Fail, NeedsApproval, StepContext, Wait
from rollback_operator.steps.gates import digest
from rollback_operator.steps.jobs import JobResult, JobState
from rollback_operator.steps.verify import Verify, job_template, preflight_problems
from rollback_operator.verification import (
    CALL_SECONDS,
    Check,
    HttpProbe,
    JobProbe,
    ProbeResult,
    TcpProbe,
    VerificationSpec,
    probe_http,
    probe_tcp,
    quote,
    secret_refs,
)
from standins.local import free_port
from standins.sites import TcpHandler, redis_like, tcp_listeners
from tests.slow_servers import SlowServer, silent, trickle
from tests.unit.fake_watch import Watchable

NS = "lawyershub"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)

# --- the spec


def test_an_absent_section_means_no_checks_and_no_sign_off() -> None:
    assert VerificationSpec.parse(None) == VerificationSpec(300.0, False, ())


def test_the_section_parses_with_the_crds_defaults() -> None:
    parsed = VerificationSpec.parse(
        {
            "checks": [
                {"name": "api", "http": {"url": "http://backend:8080/healthz"}},
                {"name": "redis", "tcp": {"host": "redis", "port": 6379}},
                {"name": "smoke", "job": {"image": "app:1", "command": ["smoke"]}},
            ]
        }
    )
    assert parsed == VerificationSpec(
        timeout_seconds=300.0,
        require_approval=False,
        checks=(
            Check("api", HttpProbe("http://backend:8080/healthz", "GET", (200,), None, 5.0)),
            Check("redis", TcpProbe("redis", 6379, None, None, 5.0)),
            Check("smoke", JobProbe("app:1", ("smoke",), (), (), 300.0)),
        ),
    )
    assert [c.type for c in parsed.checks] == ["http", "tcp", "job"]


def test_a_job_checks_secrets_are_referenced_as_kubernetes_env_never_read() -> None:
    parsed = VerificationSpec.parse(
        {
            "timeout": "90s",
            "requireApproval": True,
            "checks": [
                {
                    "name": "smoke",
                    "job": {
                        "image": "app:1",
                        "command": ["sh", "-c"],
                        "args": ["smoke"],
                        "timeout": "2m",
                        "env": [
                            {"name": "MODE", "value": "read-only"},
                            {"name": "DB", "secretKeyRef": {"name": "db", "key": "url"}},
                        ],
                    },
                }
            ],
        }
    )
    assert (parsed.timeout_seconds, parsed.require_approval) == (90.0, True)
    template = job_template(parsed.checks[0])
    assert template.purpose == "check-smoke"
    assert (template.image, template.command, template.args) == ("app:1", ("sh", "-c"), ("smoke",))
    assert template.env == (
        {"name": "MODE", "value": "read-only"},
        {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
    )
    assert template.deadline_seconds == 120
    assert secret_refs(parsed) == [("smoke", "db", "url")]


def test_messages_show_urls_without_credentials_or_query() -> None:
    assert display_url("https://ops:s3cret@api.example:8443/health?token=abc#x") == (
        "https://api.example:8443/health"
    )
    assert display_url("http://[::1]:8080/") == "http://[::1]:8080/"
    probe = HttpProbe("http://u:p@backend/healthz?key=k")
    assert probe.target == "GET http://backend/healthz"


# --- http, against a real local server


@dataclass
class Site:
    """What the local HTTP server answers; change it while a test runs."""

    status: int = 200
    body: bytes = b'{"status": "ok"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: threading.Event | None = None  # when set: hold every answer until it is set
    trickle: bool = False  # send the body one byte every 50 ms
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    state = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            state.hits.append(f"{self.command} {self.path}")
            if state.delay is not None:
                state.delay.wait(5)
            self.send_response(state.status)
            for key, value in state.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            if with_body and state.trickle:
                for byte in state.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            elif with_body:
                self.wfile.write(state.body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def do_POST(self) -> None:
            self._answer(True)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    if state.delay is not None:
        state.delay.set()
    server.shutdown()
    server.server_close()


def test_http_passes_on_an_expected_status(site: tuple[Site, str]) -> None:
    state, base = site
    result = probe_http(HttpProbe(f"{base}/healthz"))
    assert result.passed, result.message
    assert result.message.startswith(f"GET {base}/healthz: HTTP 200 (")
    assert state.hits == ["GET /healthz"]


def test_http_fails_on_another_status_and_names_it(site: tuple[Site, str]) -> None:
    state, base = site
    state.status = 503
    result = probe_http(HttpProbe(f"{base}/healthz", expect_status=(200, 204)))
    assert result == ProbeResult(False, f"GET {base}/healthz: HTTP 503, expected 200 or 204")


def test_http_checks_the_body_text(site: tuple[Site, str]) -> None:
    state, base = site
    ok = probe_http(HttpProbe(f"{base}/healthz", body_contains='"status": "ok"'))
    assert ok.passed, ok.message
    state.body = b'{"status": "degraded"}'
    bad = probe_http(HttpProbe(f"{base}/healthz", body_contains='"status": "ok"'))
    assert bad == ProbeResult(
        False,
        f"GET {base}/healthz: HTTP 200, but the body (22 bytes read) does not contain "
        '\'"status": "ok"\'',
    )


def test_http_does_not_follow_redirects(site: tuple[Site, str]) -> None:
    """A health URL that starts redirecting (to a login page) is not healthy by default."""
    state, base = site
    state.status, state.headers = 302, {"Location": "/login"}
    assert not probe_http(HttpProbe(f"{base}/healthz")).passed
    assert probe_http(HttpProbe(f"{base}/healthz", expect_status=(302,))).passed
    assert state.hits == ["GET /healthz", "GET /healthz"]


def test_http_uses_the_method_asked(site: tuple[Site, str]) -> None:
    state, base = site
    assert probe_http(HttpProbe(f"{base}/ping", method="HEAD")).passed
    assert probe_http(HttpProbe(f"{base}/ping", method="POST")).passed
    assert state.hits == ["HEAD /ping", "POST /ping"]


def test_http_times_out(site: tuple[Site, str]) -> None:
    state, base = site
    state.delay = threading.Event()
    result = probe_http(HttpProbe(f"{base}/slow", timeout_seconds=0.3))
    assert result == ProbeResult(False, f"GET {base}/slow: no answer within 0.3s")


def test_http_bounds_the_whole_answer_not_each_read(site: tuple[Site, str]) -> None:
    """A body trickling in, each byte within the read timeout, still ends at the timeout."""
    state, base = site
    state.trickle, state.body = True, b"x" * 100  # 5 s of body
    started = time.monotonic()
    result = probe_http(HttpProbe(f"{base}/slow", body_contains="ok", timeout_seconds=0.4))
    assert result == ProbeResult(False, f"GET {base}/slow: no answer within 0.4s")
    assert time.monotonic() - started < 2


def test_http_reports_a_refused_connection() -> None:
    port = free_port()
    result = probe_http(HttpProbe(f"http://127.0.0.1:{port}/healthz?token=t0ps3cret"))
    assert not result.passed
    assert result.message.startswith(f"GET http://127.0.0.1:{port}/healthz: ConnectError")
    assert "t0ps3cret" not in result.message


# --- tcp, against real listeners


@pytest.fixture
def listener() -> Iterator[Callable[[TcpHandler], int]]:
    """Starts TCP servers on loopback, each answering with the given handler; yields a
    function that starts one and returns its port."""
    with tcp_listeners() as start:
        yield start


def test_tcp_passes_when_the_reply_starts_with_the_expected_bytes(
    listener: Callable[[TcpHandler], int],
) -> None:
    port = listener(redis_like(b"+PONG\r\n"))
    result = probe_tcp(TcpProbe("127.0.0.1", port, send="PING\r\n", expect="+PONG"))
    assert result.passed, result.message
    assert result.message.startswith(f"127.0.0.1:{port}: replied '+PONG' (")


def test_tcp_fails_on_a_wrong_reply_and_quotes_it(
    listener: Callable[[TcpHandler], int],
) -> None:
    port = listener(redis_like(b"-NOAUTH Authentication required.\r\n"))
    result = probe_tcp(TcpProbe("127.0.0.1", port, send="PING\r\n", expect="+PONG"))
    assert not result.passed
    assert result.message.startswith(f"127.0.0.1:{port}: the reply '-NOAU")
    assert result.message.endswith("' does not start with '+PONG'")


def test_tcp_fails_when_the_peer_closes_without_a_reply(
    listener: Callable[[TcpHandler], int],
) -> None:
    port = listener(lambda conn: None)
    result = probe_tcp(TcpProbe("127.0.0.1", port, send="PING\r\n", expect="+PONG"))
    assert result == ProbeResult(
        False,
        f"127.0.0.1:{port}: the connection closed without a reply does not start with '+PONG'",
    )


def test_tcp_without_expect_passes_on_an_accepted_connection(
    listener: Callable[[TcpHandler], int],
) -> None:
    port = listener(lambda conn: None)
    result = probe_tcp(TcpProbe("127.0.0.1", port))
    assert result.passed and "connection accepted" in result.message


def test_tcp_sends_and_compares_raw_bytes(
    listener: Callable[[TcpHandler], int],
) -> None:
    """A PostgreSQL SSLRequest (8 binary bytes) answered by N: one character, one byte."""
    received: list[bytes] = []

    def postgres_like(conn: socket.socket) -> None:
        received.append(conn.recv(8))
        conn.sendall(b"N")

    port = listener(postgres_like)
    result = probe_tcp(
        TcpProbe("127.0.0.1", port, send="\x00\x00\x00\x08\x04\xd2\x16\x2f", expect="N")
    )
    assert result.passed, result.message
    assert received == [b"\x00\x00\x00\x08\x04\xd2\x16\x2f"]


def test_tcp_times_out_on_a_silent_peer(
    listener: Callable[[TcpHandler], int],
) -> None:
    release = threading.Event()
    port = listener(lambda conn: release.wait(5) and None)
    try:
        result = probe_tcp(
            TcpProbe("127.0.0.1", port, send="PING\r\n", expect="+PONG", timeout_seconds=0.3)
        )
    finally:
        release.set()
    assert result == ProbeResult(False, f"127.0.0.1:{port}: no answer within 0.3s")


def test_replies_are_quoted_readably_and_bounded() -> None:
    assert quote(b"-NOAUTH\r\n\x00\x04\\x0d") == "'-NOAUTH\\r\\n\\0\\x04\\\\x0d'"
    assert quote(b"a" * 100) == "'" + "a" * 64 + "'..."


def test_tcp_reports_a_refused_connection() -> None:
    port = free_port()
    result = probe_tcp(TcpProbe("127.0.0.1", port))
    assert result == ProbeResult(False, f"127.0.0.1:{port}: Connection refused")


# --- the Verify step's decisions, with a recording prober and job runner


class FakeKube(Watchable):
    """The two reads Verify makes: Deployments and (for Preflight) Secret keys."""

    def watched(self, collection: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.deployments.get(name))

    def names_in(self, collection: str) -> list[str]:
        return list(self.deployments)

    def __init__(self) -> None:
        self.deployments: dict[str, dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], str] = {}

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.deployments.get(name))

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((name, key))


def _deployment(image: str, *, available: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": "backend", "generation": 2},
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "api", "image": image}]}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2 if available else 1,
            "conditions": [{"type": "Available", "status": "True" if available else "False"}],
        },
    }


@dataclass
class Harness:
    """A request being verified: the fake cluster, the clock, what each check answers, the
    status sections as the runner keeps them, and every probe and Job call in order."""

    verification: dict[str, Any]
    kube: FakeKube = field(default_factory=FakeKube)
    clock: datetime = T0
    answers: dict[str, bool] = field(default_factory=dict)  # check name -> passes
    job_states: dict[str, JobState] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)
    approval: Approval | None = None

    def prober(self, check: Check) -> ProbeResult:
        self.calls.append(check.name)
        passed = self.answers.get(check.name, True)
        return ProbeResult(passed, f"{check.type} {'ok' if passed else 'refused'}")

    def job_runner(self, ctx: StepContext, check: Check) -> JobResult:
        self.calls.append(f"job:{check.name}")
        state = self.job_states.get(check.name, JobState.SUCCEEDED)
        message = {
            JobState.RUNNING: f"Job golive-check-{check.name}-1a2b3 is running",
            JobState.SUCCEEDED: f"Job golive-check-{check.name}-1a2b3 completed",
            JobState.FAILED: "login returned 500",
        }[state]
        return JobResult(f"golive-check-{check.name}-1a2b3", state, message)

    def step(self) -> Verify:
        return Verify(prober=self.prober, job_runner=self.job_runner)

    def ctx(self) -> StepContext:
        spec = RollbackSpec.parse(
            {
                "reason": "Error rate 7.2 % for 15 min after go-live",
                "trigger": "ErrorRate",
                "traffic": {
                    "ingresses": ["lawyershub"],
                    "maintenanceBackend": {"service": "maintenance-page", "port": 80},
                },
                "workloads": [{"deployment": "backend", "containers": ["api"]}],
                "rolloutTimeout": "10m",
                "verification": self.verification,
            }
        )
        return StepContext(
            kube=cast(Kube, self.kube),
            namespace=NS,
            request="golive",
            spec=spec,
            ledger=StatusLedger(
                Status(
                    saved={"deployments": {"backend": {"images": {"api": "backend:2026.01.10"}}}},
                    sections=self.sections,
                )
            ),
            targets=Targets(("lawyershub",), ("backend",), ()),
            step_started_at=T0,
            now=lambda: self.clock,
            approval=self.approval,
        )

    def run(self) -> Any:
        self.calls.clear()
        return self.step().run(self.ctx())

    def checks(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.sections.get("checks", [])}


def checks(*names: str, timeout: str = "60s", approval: bool = False) -> dict[str, Any]:
    """A verification section: names starting with `job` are job checks, `redis` is tcp, the
    rest http."""
    out = []
    for name in names:
        if name.startswith("job"):
            out.append({"name": name, "job": {"image": "app:1", "command": ["smoke"]}})
        elif name == "redis":
            out.append({"name": name, "tcp": {"host": "redis", "port": 6379}})
        else:
            out.append({"name": name, "http": {"url": f"http://{name}/healthz"}})
    return {"timeout": timeout, "requireApproval": approval, "checks": out}


def _world(verification: dict[str, Any]) -> Harness:
    """A request whose Deployment runs the target image, Available."""
    world = Harness(verification)
    world.kube.deployments["backend"] = _deployment("backend:stable-last-known")
    return world


def test_without_checks_verify_is_the_deployments_only() -> None:
    world = _world({})
    assert world.run() == Done("1 Deployment(s) Available at stable-last-known")
    assert world.calls == [] and "checks" not in world.sections


def test_all_checks_passing_at_once_are_each_run_once_and_recorded() -> None:
    world = _world(checks("api", "redis", "ai-gateway"))
    outcome = world.run()
    assert outcome == Done(
        "1 Deployment(s) Available at stable-last-known; 3 check(s) pass: api, redis, ai-gateway"
    )
    assert sorted(world.calls) == ["ai-gateway", "api", "redis"]
    assert world.checks()["redis"] == {
        "name": "redis",
        "type": "tcp",
        "passed": True,
        "message": "tcp ok",
        "attempts": 1,
        "checkedAt": "2026-01-10T03:00:00.000Z",
    }


def test_checks_wait_for_the_deployments_to_be_available() -> None:
    """A smoke test of pods still rolling out proves nothing: no check runs before."""
    world = _world(checks("api", "job-smoke"))
    world.kube.deployments["backend"] = _deployment("backend:stable-last-known", available=False)
    outcome = world.run()
    assert isinstance(outcome, Wait)
    assert outcome.message == (
        "waiting for: backend: 1/2 updated replicas available; the checks run once the "
        "Deployments are Available"
    )
    assert world.calls == [] and "checks" not in world.sections


def test_a_failing_check_is_retried_alone_then_everything_is_run_again_before_done() -> None:
    """Passed checks are not re-run on every poll, but all of them are, in one last round,
    before traffic returns: never on a stale result."""
    world = _world(checks("api", "redis", "ai-gateway"))
    world.answers["redis"] = False
    outcome = world.run()
    assert outcome == Wait(
        "1 Deployment(s) Available at stable-last-known; 2/3 check(s) pass; "
        "failing: redis (tcp refused)",
        retry_after=1.0,
    )
    world.clock += timedelta(seconds=2)
    outcome = world.run()
    assert isinstance(outcome, Wait) and world.calls == ["redis"]
    assert world.checks()["redis"]["attempts"] == 2
    assert world.checks()["api"]["attempts"] == 1
    world.answers["redis"] = True
    world.clock += timedelta(seconds=2)
    outcome = world.run()
    assert isinstance(outcome, Done)
    assert world.calls[0] == "redis" and sorted(world.calls[1:]) == ["ai-gateway", "api"]
    assert {n: r["attempts"] for n, r in world.checks().items()} == {
        "api": 2,
        "redis": 3,
        "ai-gateway": 2,
    }


def test_a_check_failing_in_the_last_round_keeps_traffic_away() -> None:
    world = _world(checks("api", "redis"))
    world.answers["redis"] = False
    world.run()
    world.answers.update(redis=True, api=False)  # api goes down as redis comes back
    outcome = world.run()
    assert isinstance(outcome, Wait)
    assert "failing: api (http refused)" in outcome.message
    assert world.checks()["api"]["passed"] is False
    assert world.checks()["redis"]["passed"] is True


def test_checks_still_failing_at_the_deadline_fail_the_run_and_are_named() -> None:
    world = _world(checks("api", "redis", "ai-gateway", "job-smoke", timeout="30s"))
    world.answers.update(redis=False, api=False)
    world.run()
    world.clock = T0 + timedelta(seconds=30)
    outcome = world.run()
    assert outcome == Fail(
        "verification failed, not all passed within 30s: 2 check(s) failing: api (http "
        "refused); redis (tcp refused); not run: job-smoke. The maintenance page stays on; fix "
        "what the failing checks name, then restore traffic by hand from status.saved or create "
        "a new RollbackRequest."
    )
    assert world.checks()["api"]["attempts"] == 2


def test_a_job_check_starts_only_when_every_http_and_tcp_check_passes() -> None:
    """A smoke test runs once: it must not spend that run against a dependency that is down."""
    world = _world(checks("redis", "job-smoke"))
    world.answers["redis"] = False
    world.run()
    assert world.calls == ["redis"]
    assert world.checks()["job-smoke"] == {
        "name": "job-smoke",
        "type": "job",
        "passed": False,
        "message": "not run yet",
        "attempts": 0,
    }
    world.answers["redis"] = True
    world.job_states["job-smoke"] = JobState.RUNNING
    outcome = world.run()
    assert world.calls == ["redis", "job:job-smoke"]
    assert isinstance(outcome, Wait) and outcome.message.endswith("running: job-smoke")
    world.job_states["job-smoke"] = JobState.SUCCEEDED
    outcome = world.run()
    # The Job's verdict, then the last round of every other check.
    assert world.calls == ["job:job-smoke", "redis"]
    assert isinstance(outcome, Done)
    assert world.checks()["job-smoke"]["passed"] is True
    assert world.checks()["job-smoke"]["attempts"] == 1
    world.run()
    assert "job:job-smoke" not in world.calls  # a passed Job is not looked at again


def test_a_failed_job_fails_the_run_at_once_with_what_it_said() -> None:
    world = _world(checks("api", "job-smoke", timeout="5m"))
    world.job_states["job-smoke"] = JobState.FAILED
    outcome = world.run()
    assert outcome == Fail(
        "verification failed, a smoke-test Job failed: 1 check(s) failing: job-smoke (Job "
        "golive-check-job-smoke-1a2b3 failed: login returned 500). The maintenance page stays "
        "on; fix what the failing checks name, then restore traffic by hand from status.saved "
        "or create a new RollbackRequest."
    )
    assert world.checks()["job-smoke"]["passed"] is False


def test_a_job_still_running_at_the_deadline_is_awaited() -> None:
    """Its verdict cannot be had again by retrying: the Job's own deadline bounds it."""
    world = _world(checks("api", "job-smoke", timeout="30s"))
    world.job_states["job-smoke"] = JobState.RUNNING
    world.run()
    world.clock = T0 + timedelta(minutes=3)
    assert isinstance(world.run(), Wait)
    world.job_states["job-smoke"] = JobState.SUCCEEDED
    assert isinstance(world.run(), Done)


def test_a_probe_that_crashes_is_a_failed_attempt() -> None:
    world = _world(checks("api"))

    def broken(check: Check) -> ProbeResult:
        raise RuntimeError("boom")

    outcome = Verify(prober=broken, job_runner=world.job_runner).run(world.ctx())
    assert isinstance(outcome, Wait)
    assert world.checks()["api"]["message"] == "the probe crashed: RuntimeError: boom"


def test_results_survive_a_restart_from_the_status() -> None:
    """A new operator process reads status.checks: passed checks stay passed, attempts go on."""
    world = _world(checks("api", "redis"))
    world.answers["redis"] = False
    world.run()
    stored = copy.deepcopy(world.sections)
    restarted = _world(checks("api", "redis"))
    restarted.sections = stored
    restarted.answers["redis"] = False
    restarted.run()
    assert restarted.calls == ["redis"]
    assert restarted.checks()["redis"]["attempts"] == 2


# --- QA's sign-off


def signed(world: Harness, at: str) -> Approval:
    """QA's sign-off, recorded for what the step asked to have signed off."""
    names = [c["name"] for c in (world.verification or {}).get("checks", [])]
    subject = {"deployments": ["backend"], "tag": "stable-last-known", "checks": names}
    return Approval(by="qa-quinn", at=at, digest=digest(subject))


def test_sign_off_is_asked_once_everything_passes_and_nothing_runs_while_waiting() -> None:
    world = _world(checks("api", "redis", approval=True))
    outcome = world.run()
    assert isinstance(outcome, NeedsApproval)
    assert outcome.message.startswith(
        "all 2 check(s) pass (api, redis) and 1 Deployment(s) Available at stable-last-known; "
        "waiting for a member of group qa (asked by the request) to approve the verification: "
        "deployments backend; tag stable-last-known; checks api, redis. They check it, then run "
        "`kubectl rollback approve golive Verify -n lawyershub`, which approves Verify@"
    )
    assert outcome.message.endswith(
        "Every check is run again once signed off, before traffic returns"
    )
    assert outcome.subject == "deployments backend; tag stable-last-known; checks api, redis"
    assert outcome.digest in outcome.message
    world.clock += timedelta(hours=1)  # no deadline while a person decides
    assert world.run() == outcome
    assert world.calls == []


def test_once_signed_off_every_check_runs_again_before_traffic_returns() -> None:
    world = _world(checks("api", "redis", "job-smoke", approval=True))
    assert isinstance(world.run(), NeedsApproval)
    world.clock = T0 + timedelta(minutes=20)
    world.approval = signed(world, "2026-01-10T03:20:00.000Z")
    outcome = world.run()
    assert sorted(world.calls) == ["api", "redis"]  # the Job passed: it is not run again
    assert outcome == Done(
        "1 Deployment(s) Available at stable-last-known; 3 check(s) pass: api, redis, "
        "job-smoke; signed off by qa-quinn"
    )


def test_after_the_sign_off_a_failing_check_gets_its_window_again_from_the_approval() -> None:
    world = _world(checks("api", "redis", timeout="60s", approval=True))
    assert isinstance(world.run(), NeedsApproval)
    world.clock = T0 + timedelta(minutes=20)
    world.approval = signed(world, "2026-01-10T03:20:00.000Z")
    world.answers["redis"] = False
    assert isinstance(world.run(), Wait)  # 20 minutes after the start, but just signed off
    world.clock = T0 + timedelta(minutes=21)
    outcome = world.run()
    assert isinstance(outcome, Fail) and "redis (tcp refused)" in outcome.message


def test_a_sign_off_recorded_for_this_subject_is_honoured_once_everything_passes() -> None:
    world = _world(checks("api", approval=True))
    world.approval = signed(world, "2026-01-10T02:59:00.000Z")
    world.answers["api"] = False
    assert isinstance(world.run(), Wait)
    world.answers["api"] = True
    assert world.run() == Done(
        "1 Deployment(s) Available at stable-last-known; 1 check(s) pass: api; signed off by "
        "qa-quinn"
    )


def test_after_the_sign_off_the_deployments_are_checked_again() -> None:
    world = _world(checks("api", approval=True))
    assert isinstance(world.run(), NeedsApproval)
    world.kube.deployments["backend"] = _deployment("backend:stable-last-known", available=False)
    world.approval = signed(world, "2026-01-10T03:01:00.000Z")
    outcome = world.run()
    assert (
        isinstance(outcome, Wait) and "backend: 1/2 updated replicas available" in outcome.message
    )
    assert world.calls == []


def test_sign_off_without_checks_asks_once_the_deployments_are_available() -> None:
    world = _world({"requireApproval": True})
    outcome = world.run()
    assert isinstance(outcome, NeedsApproval)
    assert outcome.message.startswith("1 Deployment(s) Available at stable-last-known; waiting")
    world.approval = signed(world, "2026-01-10T03:05:00.000Z")
    assert world.run() == Done(
        "1 Deployment(s) Available at stable-last-known; signed off by qa-quinn"
    )


# --- plan and Preflight


def test_the_plan_lists_the_checks_and_the_sign_off() -> None:
    world = _world(
        {
            "timeout": "2m",
            "requireApproval": True,
            "checks": [
                {
                    "name": "api",
                    "http": {"url": "http://u:p@backend/healthz?k=1", "bodyContains": "ok"},
                },
                {
                    "name": "redis",
                    "tcp": {"host": "redis", "port": 6379, "send": "PING\r\n", "expect": "+PONG"},
                },
                {"name": "smoke", "job": {"image": "app:1", "command": ["npm", "test"]}},
            ],
        }
    )
    assert world.step().plan(world.ctx()) == (
        "would check that backend are Available at stable-last-known, then run 3 check(s) for "
        "up to 120s: api (http: GET http://backend/healthz answers 200 containing 'ok'); redis "
        "(tcp: redis:6379, reply starting '+PONG'); smoke (job: app:1 npm test), then wait for "
        "the sign-off of a member of group qa"
    )
    assert world.calls == []


def test_preflight_names_a_missing_secret_key_of_a_job_check() -> None:
    section = checks("job-smoke")
    section["checks"][0]["job"]["env"] = [
        {"name": "DB", "secretKeyRef": {"name": "db", "key": "url"}},
        {"name": "TOKEN", "secretKeyRef": {"name": "ai", "key": "token"}},
    ]
    world = _world(section)
    world.kube.secrets[("db", "url")] = "postgresql://app:pw@db/app"
    problems = preflight_problems(world.ctx())
    assert problems == [
        "verification check 'job-smoke': Secret 'ai' has no key 'token' (or does not exist)"
    ]
    assert "pw@" not in " ".join(problems)


def test_check_records_keep_the_specs_order() -> None:
    world = _world(checks("zeta", "alpha", "redis"))
    world.run()
    assert [r["name"] for r in world.sections["checks"]] == ["zeta", "alpha", "redis"]


# --- total deadlines, against servers that trickle their answer or never answer


@pytest.mark.parametrize("server", [trickle, silent], ids=["trickling", "silent"])
def test_an_http_probe_ends_at_its_timeout_whatever_the_server_does(
    server: Callable[[], SlowServer],
) -> None:
    with server() as slow:
        started = time.monotonic()
        result = probe_http(HttpProbe(f"{slow.url}/healthz", timeout_seconds=2))
        took = time.monotonic() - started
    assert took < 2 + 2.0
    assert result == ProbeResult(False, f"GET {slow.url}/healthz: no answer within 2s")


@pytest.mark.parametrize("server", [trickle, silent], ids=["trickling", "silent"])
def test_a_tcp_probe_ends_at_its_timeout_whatever_the_server_does(
    server: Callable[[], SlowServer],
) -> None:
    with server() as slow:
        slow.raw = b"+PO"  # "+PO", then "+PO" again: never "+PONG"
        started = time.monotonic()
        probe = TcpProbe("127.0.0.1", slow.port, send="PING\r\n", expect="+PONG" * 4)
        result = probe_tcp(replace(probe, timeout_seconds=2))
        took = time.monotonic() - started
    assert took < 2 + 2.0
    assert result == ProbeResult(False, f"127.0.0.1:{slow.port}: no answer within 2s")


def test_a_call_of_verify_returns_within_seconds_and_collects_a_slow_probe_later() -> None:
    """A check with a 6 s timeout against a server that never answers: each call of the step
    returns within its few seconds (an abort is seen between them), the probe goes on in the
    background, and its verdict is recorded once it has one."""
    with silent() as slow:
        world = _world(
            {
                "timeout": "1m",
                "checks": [{"name": "api", "http": {"url": slow.url, "timeout": "6s"}}],
            }
        )
        step = Verify()
        outcomes = []
        started = time.monotonic()
        while not world.checks().get("api", {}).get("attempts"):
            call = time.monotonic()
            outcomes.append(step.run(world.ctx()))
            assert time.monotonic() - call < CALL_SECONDS + 2.0
            assert time.monotonic() - started < 6 + 4.0
    assert outcomes[0] == Wait(
        "1 Deployment(s) Available at stable-last-known; awaiting the answer of api",
        retry_after=0.25,
    )
    assert slow.connections == 1  # one attempt, collected, not started again by each call
    assert world.checks()["api"]["message"] == f"GET {slow.url}: no answer within 6s"
    assert isinstance(outcomes[-1], Wait) and "failing: api" in outcomes[-1].message

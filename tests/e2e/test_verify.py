"""Verify end to end (runbook §2.4 and §3): the operator process checks real servers (an HTTP
server, TCP listeners that speak like Redis, the real PostgreSQL) and runs smoke-test Jobs,
and traffic returns only when every check passes (and QA signs off, when asked).
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client

from standins.local import free_port, wait_until
from standins.postgres import PostgresServer
from standins.sites import redis_like, tcp_listeners
from tests.e2e.lawyershub import (
    Operator,
    conditions,
    create_request,
    get_request,
    ledger,
    on_maintenance,
    run_request,
    wait_outcome,
)
from tests.e2e.people import QA, admin_settings, approve, as_person, install_approval_policy
from tests.e2e.postgres import postgres_server_fixture  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

# A PostgreSQL SSLRequest: the server answers one byte, N (no TLS here) or S. Proves that
# PostgreSQL itself answers on the port, without a client library.
SSL_REQUEST = "\x00\x00\x00\x08\x04\xd2\x16\x2f"


# --- the servers the checks look at


@dataclass
class Site:
    """A local HTTP server standing in for the application's smoke endpoint or the AI
    Gateway's health URL: what it answers can be changed while a run goes on."""

    url: str = ""
    status: int = 200
    body: bytes = b'{"status": "ok", "ai": "ready"}'
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def site() -> Iterator[Site]:
    state = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            self.send_response(state.status)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def redis() -> Iterator[Callable[[bytes], int]]:
    """Starts TCP listeners that read one line and answer PING with the given reply (as a
    Redis does with +PONG, or with -NOAUTH when it wants a password); returns the port."""
    with tcp_listeners() as start:
        yield lambda reply: start(redis_like(reply))


# --- helpers


def http_check(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": url, "timeout": "2s", **extra}}


def tcp_check(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "tcp": {"host": "127.0.0.1", "port": port, "timeout": "2s", **extra}}


def job_check(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "job": {"image": "busybox:1.36", "command": ["sh", "-c", script]}}


def checks_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj.get("status", {}).get("checks") or []}


# --- the tests


def test_every_kind_of_check_passes_and_traffic_returns(
    api: client.ApiClient,
    app: str,
    operator: Operator,
    site: Site,
    redis: Callable[[bytes], int],
    postgres_server: PostgresServer,
) -> None:
    namespace = app
    verification = {
        "timeout": "60s",
        "checks": [
            http_check("api", f"{site.url}/api/health", bodyContains='"status": "ok"'),
            http_check("ai-gateway", f"{site.url}/ai/health", bodyContains='"ai": "ready"'),
            tcp_check("redis", redis(b"+PONG\r\n"), send="PING\r\n", expect="+PONG"),
            tcp_check("db", postgres_server.port, send=SSL_REQUEST, expect="N"),
            job_check("smoke", "echo documents saved; exit 0"),
        ],
    }
    done = run_request(
        api, namespace, "golive", "Succeeded", timeout=120, verification=verification
    )

    results = checks_of(done)
    assert list(results) == ["api", "ai-gateway", "redis", "db", "smoke"]
    for result in results.values():
        assert result["passed"] is True, result
        assert result["attempts"] >= 1 and result["checkedAt"], result
    assert [results[n]["type"] for n in results] == ["http", "http", "tcp", "tcp", "job"]
    assert "replied '+PONG'" in results["redis"]["message"]
    assert "replied 'N'" in results["db"]["message"]
    # The http/tcp checks ran again in a last round after the Job: twice each at least.
    assert site.hits.count("/api/health") >= 2 and site.hits.count("/ai/health") >= 2
    assert ledger(done)["Verify"]["message"] == (
        "2 Deployment(s) Available at stable-last-known; 5 check(s) pass: api, ai-gateway, "
        "redis, db, smoke"
    )
    assert not on_maintenance(api, namespace)
    # The smoke test ran once, as a Job of its own, from the team's image and command.
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
    assert [(j.metadata.labels["app.kubernetes.io/component"]) for j in jobs] == ["verification"]
    assert jobs[0].spec.template.spec.containers[0].command == [
        "sh",
        "-c",
        "echo documents saved; exit 0",
    ]


def test_a_failing_dependency_keeps_the_site_on_maintenance_and_is_named(
    api: client.ApiClient,
    app: str,
    operator: Operator,
    site: Site,
    redis: Callable[[bytes], int],
    postgres_server: PostgresServer,
) -> None:
    namespace = app
    site.status = 503
    verification = {
        "timeout": "4s",
        "checks": [
            tcp_check("db", postgres_server.port, send=SSL_REQUEST, expect="N"),
            http_check("api", f"{site.url}/api/health"),
            tcp_check(
                "redis",
                redis(b"-NOAUTH Authentication required.\r\n"),
                send="PING\r\n",
                expect="+PONG",
            ),
            tcp_check("ai-gateway", free_port()),
            job_check("smoke", "exit 0"),
        ],
    }
    done = run_request(api, namespace, "golive", "Failed", timeout=60, verification=verification)
    status = done["status"]
    assert ledger(done)["Verify"]["state"] == "Failed"
    assert ledger(done)["DisableMaintenance"]["state"] == "Pending"
    message = status["message"]
    assert message.startswith(
        "Verify failed: verification failed, not all passed within 4s: 3 check(s) failing: api "
    )
    assert f"api (GET {site.url}/api/health: HTTP 503, expected 200)" in message
    assert "redis (127.0.0.1:" in message and "does not start with '+PONG'" in message
    assert "ai-gateway (127.0.0.1:" in message and "Connection refused" in message
    assert "db (" not in message  # PostgreSQL answered: it is not named
    assert "not run: smoke" in message  # a smoke test is not spent against a broken site
    assert "The maintenance page stays on" in message

    # The site stays on the maintenance page, and says so.
    assert on_maintenance(api, namespace)
    assert conditions(done)["MaintenanceActive"] == "True"
    results = checks_of(done)
    assert results["db"]["passed"] is True
    for name in ("api", "redis", "ai-gateway"):
        assert results[name]["passed"] is False
        assert results[name]["attempts"] >= 2, results[name]  # retried until the deadline
    assert results["smoke"]["attempts"] == 0
    assert client.BatchV1Api(api).list_namespaced_job(namespace).items == []


def test_a_dependency_that_recovers_in_time_lets_traffic_return(
    api: client.ApiClient, app: str, operator: Operator, site: Site
) -> None:
    namespace = app
    site.status = 502
    create_request(
        api,
        namespace,
        "golive",
        verification={"timeout": "60s", "checks": [http_check("api", f"{site.url}/healthz")]},
    )

    def failing_seen() -> dict[str, Any] | None:
        obj = get_request(api, namespace, "golive")
        api_check = checks_of(obj).get("api")
        return obj if api_check and api_check["attempts"] >= 2 else None

    waiting = wait_until(failing_seen, timeout=60, what="the api check to fail twice")
    assert checks_of(waiting)["api"]["passed"] is False
    assert "HTTP 502, expected 200" in waiting["status"]["message"]
    assert waiting["status"]["phase"] == "Running"
    assert on_maintenance(api, namespace)  # traffic never returns while a check fails

    site.status = 200
    done = wait_outcome(api, namespace, "golive", "Succeeded", timeout=60)
    assert checks_of(done)["api"]["passed"] is True
    assert checks_of(done)["api"]["attempts"] >= 3
    assert not on_maintenance(api, namespace)


def test_a_failed_smoke_job_fails_the_run_at_once_with_what_it_said(
    api: client.ApiClient, app: str, operator: Operator, site: Site
) -> None:
    namespace = app
    verification = {
        "timeout": "5m",
        "checks": [
            http_check("api", f"{site.url}/healthz"),
            job_check("smoke", "echo 'POST /api/documents returned 500'; exit 1"),
        ],
    }
    # Long before the 5 minutes: a failed Job is never retried, so there is nothing to wait for.
    done = run_request(api, namespace, "golive", "Failed", verification=verification)
    status = done["status"]
    assert "a smoke-test Job failed" in status["message"]
    assert "smoke (Job golive-check-smoke-" in status["message"]
    assert "POST /api/documents returned 500" in status["message"]
    assert on_maintenance(api, namespace)
    smoke = checks_of(done)["smoke"]
    assert (smoke["passed"], smoke["attempts"]) == (False, 1)
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
    assert len(jobs) == 1 and jobs[0].metadata.name.startswith("golive-check-smoke-")
    assert [j["name"] for j in done["status"]["jobs"]] == [jobs[0].metadata.name]


def test_qa_signs_off_and_every_check_runs_again_before_traffic_returns(
    api: client.ApiClient,
    kubeconfig: str,
    app: str,
    operator: Operator,
    site: Site,
    redis: Callable[[bytes], int],
) -> None:
    """The sign-off is the namespace's admins' setting (a RollbackPolicy that adds a gate),
    not the request's: the request does not ask for it."""
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)
    admin_settings(api, namespace, {"approvals": [{"step": "Verify", "groups": ["qa"]}]})
    verification = {
        "timeout": "60s",
        "checks": [
            http_check("api", f"{site.url}/healthz"),
            tcp_check("redis", redis(b"+PONG\r\n"), send="PING\r\n", expect="+PONG"),
        ],
    }
    waiting = run_request(
        api, namespace, "golive", "AwaitingApproval", timeout=60, verification=verification
    )
    digest = ledger(waiting)["Verify"]["approvalDigest"]
    assert waiting["status"]["message"] == (
        "Verify awaits approval: all 2 check(s) pass (api, redis) and 2 Deployment(s) Available "
        "at stable-last-known; waiting for a member of group qa (asked by the namespace's "
        "RollbackPolicy) to approve the verification: deployments backend, frontend; tag "
        "stable-last-known; checks api, redis. They check it, then run `kubectl rollback approve "
        f"golive Verify -n {namespace}`, which approves Verify@{digest}; the person who created "
        "the request cannot. The maintenance page stays on meanwhile. Every check is run again "
        "once signed off, before traffic returns"
    )
    assert waiting["status"]["gates"] == [
        {
            "step": "Verify",
            "groups": [["qa"]],
            "who": "a member of group qa",
            "requiredBy": "the namespace's RollbackPolicy",
        }
    ]
    assert all(c["passed"] for c in checks_of(waiting).values())
    assert on_maintenance(api, namespace)
    attempts = checks_of(waiting)["api"]["attempts"]

    # The API breaks while QA looks: the sign-off must not bring traffic back to it.
    site.status = 500
    approve(as_person(kubeconfig, QA), namespace, "golive", "Verify", QA[0])

    def rechecked() -> dict[str, Any] | None:
        obj = get_request(api, namespace, "golive")
        api_check = checks_of(obj)["api"]
        return obj if api_check["attempts"] > attempts and not api_check["passed"] else None

    failing = wait_until(rechecked, timeout=30, what="the api check to run again after sign-off")
    assert failing["status"]["phase"] == "Running"
    assert ledger(failing)["Verify"]["approvedBy"] == "qa-quinn"
    assert on_maintenance(api, namespace)

    site.status = 200
    done = wait_outcome(api, namespace, "golive", "Succeeded", timeout=60)
    verify = ledger(done)["Verify"]
    assert verify["message"].endswith("; signed off by qa-quinn")
    assert verify["approvedBy"] == "qa-quinn" and verify["approvedAt"]
    assert not on_maintenance(api, namespace)


def test_a_restarted_operator_resumes_the_checks_without_a_second_job(
    api: client.ApiClient, app: str, operator: Operator, site: Site
) -> None:
    """Killed while the smoke Job runs, the operator picks the Job up again from status.jobs
    and the results from status.checks: the Job is never created twice."""
    namespace = app
    verification = {
        "timeout": "60s",
        "checks": [
            http_check("api", f"{site.url}/healthz"),
            job_check("smoke", "sleep 4; exit 0"),
        ],
    }
    create_request(api, namespace, "golive", verification=verification)

    def job_running() -> dict[str, Any] | None:
        obj = get_request(api, namespace, "golive")
        smoke = checks_of(obj).get("smoke")
        return obj if smoke and "is running" in smoke["message"] else None

    running = wait_until(job_running, timeout=60, what="the smoke Job to be running")
    assert checks_of(running)["api"]["passed"] is True
    operator.kill()
    operator.start()

    done = wait_outcome(api, namespace, "golive", "Succeeded")
    smoke = checks_of(done)["smoke"]
    assert (smoke["passed"], smoke["attempts"]) == (True, 1)
    jobs = client.BatchV1Api(api).list_namespaced_job(namespace).items
    assert len(jobs) == 1
    assert [j["name"] for j in done["status"]["jobs"]] == [jobs[0].metadata.name]
    assert jobs[0].metadata.uid == done["status"]["jobs"][0]["uid"]

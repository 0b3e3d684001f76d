"""Every outbound call has a total deadline, end to end (safety rule 12): the operator process
against 32 local servers at once that trickle their answers a byte a second (the CDN,
Prometheus, the http and tcp checks, the notification webhooks), spread over four requests in
four namespaces: every run ends, within its own deadlines, saying which server did not answer;
and an abort during a purge against such a server is answered within seconds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.model import ABORT_ANNOTATION
from tests.e2e.lawyershub import (
    Operator,
    create_request,
    deploy_app,
    fresh_namespace,
    get_request,
    ledger,
    wait_outcome,
    wait_phase,
)
from tests.e2e.support import wait_until
from tests.slow_servers import SlowServer, trickle

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers() -> Iterator[list[SlowServer]]:
    """32 servers trickling a byte a second: 20 from the status line on, 8 their body (at once
    200 OK and their headers), 4 a tcp reply."""
    with ExitStack() as stack:
        made = [stack.enter_context(trickle(headers=i < 20)) for i in range(28)]
        made += [stack.enter_context(trickle(raw=b"+PO")) for _ in range(4)]
        yield made


def _notify(servers: list[SlowServer]) -> list[dict[str, Any]]:
    return [{"name": f"hook-{i}", "url": f"{s.url}/hook"} for i, s in enumerate(servers)]


def _http(name: str, server: SlowServer, timeout: str, **more: str) -> dict[str, Any]:
    return {"name": name, "http": {"url": server.url, "timeout": timeout, **more}}


def _tcp(name: str, server: SlowServer) -> dict[str, Any]:
    probe = {"host": "127.0.0.1", "port": server.port, "send": "PING\r\n", "expect": "+PONG"}
    return {"name": name, "tcp": {**probe, "timeout": "2s"}}


def _took(obj: dict[str, Any]) -> float:
    created = datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(obj["status"]["finishedAt"].replace("Z", "+00:00"))
    return (ended - created).total_seconds()


def test_thirty_two_trickling_servers_at_once_cost_each_run_its_deadlines(
    api: client.ApiClient,
    kubeconfig: str,
    crds_installed: None,
    servers: list[SlowServer],
    tmp_path: Path,
) -> None:
    http, raw = servers[:28], servers[28:]
    with ExitStack() as stack:
        namespaces = [stack.enter_context(fresh_namespace(api)) for _ in range(4)]
        for namespace in namespaces:
            deploy_app(api, namespace)
        operator = Operator(namespaces[0], kubeconfig, tmp_path, also_watch=tuple(namespaces[1:]))
        operator.start()
        stack.callback(operator.stop)
        cdn, checks, prometheus, body = namespaces
        specs: dict[str, dict[str, Any]] = {
            # PurgeCDN against a trickling purge webhook, retried until cdn.timeout; seven
            # webhooks told of the start and the end.
            cdn: {
                "cdn": {"provider": "webhook", "url": f"{http[0].url}/purge", "timeout": "12s"},
                "notify": _notify(http[1:8]),
            },
            # Verify: four http checks and four tcp checks (a reply that never ends), until
            # verification.timeout.
            checks: {
                "verification": {
                    "timeout": "12s",
                    "checks": [_http(f"http-{i}", s, "2s") for i, s in enumerate(http[8:12])]
                    + [_tcp(f"tcp-{i}", s) for i, s in enumerate(raw)],
                },
            },
            # Preflight asks Prometheus; seven webhooks are told that the run failed.
            prometheus: {
                "monitoring": {"prometheus": {"url": http[12].url}},
                "notify": _notify(http[13:20]),
            },
            # Verify against bodies that never end (a text to find in them), and four webhooks.
            body: {
                "verification": {
                    "timeout": "12s",
                    "checks": [
                        _http(f"body-{i}", s, "3s", bodyContains="ok")
                        for i, s in enumerate(http[20:24])
                    ],
                },
                "notify": _notify(http[24:28]),
            },
        }
        started = time.monotonic()
        for namespace, spec in specs.items():
            create_request(api, namespace, "golive", **spec)
        ended = {ns: wait_outcome(api, ns, "golive", "Failed", timeout=150) for ns in specs}
        wall = time.monotonic() - started

        steps = {ns: obj["status"]["step"] for ns, obj in ended.items()}
        assert steps == {cdn: "PurgeCDN", checks: "Verify", prometheus: "Preflight", body: "Verify"}
        messages = {ns: obj["status"]["message"] for ns, obj in ended.items()}
        assert "gave up purging" in messages[cdn] and "did not answer within" in messages[cdn]
        assert messages[checks].count("no answer within 2s") == 8, messages[checks]
        assert f"Prometheus at {http[12].url} did not answer within 4s" in messages[prometheus]
        assert messages[body].count("no answer within 3s") == 4, messages[body]
        # Each run within its deadlines: the step's timeout (12 s) or Preflight's query (4 s),
        # the end notification's budget (6 s), and the rollback's own work, generously.
        took = {ns: _took(obj) for ns, obj in ended.items()}
        assert took[prometheus] < 30, took
        assert max(took.values()) < 90, took
        assert wall < 120
        # The end was notified within its budget: each webhook's failure is on record.
        for namespace, count in ((cdn, 7), (prometheus, 7), (body, 4)):
            notes = ended[namespace]["status"]["notifications"]
            assert len(notes) == count
            for note in notes:
                assert note["lastEvent"] in ("Failed",), note
                assert "no answer within" in note["lastError"], note
        assert all(s.connections >= 1 for s in servers)


def test_an_abort_during_a_purge_against_a_trickling_server_is_answered_within_seconds(
    api: client.ApiClient, app: str, operator: Operator
) -> None:
    namespace = app
    with trickle() as slow:
        create_request(
            api,
            namespace,
            "golive",
            cdn={"provider": "webhook", "url": f"{slow.url}/purge", "timeout": "5m"},
        )
        wait_until(
            lambda: (
                get_request(api, namespace, "golive").get("status", {}).get("step") == "PurgeCDN"
            ),
            timeout=90,
            what="the run to reach PurgeCDN",
        )
        wait_until(lambda: slow.connections >= 1, timeout=10, what="a purge request in flight")
        time.sleep(1)
        asked = time.monotonic()
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "golive",
            {"metadata": {"annotations": {ABORT_ANNOTATION: "true"}}},
        )  # fmt: skip
        obj = wait_phase(api, namespace, "golive", "Aborted", "Failed", "Succeeded", timeout=30)
        answered = time.monotonic() - asked
    assert obj["status"]["phase"] == "Aborted", obj["status"].get("message")
    assert answered < 15
    assert ledger(obj)["PurgeCDN"]["state"] != "Succeeded"

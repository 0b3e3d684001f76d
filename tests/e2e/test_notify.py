"""Notifications end to end: the operator process posts to local Slack-compatible and JSON
receivers (standins/webhooks.py) as a real run goes; dead and failing webhooks never fail
the run, are reported in status.notifications, and no webhook URL taken from a Secret ever
shows in the status, an Event or the operator's log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from rollback_operator import clock
from rollback_operator.notify import BUDGET
from standins.local import wait_until
from standins.webhooks import Answer, FakeWebhooks, Hook, refused_url
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    create_request,
    dry_run,
    events_for,
    get_request,
    ledger,
    refusal,
    run_request,
    wait_outcome,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def hooks() -> Iterator[FakeWebhooks]:
    with FakeWebhooks() as server:
        yield server


def _secret(api: client.ApiClient, namespace: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "hooks"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def _slack_events(hook: Hook) -> list[str]:
    """The event of each Slack message accepted, read back from its context block."""
    return [m["blocks"][-1]["elements"][0]["text"].split(" at ")[0] for m in hook.messages]


def _json_events(hook: Hook) -> list[str]:
    return [m["event"] for m in hook.messages]


def _notifications(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in obj["status"].get("notifications", [])}


def _no_secret_anywhere(
    api: client.ApiClient, namespace: str, name: str, operator: Operator, *secrets: str
) -> None:
    obj = get_request(api, namespace, name)
    events = " ".join(e.message or "" for e in events_for(api, namespace, name))
    logs = operator.logs()
    for secret in secrets:
        assert secret not in json.dumps(obj["status"])
        assert secret not in events
        assert secret not in logs


def _from_secret(name: str, key: str, **more: str) -> dict[str, Any]:
    """A spec.notify entry whose URL is key `key` of Secret hooks (see `_secret`)."""
    return {"name": name, "urlSecretRef": {"name": "hooks", "key": key}, **more}


def _token(hook: Hook) -> str:
    """The secret part of a Slack webhook URL."""
    return hook.path.rsplit("/", 1)[-1]


def test_both_formats_get_each_event_once_in_order_with_the_state_across_a_restart(
    api: client.ApiClient, app: str, operator: Operator, hooks: FakeWebhooks
) -> None:
    namespace = app
    slack, generic = hooks.slack_hook(), hooks.json_hook("generic")
    _secret(api, namespace, {"slack": slack.url + "\n"})
    run_request(
        api,
        namespace,
        "golive",
        "AwaitingApproval",
        verification={"requireApproval": True},
        notify=[
            _from_secret("ops-slack", "slack", format="slack"),
            {"name": "pager", "url": generic.url},  # format json by default
        ],
    )

    def told_of_the_wait() -> bool:
        sent = _notifications(get_request(api, namespace, "golive"))
        return all(
            sent.get(n, {}).get("lastEvent") == "AwaitingApproval/Verify"
            for n in ("ops-slack", "pager")
        )

    wait_until(told_of_the_wait, timeout=20, what="the approval wait notified and recorded")
    assert _slack_events(slack) == ["Started", "AwaitingApproval"]
    assert _json_events(generic) == ["Started", "AwaitingApproval"]

    started, awaiting = generic.messages
    assert started["phase"] == "Running" and started["step"] == "Preflight"
    assert started["name"] == "golive" and started["namespace"] == namespace
    assert started["trigger"] == "ErrorRate"
    assert started["reason"] == "Error rate 7.2 % for 15 min after go-live"
    assert awaiting["phase"] == "AwaitingApproval" and awaiting["step"] == "Verify"
    assert awaiting["message"] == get_request(api, namespace, "golive")["status"]["message"]
    assert f"kubectl rollback approve golive Verify -n {namespace}" in awaiting["commands"]
    assert f"kubectl get rbr golive -n {namespace}" in awaiting["commands"]
    assert f"kubectl rollback status golive -n {namespace}" in awaiting["commands"]
    waiting_text = json.dumps(slack.messages[1])
    for wanted in ("AwaitingApproval", "Verify", "ErrorRate", "kubectl rollback approve golive"):
        assert wanted in waiting_text
    for request in slack.requests:
        assert request.method == "POST"
        assert request.headers["content-type"].startswith("application/json")

    # Killed and started again while waiting: the wait is resumed, not notified again.
    operator.kill()
    operator.start()

    def resumed() -> bool:
        obj = get_request(api, namespace, "golive")
        return (
            ledger(obj)["Verify"]["attempts"] >= 2 and obj["status"]["phase"] == "AwaitingApproval"
        )

    wait_until(resumed, timeout=30, what="the restarted operator back in the approval wait")
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "golive",
        {"metadata": {"annotations": {f"{GROUP}/abort": "true"}}},
    )  # fmt: skip
    done = wait_outcome(api, namespace, "golive", "Aborted")

    # The end was sent before the terminal status was written: it is already here.
    assert _slack_events(slack) == ["Started", "AwaitingApproval", "Aborted"]
    assert _json_events(generic) == ["Started", "AwaitingApproval", "Aborted"]
    aborted = generic.messages[-1]
    assert aborted["phase"] == "Aborted" and aborted["message"] == done["status"]["message"]
    assert aborted["message"].startswith("Aborted during Verify")
    assert f"kubectl rollback report golive -n {namespace}" in aborted["commands"]
    assert hooks.rejected == []  # every request had the form its receiver documents

    sent = _notifications(done)
    for name in ("ops-slack", "pager"):
        assert sent[name]["sent"] == 3 and sent[name]["failed"] == 0
        assert sent[name]["lastEvent"] == "Aborted"
        assert "lastError" not in sent[name]
    _no_secret_anywhere(api, namespace, "golive", operator, slack.url, _token(slack))


def test_dead_and_failing_webhooks_never_fail_the_run_and_are_reported(
    api: client.ApiClient, app: str, operator: Operator, hooks: FakeWebhooks
) -> None:
    namespace = app
    slack, broken = hooks.slack_hook(), hooks.slack_hook()
    broken.always(Answer(500, "rollup_error"))
    throttled = hooks.json_hook("throttled")
    throttled.fail_first(Answer(429, "rate_limited", {"Retry-After": "1"}))
    _secret(api, namespace, {"slack": slack.url, "broken": broken.url})
    create_request(
        api,
        namespace,
        "golive",
        notify=[
            _from_secret("ops-slack", "slack", format="slack"),
            _from_secret("broken", "broken", format="slack"),
            {"name": "dead", "url": refused_url()},
            _from_secret("no-key", "missing"),
            {"name": "throttled", "url": throttled.url, "format": "json"},
        ],
    )
    done = wait_outcome(api, namespace, "golive", "Succeeded")
    seen_at = clock.now()
    status = done["status"]
    # The end's notifications held the run up for a few seconds at most.
    held = (seen_at - clock.parse(status["finishedAt"])).total_seconds()
    assert held < BUDGET + 3, held

    assert _slack_events(slack) == ["Started", "Succeeded"]
    assert _json_events(throttled) == ["Started", "Succeeded"]
    succeeded = throttled.messages[-1]
    assert succeeded["phase"] == "Succeeded" and succeeded["step"] == "Report"
    assert succeeded["message"] == status["message"]

    # 429 + Retry-After: 1 was honoured: the retry came a second later, and got through.
    first, retry, _ = throttled.requests
    assert (first.status, retry.status) == (429, 200)
    assert retry.at - first.at >= 1.0
    # 500 is retried twice, quickly, for each event, then given up.
    assert [r.status for r in broken.requests] == [500] * 6

    sent = _notifications(done)
    assert (sent["ops-slack"]["sent"], sent["ops-slack"]["failed"]) == (2, 0)
    assert (sent["throttled"]["sent"], sent["throttled"]["failed"]) == (2, 0)
    assert (sent["broken"]["sent"], sent["broken"]["failed"]) == (0, 2)
    assert sent["broken"]["lastError"].startswith("Succeeded: HTTP 500: rollup_error")
    assert (sent["dead"]["sent"], sent["dead"]["failed"]) == (0, 2)
    assert "could not connect" in sent["dead"]["lastError"]
    assert sent["no-key"]["lastError"].startswith("Succeeded: Secret hooks has no key missing")
    for entry in sent.values():
        assert entry["lastEvent"] == "Succeeded" and entry["lastAttemptAt"]

    failed = [
        e.message for e in events_for(api, namespace, "golive") if e.reason == "NotificationFailed"
    ]
    for name in ("broken", "dead", "no-key"):
        for event in ("Started", "Succeeded"):
            assert any(m.startswith(f"webhook {name}: {event} not delivered") for m in failed)
    assert all(e.type == "Warning" for e in events_for(api, namespace, "golive")
               if e.reason == "NotificationFailed")  # fmt: skip
    _no_secret_anywhere(
        api, namespace, "golive", operator, slack.url, broken.url, _token(slack), _token(broken)
    )


def test_a_failed_run_notifies_each_webhook_of_the_events_it_asked_for(
    api: client.ApiClient,
    namespace: str,
    crds_installed: None,
    operator: Operator,
    hooks: FakeWebhooks,
) -> None:
    everything, failures, successes = (
        hooks.json_hook("everything"),
        hooks.json_hook("failures"),
        hooks.json_hook("successes"),
    )
    # No application in this namespace: Preflight fails at once.
    done = run_request(
        api,
        namespace,
        "doomed",
        "Failed",
        notify=[
            {"name": "everything", "url": everything.url},
            {"name": "failures", "url": failures.url, "events": ["Failed", "Aborted"]},
            {"name": "successes", "url": successes.url, "events": ["Succeeded"]},
        ],
    )
    status = done["status"]

    assert _json_events(everything) == ["Started", "Failed"]
    assert _json_events(failures) == ["Failed"]
    assert successes.requests == []
    failed = failures.messages[0]
    assert failed == everything.messages[-1]  # one notification, the same to each webhook
    assert failed["phase"] == "Failed" and failed["step"] == "Preflight"
    assert failed["message"] == status["message"] and failed["message"].startswith(
        "Preflight failed"
    )
    assert failed["id"].endswith("/Failed")
    assert f"kubectl rollback report doomed -n {namespace}" in failed["commands"]

    sent = _notifications(done)
    assert set(sent) == {"everything", "failures"}  # never told anything: no entry
    assert sent["everything"]["sent"] == 2 and sent["failures"]["sent"] == 1


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "both", "url": "http://x/y", "urlSecretRef": {"name": "s", "key": "k"}},
            'notify "both" needs exactly one of url or urlSecretRef',
        ),
        ({"name": "neither"}, 'notify "neither" needs exactly one of url or urlSecretRef'),
        ({"name": "ftp", "url": "ftp://x/y"}, "a notify url must be an http:// or https:// URL"),
        ({"name": "teams", "url": "http://x/y", "format": "teams"}, "Unsupported value"),
        ({"name": "x", "url": "http://x/y", "events": ["Queued"]}, "Unsupported value"),
    ],
    ids=["both", "neither", "not-http", "format", "event"],
)
def test_the_api_server_refuses_a_bad_webhook(
    api: client.ApiClient,
    namespace: str,
    crds_installed: None,
    entry: dict[str, Any],
    expected: str,
) -> None:
    assert expected in refusal(api, namespace, notify=[entry])


def test_the_api_server_fills_in_the_defaults(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    created = dry_run(
        api, namespace, "good", notify=[{"name": "pager", "url": "https://pager.example/hook"}]
    )
    assert created["spec"]["notify"] == [
        {"name": "pager", "url": "https://pager.example/hook", "format": "json"}
    ]

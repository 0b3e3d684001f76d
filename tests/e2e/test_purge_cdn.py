"""PurgeCDN end to end: the operator process purges local servers that speak Cloudflare's,
Fastly's and a webhook's documented purge APIs (standins/cdn.py), after the real
revert on the real control plane.

What each test proves: the exact documented request is made once per run, and again only on
a retryable answer; 429 waits as long as the provider asks; a refused token fails the run with
a message that says what to fix, and the token appears in no status, Event or log line.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from standins.cdn import FakeCloudflare, FakeFastly, FakeWebhook
from standins.local import wait_until
from tests.e2e.lawyershub import (
    Operator,
    create_request,
    events_for,
    get_request,
    ledger,
    on_maintenance,
    refusal,
    run_request,
    wait_outcome,
)
from tests.e2e.people import QA, approve, as_person, install_approval_policy

pytestmark = pytest.mark.e2e

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
SERVICE = "SU1Z0isxPaozGVKXdv0eY"
TARGET = "registry.lawyershub.example:5000/lawyershub/frontend:stable-last-known"


@pytest.fixture
def token() -> str:
    """A fresh token per test, so that finding it anywhere means this run leaked it."""
    return f"tok-{secrets.token_hex(20)}"


@pytest.fixture
def cloudflare(token: str) -> Iterator[FakeCloudflare]:
    with FakeCloudflare(ZONE, token) as server:
        assert isinstance(server, FakeCloudflare)
        yield server


@pytest.fixture
def fastly(token: str) -> Iterator[FakeFastly]:
    with FakeFastly(SERVICE, token) as server:
        assert isinstance(server, FakeFastly)
        yield server


def put_token(api: client.ApiClient, namespace: str, value: str) -> None:
    """The Secret the spec refers to, with a trailing newline as `echo ... >file` leaves it."""
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {"metadata": {"name": "cdn-token"}, "stringData": {"token": value + "\n"}},
    )


SECRET_REF = {"secretRef": {"name": "cdn-token", "key": "token"}}


def cloudflare_cdn(server: FakeCloudflare, **more: Any) -> dict[str, Any]:
    """spec.cdn for the local Cloudflare: zone ZONE, the token from Secret cdn-token."""
    return {
        "provider": "cloudflare",
        "apiBase": server.api_base,
        "zoneId": ZONE,
        "credentials": SECRET_REF,
        **more,
    }


def fastly_cdn(server: FakeFastly, **more: Any) -> dict[str, Any]:
    """spec.cdn for the local Fastly: service SERVICE, the key from Secret cdn-token."""
    return {
        "provider": "fastly",
        "apiBase": server.api_base,
        "serviceId": SERVICE,
        "credentials": SECRET_REF,
        **more,
    }


def rollback(
    api: client.ApiClient, namespace: str, name: str, cdn: dict[str, Any], phase: str = "Succeeded"
) -> Any:
    return run_request(api, namespace, name, phase, timeout=120, cdn=cdn)


def purge_record(done: dict[str, Any]) -> dict[str, Any]:
    return ledger(done)["PurgeCDN"]


def purge_now(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The PurgeCDN record as it is now; empty while the run has not got that far."""
    status = get_request(api, namespace, name).get("status") or {}
    return {s["name"]: s for s in status.get("steps", [])}.get("PurgeCDN", {})


def frontend_image(api: client.ApiClient, namespace: str) -> str:
    deployment = client.AppsV1Api(api).read_namespaced_deployment("frontend", namespace)
    return str(deployment.spec.template.spec.containers[0].image)


def test_cloudflare_purges_everything_once_after_the_revert(
    api: client.ApiClient, app: str, operator: Operator, cloudflare: FakeCloudflare, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    images_at_purge: list[str] = []
    cloudflare.on_request = lambda: images_at_purge.append(frontend_image(api, namespace))

    done = rollback(api, namespace, "cf", cloudflare_cdn(cloudflare))

    record = purge_record(done)
    assert record["state"] == "Succeeded"
    assert record["message"] == f"purged everything of Cloudflare zone {ZONE} (purge id {ZONE})"
    assert record["attempts"] == 1
    [request] = cloudflare.received()
    assert (request.method, request.path) == ("POST", f"/client/v4/zones/{ZONE}/purge_cache")
    assert request.headers["authorization"] == f"Bearer {token}"  # the newline was trimmed
    assert request.headers["content-type"] == "application/json"
    assert request.json == {"purge_everything": True}
    assert request.status == 200
    assert cloudflare.violations == []
    # After the revert: the frontend already ran the stable image when the purge arrived.
    assert images_at_purge == [TARGET]
    assert ledger(done)["RevertWorkloads"]["finishedAt"] <= record["startedAt"]


def test_cloudflare_purges_a_long_url_list_in_requests_of_100(
    api: client.ApiClient, app: str, operator: Operator, cloudflare: FakeCloudflare, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    urls = [f"https://www.lawyershub.example/assets/app.{i}.js" for i in range(150)]

    done = rollback(api, namespace, "cf-urls", cloudflare_cdn(cloudflare, purge={"urls": urls}))

    assert [r.json for r in cloudflare.received()] == [{"files": urls[:100]}, {"files": urls[100:]}]
    assert cloudflare.violations == []
    assert purge_record(done)["message"].startswith(
        f"purged 150 URL(s) of Cloudflare zone {ZONE} in 2 requests"
    )


@pytest.mark.parametrize(
    ("purge", "path", "body"),
    [
        (None, f"/service/{SERVICE}/purge_all", None),
        (
            {"surrogateKeys": ["frontend", "assets"]},
            f"/service/{SERVICE}/purge",
            {"surrogate_keys": ["frontend", "assets"]},
        ),
    ],
    ids=["purge_all", "surrogate_keys"],
)
def test_fastly_purges_once_with_the_fastly_key(
    api: client.ApiClient,
    app: str,
    operator: Operator,
    fastly: FakeFastly,
    token: str,
    purge: dict[str, Any] | None,
    path: str,
    body: Any,
) -> None:
    namespace = app
    put_token(api, namespace, token)
    done = rollback(
        api, namespace, "fastly", fastly_cdn(fastly, **({"purge": purge} if purge else {}))
    )

    [request] = fastly.received()
    assert (request.method, request.path, request.json) == ("POST", path, body)
    assert request.headers["fastly-key"] == token
    assert "authorization" not in request.headers
    assert fastly.violations == []
    what = "2 surrogate key(s)" if purge else "everything"
    assert purge_record(done)["message"].startswith(f"purged {what} of Fastly service {SERVICE}")


def test_a_webhook_gets_one_purge_and_a_5xx_is_retried_with_the_same_key(
    api: client.ApiClient, app: str, operator: Operator, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    with FakeWebhook("/v1/purge", token) as webhook:
        assert isinstance(webhook, FakeWebhook)
        webhook.answer_first(webhook.server_error(503))  # a gateway, briefly down
        done = rollback(
            api,
            namespace,
            "hook",
            {"provider": "webhook", "url": webhook.url, "credentials": SECRET_REF,
             "purge": {"prefixes": ["www.lawyershub.example/"]}},
        )  # fmt: skip
        received = webhook.received()
        violations = webhook.violations

    assert [r.status for r in received] == [503, 202]
    first, second = received
    assert first.raw == second.raw  # the same request, byte for byte
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.json["purge"] == {"prefixes": ["www.lawyershub.example/"]}
    assert first.json["rollbackRequest"] == {"namespace": namespace, "name": "hook"}
    assert second.at - first.at >= 1.0  # the first backoff
    assert violations == []
    record = purge_record(done)
    assert record["message"].endswith("after 1 retry")
    assert record["message"].startswith(f"purged 1 prefix(es) of the purge webhook {webhook.url}")


def _watch_purge_messages(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    """The PurgeCDN messages seen while the step runs, until it is no longer Running."""
    seen: list[str] = []

    def finished() -> bool:
        record = purge_now(api, namespace, name)
        message = record.get("message")
        if record.get("state") == "Running" and message and (not seen or seen[-1] != message):
            seen.append(message)
        return record.get("state") in ("Succeeded", "Failed")

    wait_until(finished, timeout=120, what=f"PurgeCDN of {name} to finish", interval=0.05)
    return seen


def test_cloudflare_429_waits_as_long_as_retry_after_asks(
    api: client.ApiClient, app: str, operator: Operator, cloudflare: FakeCloudflare, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    cloudflare.answer_first(FakeCloudflare.throttled(retry_after=2))

    create_request(
        api,
        namespace,
        "throttled",
        cdn=cloudflare_cdn(cloudflare, purge={"prefixes": ["www.lawyershub.example/assets"]}),
    )
    messages = _watch_purge_messages(api, namespace, "throttled")
    done = wait_outcome(api, namespace, "throttled", "Succeeded")

    first, second = cloudflare.received()
    assert (first.status, second.status) == (429, 200)
    assert first.raw == second.raw
    assert second.at - first.at >= 2.0
    assert cloudflare.violations == []
    assert any(
        "Cloudflare answered 429 Too Many Requests" in m and "in 2s, as Retry-After asks" in m
        for m in messages
    ), messages
    assert purge_record(done)["message"].endswith("after 1 retry")


def test_fastly_429_waits_for_the_rate_limit_window_to_reset(
    api: client.ApiClient, app: str, operator: Operator, fastly: FakeFastly, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    fastly.answer_first(FakeFastly.throttled(reset_in=2))

    rollback(api, namespace, "fastly-throttled", fastly_cdn(fastly))

    first, second = fastly.received()
    assert (first.status, second.status) == (429, 200)
    # The reset is a whole epoch second at least 2 s after the 429: not asked again before it.
    assert second.wall >= first.wall + 2.0
    assert fastly.violations == []
    assert "as Fastly-RateLimit-Reset asks" in operator.logs()


def test_a_refused_token_fails_the_run_clearly_and_never_shows_the_token(
    api: client.ApiClient, app: str, operator: Operator, cloudflare: FakeCloudflare
) -> None:
    namespace = app
    wrong = f"revoked-{secrets.token_hex(20)}"
    put_token(api, namespace, wrong)

    done = rollback(api, namespace, "bad-token", cloudflare_cdn(cloudflare), phase="Failed")

    status = done["status"]
    record = purge_record(done)
    assert record["state"] == "Failed"
    assert "Cloudflare refused the credentials: 403 Forbidden" in record["message"]
    assert "Authentication error [10000]" in record["message"]
    assert "Secret cdn-token key token" in record["message"]
    assert "maintenance page is still on" in record["message"]
    assert status["message"].startswith("PurgeCDN failed: ")
    # Not retried: a 403 does not get better by asking again.
    [request] = cloudflare.received()
    assert request.headers["authorization"] == f"Bearer {wrong}"  # it was really sent
    # Fail safe: the site stays on the maintenance page; no later step ran.
    assert ledger(done)["Verify"]["state"] == "Pending"
    assert on_maintenance(api, namespace)

    events = events_for(api, namespace, "bad-token")
    failed = [e for e in events if e.reason == "StepFailed"]
    assert failed and "403" in failed[0].message
    wait_until(lambda: "PurgeCDN" in operator.logs(), timeout=10, what="the operator's log")
    outputs = {
        "status": json.dumps(get_request(api, namespace, "bad-token")),
        "events": json.dumps([e.message for e in events_for(api, namespace, "bad-token")]),
        "log": operator.logs(),
    }
    for where, text in outputs.items():
        assert wrong not in text, f"the token leaked into the {where}"


def test_a_restart_during_the_retry_wait_repeats_nothing_needlessly(
    api: client.ApiClient, app: str, operator: Operator, cloudflare: FakeCloudflare, token: str
) -> None:
    namespace = app
    put_token(api, namespace, token)
    cloudflare.answer_first(FakeCloudflare.throttled(retry_after=30))

    create_request(api, namespace, "restart", cdn=cloudflare_cdn(cloudflare))

    wait_until(
        lambda: "429" in purge_now(api, namespace, "restart").get("message", ""),
        timeout=90,
        what="PurgeCDN waiting on the 429",
    )
    started = purge_record(get_request(api, namespace, "restart"))["startedAt"]
    operator.kill()
    operator.start()
    done = wait_outcome(api, namespace, "restart", "Succeeded")

    statuses = [r.status for r in cloudflare.received()]
    # The throttled request, then one more from the restarted operator: nothing repeated.
    assert statuses == [429, 200]
    record = purge_record(done)
    assert record["startedAt"] == started  # the deadline still counts from the first start
    assert record["attempts"] == 2


def test_a_finished_purge_is_not_repeated_after_a_restart(
    api: client.ApiClient,
    kubeconfig: str,
    app: str,
    operator: Operator,
    cloudflare: FakeCloudflare,
    token: str,
) -> None:
    """The run stops after PurgeCDN to wait for QA's sign-off of Verify; the operator is
    killed there and started again: the ledger says PurgeCDN Succeeded, so it is not rerun."""
    namespace = app
    install_approval_policy(api, kubeconfig, namespace)
    put_token(api, namespace, token)
    waiting = run_request(
        api,
        namespace,
        "signed-off",
        "AwaitingApproval",
        cdn=cloudflare_cdn(cloudflare),
        verification={"requireApproval": True},
    )
    assert purge_record(waiting)["state"] == "Succeeded"
    assert len(cloudflare.received()) == 1

    operator.kill()
    operator.start()
    approve(as_person(kubeconfig, QA), namespace, "signed-off", "Verify", QA[0])
    done = wait_outcome(api, namespace, "signed-off", "Succeeded")

    assert len(cloudflare.received()) == 1
    assert purge_record(done) == purge_record(waiting)  # untouched by the second process


CREDENTIALS = {"credentials": SECRET_REF}


@pytest.mark.parametrize(
    ("cdn", "message"),
    [
        ({"provider": "cloudflare", **CREDENTIALS}, "cdn.provider cloudflare needs cdn.zoneId"),
        ({"provider": "fastly", "serviceId": SERVICE}, "needs cdn.credentials.secretRef"),
        ({"provider": "webhook"}, "cdn.provider webhook needs cdn.url"),
        (
            {"provider": "cloudflare", "zoneId": "../x", **CREDENTIALS},
            'cdn.zoneId "../x" is not a zone id',
        ),
        (
            {"provider": "cloudflare", "zoneId": ZONE, **CREDENTIALS, "purge": {"urls": []}},
            "should have at least 1 items",
        ),
        (
            {"provider": "cloudflare", "zoneId": ZONE, **CREDENTIALS,
             "purge": {"urls": ["https://a/"], "prefixes": ["a/"]}},
            "cdn.purge must say exactly one thing to purge",
        ),
        (
            {"provider": "fastly", "serviceId": SERVICE, **CREDENTIALS,
             "purge": {"urls": ["https://a/"]}},
            "fastly purges by surrogateKeys",
        ),
        (
            {"provider": "webhook", "url": "https://gw/", "apiBase": "https://gw/"},
            "cdn.apiBase is for cloudflare and fastly",
        ),
        (
            {"provider": "fastly", "serviceId": SERVICE, **CREDENTIALS, "timeout": "0s"},
            'cdn.timeout "0s" is out of range',
        ),
    ],
    ids=str,
)  # fmt: skip
def test_the_api_server_refuses_a_bad_spec_cdn(
    api: client.ApiClient, namespace: str, crds_installed: None, cdn: dict[str, Any], message: str
) -> None:
    assert message in refusal(api, namespace, cdn=cdn)

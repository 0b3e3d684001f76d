"""PurgeCDN and its provider clients, without a network: the exact requests each provider's API
documents, what each documented answer means, and the step's retries, deadline and secrecy.

HTTP goes through `httpx.MockTransport` and time through a settable clock, so every retry path
runs in microseconds. The e2e tier (tests/e2e/test_purge_cdn.py) runs the same step in the
operator process against local servers that speak the providers' APIs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from rollback_operator.cdn import (
    CdnSpec,
    auth_headers,
    clean_token,
    idempotency_key,
    purge_requests,
    token_problem,
)
from rollback_operator.cdn_http import Purged, Refused, Retry, backoff, interpret, retry_after, send
from rollback_operator.deadlines import Deadline
from rollback_operator.kube import Kube
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, SecretKeyRef
from rollback_operator.redaction import display_url, redact
from rollback_operator.registry import STEPS
from rollback_operator.status import Status
from rollback_operator.steps import purge_cdn
from rollback_operator.steps.base import Done, Fail, StepContext, Wait
from rollback_operator.steps.purge_cdn import PurgeCDN, preflight_problems
from tests.slow_servers import SlowServer, silent, trickle

NS, REQUEST = "lawyershub", "golive-2026-01-10"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
STARTED = "2026-01-10T03:00:00.000Z"
TOKEN = "cf-secret-token-0123456789abcdef"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
SERVICE = "SU1Z0isxPaozGVKXdv0eY"

CLOUDFLARE: dict[str, Any] = {
    "provider": "cloudflare",
    "zoneId": ZONE,
    "credentials": {"secretRef": {"name": "cdn-token", "key": "token"}},
    "timeout": "2m",
}
FASTLY: dict[str, Any] = {
    "provider": "fastly",
    "serviceId": SERVICE,
    "credentials": {"secretRef": {"name": "cdn-token", "key": "token"}},
    "timeout": "2m",
}
WEBHOOK: dict[str, Any] = {
    "provider": "webhook",
    "url": "https://purge.internal.example/v1/purge",
    "timeout": "2m",
}
CF_OK = {"success": True, "errors": [], "messages": [], "result": {"id": ZONE}}
CF_AUTH = {
    "success": False,
    "errors": [{"code": 10000, "message": "Authentication error"}],
    "messages": [],
    "result": None,
}


def request_spec(cdn: dict[str, Any] | None) -> RollbackSpec:
    raw: dict[str, Any] = {
        "reason": "Error rate 7.2 %",
        "trigger": "ErrorRate",
        "traffic": {
            "ingresses": ["lawyershub"],
            "maintenanceBackend": {"service": "maintenance-page", "port": 80},
        },
        "workloads": [{"deployment": "frontend"}],
    }
    if cdn is not None:
        raw["cdn"] = cdn
    return RollbackSpec.parse(raw)


# --- the spec


def test_parse_applies_the_defaults_and_reads_every_field() -> None:
    spec = CdnSpec.parse({"provider": "cloudflare", "zoneId": ZONE})
    assert spec.base == "https://api.cloudflare.com/client/v4"
    assert spec.purge.everything and spec.purge.describe() == "everything"
    assert spec.timeout_seconds == 120
    assert spec.credentials is None

    fastly = CdnSpec.parse(
        {**FASTLY, "apiBase": "http://gw.internal/", "purge": {"surrogateKeys": ["a", "b"]}}
    )
    assert fastly.base == "http://gw.internal"
    assert fastly.credentials == SecretKeyRef("cdn-token", "token")
    assert not fastly.purge.everything
    assert fastly.purge.surrogate_keys == ("a", "b")
    assert CdnSpec.parse({**WEBHOOK, "timeout": "90s"}).timeout_seconds == 90
    assert CdnSpec.parse({"provider": "fastly", "serviceId": "s"}).base == "https://api.fastly.com"


def test_the_step_is_skipped_without_spec_cdn() -> None:
    step = STEPS[PurgeCDN.name]
    assert isinstance(step, PurgeCDN)
    assert step.skip_reason(request_spec(None), None) == "no spec.cdn"
    assert step.skip_reason(request_spec(CLOUDFLARE), None) is None
    assert CdnSpec.of(request_spec(None)) is None


# --- the requests, as each provider documents them


def calls_for(cdn: dict[str, Any]) -> list[Any]:
    return purge_requests(CdnSpec.parse(cdn), namespace=NS, request=REQUEST, step_started=STARTED)


def test_cloudflare_purges_everything_with_one_zone_request() -> None:
    [call] = calls_for(CLOUDFLARE)
    assert call.method == "POST"
    assert call.url == f"https://api.cloudflare.com/client/v4/zones/{ZONE}/purge_cache"
    assert call.body == {"purge_everything": True}
    assert call.headers["Content-Type"] == "application/json"
    assert "Authorization" not in call.headers  # added only when sent


def test_cloudflare_sends_files_and_prefixes_in_batches_of_100() -> None:
    urls = [f"https://www.lawyershub.example/assets/{i}.js" for i in range(250)]
    calls = calls_for({**CLOUDFLARE, "purge": {"urls": urls}})
    assert [c.body for c in calls] == [
        {"files": urls[:100]},
        {"files": urls[100:200]},
        {"files": urls[200:]},
    ]
    assert [c.what for c in calls] == [
        "URLs 1-100 of 250",
        "URLs 101-200 of 250",
        "URLs 201-250 of 250",
    ]
    [prefixes] = calls_for({**CLOUDFLARE, "purge": {"prefixes": ["www.lawyershub.example/a"]}})
    assert prefixes.body == {"prefixes": ["www.lawyershub.example/a"]}


def test_fastly_purges_all_or_surrogate_keys() -> None:
    [everything] = calls_for(FASTLY)
    assert everything.url == f"https://api.fastly.com/service/{SERVICE}/purge_all"
    assert everything.body == {}
    assert "Content-Type" not in everything.headers
    [keys] = calls_for({**FASTLY, "purge": {"surrogateKeys": ["frontend", "assets"]}})
    assert keys.url == f"https://api.fastly.com/service/{SERVICE}/purge"
    assert keys.body == {"surrogate_keys": ["frontend", "assets"]}
    assert keys.headers["Content-Type"] == "application/json"


def test_ids_are_quoted_into_the_path() -> None:
    [call] = calls_for({**CLOUDFLARE, "zoneId": "a/../b"})
    assert call.url.endswith("/zones/a%2F..%2Fb/purge_cache")


def test_the_webhook_gets_the_purge_and_an_idempotency_key_stable_across_retries() -> None:
    [call] = calls_for({**WEBHOOK, "purge": {"prefixes": ["www.lawyershub.example/"]}})
    key = idempotency_key(NS, REQUEST, STARTED)
    assert call.url == "https://purge.internal.example/v1/purge"
    assert call.headers["Idempotency-Key"] == key
    assert call.body == {
        "event": "rollback.purge",
        "idempotencyKey": key,
        "rollbackRequest": {"namespace": NS, "name": REQUEST},
        "purge": {"prefixes": ["www.lawyershub.example/"]},
    }
    assert calls_for(WEBHOOK)[0].body["purge"] == {"everything": True}
    assert idempotency_key(NS, REQUEST, STARTED) == key
    assert idempotency_key(NS, REQUEST, "2026-01-11T03:00:00.000Z") != key


def test_credentials_go_in_the_header_each_provider_documents() -> None:
    assert auth_headers("cloudflare", TOKEN) == {"Authorization": f"Bearer {TOKEN}"}
    assert auth_headers("fastly", TOKEN) == {"Fastly-Key": TOKEN}
    assert auth_headers("webhook", TOKEN) == {"Authorization": f"Bearer {TOKEN}"}
    assert auth_headers("webhook", None) == {}


# --- the answers


def answer(
    cdn: dict[str, Any],
    status: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
    reason: str = "",
) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body else b""
    return interpret(
        CdnSpec.parse(cdn),
        status,
        reason=reason,
        headers=httpx.Headers(headers or {}),
        body=raw,
        now=T0,
    )


def test_cloudflare_answers() -> None:
    assert answer(CLOUDFLARE, 200, CF_OK) == Purged(f"purge id {ZONE}")
    refused = answer(CLOUDFLARE, 200, {**CF_AUTH, "errors": [{"code": 1012, "message": "bad"}]})
    assert isinstance(refused, Refused) and "bad [1012]" in refused.message

    throttled = answer(
        CLOUDFLARE,
        429,
        {"success": False, "errors": [{"code": 971, "message": "Please wait"}]},
        {"Retry-After": "7"},
        "Too Many Requests",
    )
    assert throttled == Retry(
        "Cloudflare answered 429 Too Many Requests (Please wait [971])",
        after=7.0,
        asked_by="Retry-After",
    )
    assert answer(CLOUDFLARE, 503, b"<html>oops</html>") == Retry(
        "Cloudflare answered 503 (<html>oops</html>)", None
    )

    auth = answer(CLOUDFLARE, 403, CF_AUTH, reason="Forbidden")
    assert isinstance(auth, Refused)
    assert "Cloudflare refused the credentials: 403 Forbidden" in auth.message
    assert "Authentication error [10000]" in auth.message
    assert "Secret cdn-token key token" in auth.message
    assert "Cache Purge permission" in auth.message

    missing = answer(CLOUDFLARE, 404, {"success": False, "errors": []}, reason="Not Found")
    assert isinstance(missing, Refused) and "cdn.zoneId" in missing.message


def test_fastly_answers() -> None:
    assert answer(FASTLY, 200, {"status": "ok"}) == Purged("")
    assert answer(FASTLY, 200, {"frontend": "108-1391560174-974124", "assets": "108-2"}) == (
        Purged("2 purge id(s)")
    )
    assert isinstance(answer(FASTLY, 200, {"status": "error"}), Refused)
    auth = answer(FASTLY, 401, {"msg": "Provided credentials are missing or invalid"})
    assert isinstance(auth, Refused)
    assert "Provided credentials are missing or invalid" in auth.message
    assert "purge_all scope" in auth.message
    reset = str(int(T0.timestamp()) + 42)
    throttled = answer(FASTLY, 429, {"msg": "Too many"}, {"Fastly-RateLimit-Reset": reset})
    assert throttled == Retry(
        "Fastly answered 429 (Too many)",
        after=42,
        asked_by="Fastly-RateLimit-Reset",
    )


def test_webhook_answers() -> None:
    assert answer(WEBHOOK, 202, {"id": "p-1"}) == Purged("id p-1")
    assert answer(WEBHOOK, 204) == Purged("")
    assert isinstance(answer(WEBHOOK, 408), Retry)
    bad = answer(WEBHOOK, 400, {"error": "unknown purge kind"})
    assert isinstance(bad, Refused) and "unknown purge kind" in bad.message
    moved = answer(WEBHOOK, 308, headers={"Location": "https://elsewhere/"})
    assert isinstance(moved, Refused) and "cdn.url" in moved.message


def test_retry_after_reads_seconds_dates_and_fastly_resets() -> None:
    assert retry_after(httpx.Headers({"Retry-After": "3"}), T0) == (3, "Retry-After")
    date = (T0 + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after(httpx.Headers({"Retry-After": date}), T0) == (30, "Retry-After")
    assert retry_after(httpx.Headers({"Retry-After": "soon"}), T0) is None
    assert retry_after(httpx.Headers({"Retry-After": "-5"}), T0) == (0, "Retry-After")
    reset = httpx.Headers({"Fastly-RateLimit-Reset": str(int(T0.timestamp()) + 9)})
    assert retry_after(reset, T0) == (9, "Fastly-RateLimit-Reset")
    assert retry_after(httpx.Headers({}), T0) is None
    assert [backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_tokens_are_cleaned_checked_and_never_quoted() -> None:
    ref = SecretKeyRef("cdn-token", "token")
    assert clean_token(f"{TOKEN}\n") == TOKEN
    assert token_problem(TOKEN, ref) is None
    assert token_problem(None, ref) == (
        "Secret cdn-token key token does not exist (cdn.credentials.secretRef)"
    )
    assert "is empty" in (token_problem("", ref) or "")
    bad = token_problem("abc\ndef", ref) or ""
    assert "cannot be sent in an HTTP header" in bad and "abc" not in bad
    assert redact(f"echo {TOKEN}!", TOKEN) == "echo <redacted>!"


def test_send_adds_the_token_and_redacts_it_from_whatever_comes_back() -> None:
    seen: list[httpx.Request] = []

    def echo(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(403, json={"msg": f"bad key {request.headers['fastly-key']}"})

    spec = CdnSpec.parse(FASTLY)
    [call] = calls_for(FASTLY)
    result = send(
        spec, call, TOKEN, deadline=Deadline(5), now=T0, transport=httpx.MockTransport(echo)
    )
    assert seen[0].headers["Fastly-Key"] == TOKEN
    assert isinstance(result, Refused)
    assert TOKEN not in result.message and "<redacted>" in result.message


def test_send_turns_network_trouble_into_a_retry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    spec = CdnSpec.parse(CLOUDFLARE)
    [call] = calls_for(CLOUDFLARE)
    result = send(
        spec, call, TOKEN, deadline=Deadline(5), now=T0, transport=httpx.MockTransport(refuse)
    )
    assert isinstance(result, Retry) and result.after is None
    assert "could not reach Cloudflare" in result.reason and "Connection refused" in result.reason


@pytest.mark.parametrize("server", [trickle, silent], ids=["trickling", "silent"])
def test_a_purge_against_a_slow_server_is_retried_after_its_total_deadline(
    server: Callable[[], SlowServer],
) -> None:
    with server() as slow:
        spec = CdnSpec.parse({**CLOUDFLARE, "apiBase": slow.url})
        [call] = calls_for({**CLOUDFLARE, "apiBase": slow.url})
        started = time.monotonic()
        result = send(spec, call, TOKEN, deadline=Deadline(2), now=T0)
        took = time.monotonic() - started
    assert took < 2 + 2.0
    assert isinstance(result, Retry)
    assert result.reason.endswith("did not answer within 2s")


# --- the step: retries, deadline, progress, secrecy


class FakeKube:
    def __init__(self, secrets: dict[tuple[str, str], str]) -> None:
        self.secrets = secrets
        self.reads = 0

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        assert namespace == NS
        self.reads += 1
        return self.secrets.get((name, key))


Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Harness:
    """A PurgeCDN with a scripted provider, a settable clock and a fake Secret."""

    def __init__(self, cdn: dict[str, Any], replies: list[Reply], token: str | None = TOKEN):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.clock = T0
        self.spec = request_spec(cdn)
        self.kube = FakeKube({} if token is None else {("cdn-token", "token"): token})
        self.step = PurgeCDN(transport=httpx.MockTransport(self._serve))

    def _serve(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0)
        return reply if isinstance(reply, httpx.Response) else reply(request)

    def ctx(self) -> StepContext:
        return StepContext(
            kube=cast(Kube, self.kube),
            namespace=NS,
            request=REQUEST,
            spec=self.spec,
            ledger=StatusLedger(Status()),
            step_started_at=T0,
            now=lambda: self.clock,
        )

    def run(self) -> Any:
        return self.step.run(self.ctx())

    def later(self, seconds: float) -> None:
        self.clock += timedelta(seconds=seconds)


def cf(status: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=CF_OK if body is None else body, headers=headers)


def test_one_call_of_the_step_is_bounded_whatever_the_provider_does() -> None:
    """A call of the step returns within its budget, so the runner sees an abort in time."""
    with trickle() as slow:
        h = Harness({**CLOUDFLARE, "apiBase": slow.url}, [])
        h.step = PurgeCDN()
        started = time.monotonic()
        outcome = h.run()
        took = time.monotonic() - started
    assert took < purge_cdn.CALL_SECONDS + 2.0
    assert isinstance(outcome, Wait)
    assert "did not answer within 4s" in outcome.message


def test_one_request_on_success_with_the_exact_headers_and_body() -> None:
    h = Harness(CLOUDFLARE, [cf(200)])
    outcome = h.run()
    assert outcome == Done(f"purged everything of Cloudflare zone {ZONE} (purge id {ZONE})")
    [request] = h.requests
    assert request.method == "POST"
    assert str(request.url) == f"https://api.cloudflare.com/client/v4/zones/{ZONE}/purge_cache"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"purge_everything": True}


def test_429_waits_as_long_as_retry_after_asks_then_retries_once() -> None:
    h = Harness(
        CLOUDFLARE, [cf(429, {"success": False, "errors": []}, **{"Retry-After": "3"}), cf(200)]
    )
    first = h.run()
    assert isinstance(first, Wait) and first.retry_after == 3
    assert "429" in first.message and "in 3s, as Retry-After asks" in first.message
    assert "attempt 2" in first.message

    h.later(1)  # called early (a spurious wake-up): still waiting, nothing sent
    early = h.run()
    assert isinstance(early, Wait) and early.message == first.message
    assert early.retry_after == pytest.approx(2)
    assert len(h.requests) == 1

    h.later(2)
    done = h.run()
    assert isinstance(done, Done) and done.message.endswith("after 1 retry")
    assert len(h.requests) == 2


def test_a_long_retry_after_is_waited_in_short_slices() -> None:
    h = Harness(CLOUDFLARE, [cf(429, {}, **{"Retry-After": "20"}), cf(200)])
    first = h.run()
    assert isinstance(first, Wait) and first.retry_after == 5  # abort is seen within 5 s
    for _ in range(3):
        h.later(5)
        assert isinstance(h.run(), Wait)
    assert len(h.requests) == 1
    h.later(5)
    assert isinstance(h.run(), Done)
    assert len(h.requests) == 2


def test_a_retry_after_beyond_the_deadline_fails_at_once() -> None:
    h = Harness(CLOUDFLARE, [cf(429, {}, **{"Retry-After": "300"})])
    outcome = h.run()
    assert isinstance(outcome, Fail)
    assert "cdn.timeout 2m" in outcome.message and "(5m)" in outcome.message
    assert "maintenance page is still on" in outcome.message


def test_server_errors_back_off_exponentially_until_the_deadline() -> None:
    h = Harness({**CLOUDFLARE, "timeout": "10s"}, [cf(503, {"success": False})] * 10)
    waits = []
    outcome = h.run()
    while isinstance(outcome, Wait):
        waits.append(outcome.retry_after)
        h.later(outcome.retry_after)
        outcome = h.run()
    assert waits == [1, 2, 4]  # the next (8 s) would end after the 10 s deadline
    assert isinstance(outcome, Fail)
    assert (
        "503" in outcome.message and "no retry fits before the step's deadline" in outcome.message
    )
    assert len(h.requests) == 4


def test_a_bad_token_fails_at_once_without_a_retry_or_the_token_in_the_message() -> None:
    h = Harness(CLOUDFLARE, [cf(403, CF_AUTH)])
    outcome = h.run()
    assert isinstance(outcome, Fail)
    assert "refused the credentials: 403 Forbidden" in outcome.message
    assert TOKEN not in outcome.message
    assert len(h.requests) == 1


def test_a_missing_secret_fails_before_any_request() -> None:
    h = Harness(FASTLY, [], token=None)
    outcome = h.run()
    assert isinstance(outcome, Fail)
    assert "Secret cdn-token key token does not exist" in outcome.message
    assert h.requests == []
    assert preflight_problems(h.ctx()) == [
        "cdn: Secret cdn-token key token does not exist (cdn.credentials.secretRef)"
    ]


def test_a_secret_with_a_trailing_newline_is_used_without_it() -> None:
    h = Harness(FASTLY, [httpx.Response(200, json={"status": "ok"})], token=f"{TOKEN}\n")
    assert isinstance(h.run(), Done)
    assert h.requests[0].headers["Fastly-Key"] == TOKEN
    assert preflight_problems(h.ctx()) == []


def test_a_batched_purge_resumes_at_the_request_that_was_throttled() -> None:
    urls = [f"https://www.lawyershub.example/{i}" for i in range(150)]
    h = Harness(
        {**CLOUDFLARE, "purge": {"urls": urls}},
        [cf(200), cf(429, {}, **{"Retry-After": "1"}), cf(200)],
    )
    first = h.run()
    assert isinstance(first, Wait) and "(URLs 101-150 of 150)" in first.message
    h.later(1)
    done = h.run()
    assert isinstance(done, Done)
    assert done.message.startswith("purged 150 URL(s) of Cloudflare zone")
    assert "in 2 requests" in done.message
    bodies = [json.loads(r.content)["files"] for r in h.requests]
    assert bodies == [urls[:100], urls[100:], urls[100:]]


def test_after_a_restart_the_purge_starts_over_but_keeps_the_deadline() -> None:
    h = Harness(CLOUDFLARE, [cf(503, {}), cf(200)])
    assert isinstance(h.run(), Wait)
    h.step = PurgeCDN(transport=httpx.MockTransport(h._serve))  # a new operator process
    h.later(0.1)
    assert isinstance(h.run(), Done)  # no memory of the wait: retried at once, harmless
    assert len(h.requests) == 2

    late = Harness(CLOUDFLARE, [])
    late.later(121)  # restarted after cdn.timeout, counted from the step's start
    outcome = late.run()
    assert isinstance(outcome, Fail) and "cdn.timeout 2m" in outcome.message
    assert late.requests == []


def test_the_webhook_without_credentials_sends_no_authorization() -> None:
    h = Harness(WEBHOOK, [httpx.Response(202, json={"id": "purge-7"})])
    outcome = h.run()
    assert outcome == Done(
        "purged everything of the purge webhook https://purge.internal.example/v1/purge "
        "(id purge-7)"
    )
    assert "authorization" not in h.requests[0].headers
    assert h.requests[0].headers["Idempotency-Key"] == idempotency_key(NS, REQUEST, STARTED)
    assert h.kube.reads == 0


def test_the_plan_says_what_would_be_sent_and_sends_nothing() -> None:
    h = Harness({**FASTLY, "purge": {"surrogateKeys": ["frontend"]}}, [])
    plan = h.step.plan(h.ctx())
    assert plan == (
        f"would purge 1 surrogate key(s) of Fastly service {SERVICE}: 1 POST request(s) to "
        f"https://api.fastly.com/service/{SERVICE}/purge, with the token in Secret cdn-token "
        "key token, retried until cdn.timeout 2m"
    )
    assert h.requests == [] and h.kube.reads == 0


def test_messages_show_a_webhook_url_without_its_user_info_or_query() -> None:
    url = "https://purger:s3cret@gw.internal.example/v1/purge?key=k3y"
    h = Harness({**WEBHOOK, "url": url}, [httpx.Response(204)])
    outcome = h.run()
    assert outcome == Done(
        "purged everything of the purge webhook https://gw.internal.example/v1/purge"
    )
    assert str(h.requests[0].url) == url  # sent as written
    assert "s3cret" not in h.step.plan(h.ctx()) and "k3y" not in h.step.plan(h.ctx())
    assert display_url("") == ""


def test_time_running_out_between_calls_names_the_last_problem() -> None:
    h = Harness({**CLOUDFLARE, "timeout": "10s"}, [cf(502, {"success": False})])
    assert isinstance(h.run(), Wait)
    h.later(11)  # the operator was busy (or away) past the deadline
    outcome = h.run()
    assert isinstance(outcome, Fail)
    assert "within cdn.timeout 10s: Cloudflare answered 502" in outcome.message
    assert len(h.requests) == 1

"""The CDN purge over HTTP (runbook §2.2): the one call, `send`, and what each provider's
answer means, `interpret`, by the shapes its API documents (see `cdn.py` for the requests).

Kept apart from the requests because this is where the token and the network meet: `send` is
the only place the token is added, and every text built from an answer goes through
`redaction.redact`, in case a provider or gateway echoes it back. `interpret` stays a plain
function of status, headers and body, unit-tested without a network. Nothing here raises for a
provider's trouble or retries on its own: the step (`steps/purge_cdn.py`) decides, with
`backoff` and the wait a provider asks for, within its deadline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from rollback_operator import throttling
from rollback_operator.cdn import CLOUDFLARE, FASTLY, WEBHOOK, CdnSpec, PurgeRequest, auth_headers
from rollback_operator.deadlines import Deadline, request
from rollback_operator.redaction import display_url, redact

USER_AGENT = "rollback-operator (PurgeCDN)"
# The longest a server's error text is quoted in a message: enough to name the problem, short
# enough for a ledger line and an Event.
QUOTE_LIMIT = 300
# Backoff between retries when the provider does not say how long to wait (5xx, network).
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


# --- the answers


@dataclass(frozen=True)
class Purged:
    detail: str  # a purge id or a short note, for the ledger ("" when the answer has none)


@dataclass(frozen=True)
class Retry:
    """A retryable answer (429, 5xx, 408, or no answer at all). `after` is the wait the
    server asked for, None when it did not say; `asked_by` names the header that said it."""

    reason: str
    after: float | None = None
    asked_by: str = ""


@dataclass(frozen=True)
class Refused:
    """An answer that a retry would not change: a bad token, a wrong zone, a bad request."""

    message: str


Answer = Purged | Retry | Refused


def interpret(
    spec: CdnSpec,
    status: int,
    *,
    reason: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
) -> Answer:
    """What one HTTP answer means for the purge, by the provider's documented shapes."""
    data = _json(body)
    if 200 <= status < 300:
        return _success(spec, data)
    said = _error_text(spec, data, body)
    code = f"{status} {reason}".strip()
    detail = f" ({said})" if said else ""
    if status in {408, 429} or status >= 500:
        asked = retry_after(headers, now)
        reason_text = f"{spec.who} answered {code}{detail}"
        if asked is None:
            return Retry(reason_text)
        return Retry(reason_text, after=asked[0], asked_by=asked[1])
    if 300 <= status < 400:
        target = display_url(headers.get("location", ""))
        setting = "cdn.url" if spec.provider == WEBHOOK else "cdn.apiBase"
        return Refused(
            f"{spec.who} answered {code}, a redirect to {target}: set {setting} to the final URL"
        )
    if status in (401, 403):
        return Refused(f"{spec.who} refused the credentials: {code}{detail}. {_auth_hint(spec)}")
    return Refused(f"{spec.who} refused the purge: {code}{detail}. {_request_hint(spec, status)}")


def _success(spec: CdnSpec, data: Any) -> Answer:
    if spec.provider == CLOUDFLARE:
        if isinstance(data, dict) and data.get("success") is False:
            return Refused(
                f"Cloudflare answered success: false ({_cloudflare_errors(data)}). "
                + _request_hint(spec, 400)
            )
        result = data.get("result") if isinstance(data, dict) else None
        purge_id = result.get("id") if isinstance(result, dict) else None
        return Purged(f"purge id {purge_id}" if purge_id else "")
    if spec.provider == FASTLY:
        if isinstance(data, dict) and "status" in data and data["status"] != "ok":
            return Refused(f"Fastly answered status {data['status']!r} instead of 'ok'")
        if isinstance(data, dict) and "status" not in data and data:
            return Purged(f"{len(data)} purge id(s)")
        return Purged("")
    if isinstance(data, dict) and isinstance(data.get("id"), str | int):
        return Purged(f"id {data['id']}")
    return Purged("")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _cloudflare_errors(data: Mapping[str, Any]) -> str:
    errors = data.get("errors") or []
    parts = [
        f"{e.get('message', '?')} [{e.get('code', '?')}]" if isinstance(e, dict) else str(e)
        for e in errors
    ]
    return "; ".join(parts) or "no error given"


def _error_text(spec: CdnSpec, data: Any, body: bytes) -> str:
    """The provider's own words about an error, short."""
    text = ""
    if isinstance(data, dict):
        if spec.provider == CLOUDFLARE and "errors" in data:
            text = _cloudflare_errors(data)
        elif "msg" in data or "title" in data:  # Fastly: {"msg", "detail"}, or RFC 7807
            head = str(data.get("msg") or data.get("title"))
            text = f"{head}: {data['detail']}" if data.get("detail") else head
        elif "message" in data or "error" in data:
            text = str(data.get("message") or data.get("error"))
    elif body:
        text = " ".join(body.decode("utf-8", "replace").split())
    return text[:QUOTE_LIMIT]


def _auth_hint(spec: CdnSpec) -> str:
    where = f"the token in {spec.credentials}" if spec.credentials else "the webhook's credentials"
    if spec.provider == CLOUDFLARE:
        need = f"an API token with the Zone > Cache Purge permission on zone {spec.zone_id}"
    elif spec.provider == FASTLY:
        scope = "purge_select" if spec.purge.surrogate_keys else "purge_all"
        need = f"a Fastly API token with the {scope} scope on service {spec.service_id}"
    else:
        need = "a token the webhook accepts (cdn.credentials.secretRef)"
    return (
        f"Check {where}: it must be {need}. Fix the Secret, then create a new RollbackRequest "
        "or purge the CDN by hand; the maintenance page is still on."
    )


def _request_hint(spec: CdnSpec, status: int) -> str:
    if status == 404:
        ids = {CLOUDFLARE: "cdn.zoneId", FASTLY: "cdn.serviceId"}.get(spec.provider, "cdn.url")
        return f"Check {ids} and cdn.apiBase; the maintenance page is still on."
    return "Check spec.cdn against the provider's API; the maintenance page is still on."


def retry_after(headers: Mapping[str, str], now: datetime) -> tuple[float, str] | None:
    """Seconds to wait as the server asks, and the header that asks: `Retry-After` (seconds
    or an HTTP date), else Fastly's `Fastly-RateLimit-Reset` (the epoch second its rate-limit
    window resets). None when neither says."""
    asked = throttling.retry_after(headers.get("retry-after"), now)
    if asked is not None:
        return asked, "Retry-After"
    reset = (headers.get("fastly-ratelimit-reset") or "").strip()
    if reset:
        try:
            return max(0.0, float(reset) - now.timestamp()), "Fastly-RateLimit-Reset"
        except ValueError:
            pass
    return None


def backoff(failures: int) -> float:
    """The wait before retry number `failures` (1, 2, 4, ... 30 s) when the server gave none."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * float(2 ** max(0, failures - 1)))


# --- the one call


def send(
    spec: CdnSpec,
    call: PurgeRequest,
    token: str | None,
    *,
    deadline: Deadline,
    now: datetime,
    transport: httpx.BaseTransport | None = None,
) -> Answer:
    """Makes one purge call and reads its answer, all within `deadline`. Network trouble and
    a server too slow for the deadline are retryable; nothing here raises, and no text it
    returns contains the token."""
    headers = {"User-Agent": USER_AGENT, **call.headers, **auth_headers(spec.provider, token)}
    content = json.dumps(call.body).encode() if call.body else None
    where = display_url(call.url)
    try:
        response = request(
            call.method,
            call.url,
            deadline=deadline,
            transport=transport,
            headers=headers,
            content=content,
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        return Refused(redact(f"cannot call {where}: {type(error).__name__}", token))
    except httpx.TimeoutException:
        return Retry(f"{spec.who} at {where} did not answer within {deadline.shown}")
    except httpx.TransportError as error:
        kind = type(error).__name__
        text = str(error) or "no detail"
        return Retry(redact(f"could not reach {spec.who} at {where}: {kind}: {text}", token))
    answer = interpret(
        spec,
        response.status_code,
        reason=response.reason_phrase,
        headers=response.headers,
        body=response.content,
        now=now,
    )
    if isinstance(answer, Retry):
        return Retry(redact(answer.reason, token), answer.after, answer.asked_by)
    if isinstance(answer, Refused):
        return Refused(redact(answer.message, token))
    return Purged(redact(answer.detail, token))


def describe_wait(seconds: float) -> str:
    """A wait as a person reads it: 1s, 90s, 5m."""
    if seconds < 120:
        return f"{math.ceil(seconds)}s"
    return f"{math.ceil(seconds / 60)}m"

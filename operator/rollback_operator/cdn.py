"""The CDN in front of the frontend (runbook §2.2): what `spec.cdn` says, the exact HTTP
requests that purge it, and how to read each provider's answer.

Three providers, each spoken exactly as its API documents it:

- **cloudflare**: `POST {apiBase}/zones/{zoneId}/purge_cache` with `Authorization: Bearer
  <token>` and one of `{"purge_everything": true}`, `{"files": [...]}` or `{"prefixes": [...]}`
  (at most 100 entries per request, so longer lists go in several requests). The answer is the
  v4 envelope `{"success": ..., "errors": [{"code", "message"}], "messages": [], "result": {"id"}}`.
- **fastly**: `POST {apiBase}/service/{serviceId}/purge_all` (answer `{"status": "ok"}`), or for
  surrogate keys `POST {apiBase}/service/{serviceId}/purge` with `{"surrogate_keys": [...]}`
  (at most 256 per request; answer: each key mapped to its purge id), both with the
  `Fastly-Key` header. Errors are `{"msg", "detail"}`; throttling sets `Fastly-RateLimit-Reset`.
- **webhook**: a JSON POST to any URL, for other CDNs or an internal purge gateway, with an
  `Idempotency-Key` that stays the same for every retry of one run.

This module is pure apart from `send` (one HTTP call): what to send and what an answer means are
plain functions, unit-tested against each provider's documented shapes. The step that drives it,
with retries and the deadline, is `steps/purge_cdn.py`.

The API token never leaves `send`'s arguments: it is not part of a `PurgeRequest`, and every
text built from an answer goes through `redaction.redact`, in case a provider or gateway echoes
it back.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from rollback_operator import throttling
from rollback_operator.model import RollbackSpec, SecretKeyRef, parse_duration
from rollback_operator.redaction import display_url, redact

CLOUDFLARE = "cloudflare"
FASTLY = "fastly"
WEBHOOK = "webhook"

DEFAULT_API_BASE = {
    CLOUDFLARE: "https://api.cloudflare.com/client/v4",
    FASTLY: "https://api.fastly.com",
}
DEFAULT_TIMEOUT = "2m"

# Cloudflare takes at most 100 URLs or prefixes per purge request on every plan; Fastly at most
# 256 surrogate keys per batch purge.
CLOUDFLARE_BATCH = 100
FASTLY_BATCH = 256

USER_AGENT = "rollback-operator (PurgeCDN)"
# The longest a server's error text is quoted in a message: enough to name the problem, short
# enough for a ledger line and an Event.
QUOTE_LIMIT = 300
# Backoff between retries when the provider does not say how long to wait (5xx, network).
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


# --- the spec


@dataclass(frozen=True)
class PurgeTarget:
    """What to purge: everything, or one list (the CRD allows exactly one)."""

    everything: bool = True
    urls: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    surrogate_keys: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> PurgeTarget:
        raw = raw or {}
        urls = tuple(raw.get("urls") or ())
        prefixes = tuple(raw.get("prefixes") or ())
        keys = tuple(raw.get("surrogateKeys") or ())
        listed = bool(urls or prefixes or keys)
        return cls(
            everything=bool(raw.get("everything", not listed)),
            urls=urls,
            prefixes=prefixes,
            surrogate_keys=keys,
        )

    def describe(self) -> str:
        if self.urls:
            return f"{len(self.urls)} URL(s)"
        if self.prefixes:
            return f"{len(self.prefixes)} prefix(es)"
        if self.surrogate_keys:
            return f"{len(self.surrogate_keys)} surrogate key(s)"
        return "everything"

    def as_webhook(self) -> dict[str, Any]:
        if self.urls:
            return {"urls": list(self.urls)}
        if self.prefixes:
            return {"prefixes": list(self.prefixes)}
        if self.surrogate_keys:
            return {"surrogateKeys": list(self.surrogate_keys)}
        return {"everything": True}


@dataclass(frozen=True)
class CdnSpec:
    """`spec.cdn`, typed. The API server has validated it (provider fields, one purge kind)."""

    provider: str
    api_base: str | None = None
    zone_id: str | None = None
    service_id: str | None = None
    url: str | None = None
    credentials: SecretKeyRef | None = None
    purge: PurgeTarget = field(default_factory=PurgeTarget)
    timeout_seconds: float = 120.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> CdnSpec:
        return cls(
            provider=str(raw["provider"]),
            api_base=raw.get("apiBase"),
            zone_id=raw.get("zoneId"),
            service_id=raw.get("serviceId"),
            url=raw.get("url"),
            credentials=SecretKeyRef.optional((raw.get("credentials") or {}).get("secretRef")),
            purge=PurgeTarget.parse(raw.get("purge")),
            timeout_seconds=parse_duration(raw.get("timeout") or DEFAULT_TIMEOUT),
        )

    @classmethod
    def of(cls, spec: RollbackSpec) -> CdnSpec | None:
        """The request's `spec.cdn`, or None when the request has none (PurgeCDN is Skipped)."""
        raw = spec.sections.get("cdn")
        return None if raw is None else cls.parse(raw)

    @property
    def base(self) -> str:
        """The API's base URL, without a trailing slash (the webhook's URL as written)."""
        if self.provider == WEBHOOK:
            return self.url or ""
        return (self.api_base or DEFAULT_API_BASE[self.provider]).rstrip("/")

    @property
    def where(self) -> str:
        """The purged cache, as a person names it."""
        if self.provider == CLOUDFLARE:
            return f"Cloudflare zone {self.zone_id}"
        if self.provider == FASTLY:
            return f"Fastly service {self.service_id}"
        return f"the purge webhook {display_url(self.url or '')}"

    @property
    def who(self) -> str:
        return {CLOUDFLARE: "Cloudflare", FASTLY: "Fastly"}.get(self.provider, "the webhook")


# --- the requests


@dataclass(frozen=True)
class PurgeRequest:
    """One HTTP call of a purge, without its credentials (added only by `send`)."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    what: str  # for messages: "everything", "URLs 101-150 of 150", ...


def idempotency_key(namespace: str, request: str, step_started: str) -> str:
    """The same for every retry of one run's purge, after a restart too (the step's start time
    is in the ledger), and different for the next run: a webhook can drop repeats by it."""
    text = f"{namespace}/{request}/PurgeCDN/{step_started}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def purge_requests(
    spec: CdnSpec, *, namespace: str, request: str, step_started: str
) -> list[PurgeRequest]:
    """The calls that purge what `spec` names, in order. Deterministic: a retry, or a re-run
    after a restart, sends exactly the same requests."""
    json_headers = {"Accept": "application/json", "Content-Type": "application/json"}
    target = spec.purge
    if spec.provider == CLOUDFLARE:
        url = f"{spec.base}/zones/{quote(spec.zone_id or '', safe='')}/purge_cache"
        if target.urls or target.prefixes:
            field_name, items = (
                ("files", target.urls) if target.urls else ("prefixes", target.prefixes)
            )
            noun = "URLs" if target.urls else "prefixes"
            return [
                PurgeRequest("POST", url, json_headers, {field_name: list(chunk)}, what)
                for chunk, what in _batches(items, CLOUDFLARE_BATCH, noun)
            ]
        return [PurgeRequest("POST", url, json_headers, {"purge_everything": True}, "everything")]
    if spec.provider == FASTLY:
        service = f"{spec.base}/service/{quote(spec.service_id or '', safe='')}"
        if target.surrogate_keys:
            return [
                PurgeRequest(
                    "POST", f"{service}/purge", json_headers, {"surrogate_keys": list(c)}, w
                )
                for c, w in _batches(target.surrogate_keys, FASTLY_BATCH, "surrogate keys")
            ]
        # purge_all takes no body, hence no Content-Type.
        accept = {"Accept": "application/json"}
        return [PurgeRequest("POST", f"{service}/purge_all", accept, {}, "everything")]
    key = idempotency_key(namespace, request, step_started)
    body = {
        "event": "rollback.purge",
        "idempotencyKey": key,
        "rollbackRequest": {"namespace": namespace, "name": request},
        "purge": target.as_webhook(),
    }
    headers = {**json_headers, "Idempotency-Key": key}
    return [PurgeRequest("POST", spec.base, headers, body, target.describe())]


def _batches(items: tuple[str, ...], size: int, noun: str) -> list[tuple[tuple[str, ...], str]]:
    if len(items) <= size:
        return [(items, f"{len(items)} {noun}")]
    return [
        (items[i : i + size], f"{noun} {i + 1}-{min(i + size, len(items))} of {len(items)}")
        for i in range(0, len(items), size)
    ]


def auth_headers(provider: str, token: str | None) -> dict[str, str]:
    """The credential header each provider documents (none for a webhook without a Secret)."""
    if not token:
        return {}
    if provider == FASTLY:
        return {"Fastly-Key": token}
    return {"Authorization": f"Bearer {token}"}


def token_problem(token: str | None, ref: SecretKeyRef) -> str | None:
    """Why the Secret's value cannot be used as a token, without ever quoting it.

    A value with a line break or other control character would be refused by the HTTP client
    with an error that quotes the header, so it is caught here first.
    """
    if token is None:
        return f"{ref} does not exist (cdn.credentials.secretRef)"
    if not token:
        return f"{ref} is empty (cdn.credentials.secretRef)"
    if any(not (32 <= ord(c) < 127) for c in token):
        return (
            f"{ref} holds a value that cannot be sent in an HTTP header (a line break, a "
            "control or non-ASCII character inside it)"
        )
    return None


def clean_token(raw: str | None) -> str | None:
    """The Secret's value without surrounding whitespace: `echo token | kubectl create secret
    --from-file` leaves a trailing newline that no API would accept."""
    return None if raw is None else raw.strip()


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
    client: httpx.Client,
    spec: CdnSpec,
    call: PurgeRequest,
    token: str | None,
    *,
    timeout: float,
    now: datetime,
) -> Answer:
    """Makes one purge call and reads its answer. Network trouble is retryable; nothing here
    raises, and no text it returns contains the token."""
    headers = {"User-Agent": USER_AGENT, **call.headers, **auth_headers(spec.provider, token)}
    content = json.dumps(call.body).encode() if call.body else None
    try:
        response = client.request(
            call.method,
            call.url,
            headers=headers,
            content=content,
            timeout=httpx.Timeout(max(0.5, timeout)),
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
        return Refused(
            redact(f"cannot call {display_url(call.url)}: {type(error).__name__}", token)
        )
    except httpx.TransportError as error:
        kind = type(error).__name__
        text = str(error) or "no detail"
        where = display_url(call.url)
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

"""The CDN in front of the frontend (runbook §2.2): what `spec.cdn` says, and the exact HTTP
requests that purge it.

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

This module is pure: what to send is plain functions, unit-tested against each provider's
documented shapes, and deterministic, so that a retry or a re-run after a restart sends the same
requests. Sending them and reading the answers is `cdn_http.py`; the step that drives both,
with retries and the deadline, is `steps/purge_cdn.py`.

The API token is not part of a `PurgeRequest`: only `cdn_http.send` adds it, as the header
`auth_headers` names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from rollback_operator.model import SecretKeyRef, SpecSection, parse_duration
from rollback_operator.redaction import display_url

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
class CdnSpec(SpecSection):
    """`spec.cdn`, typed. The API server has validated it (provider fields, one purge kind)."""

    SPEC_KEY = "cdn"  # absent: PurgeCDN is Skipped

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

"""Keeping credentials out of what people read: the ledger, Events, logs and notifications.

A URL in the spec may carry a credential (user info, a token in the query string, a Slack
webhook's secret path), and a server may echo a token back in an error. Everything the operator
writes about an outbound call goes through one of these first; they are kept together so that
each capability hides secrets the same way, and a new one finds them in one place.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx

REDACTED = "<redacted>"


def display_url(url: str) -> str:
    """A URL as messages show it: without user info, query string or fragment, where a
    credential may hide. Parsed as the HTTP client parses it, so the URL shown is the one called."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<an invalid URL>"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def without_credentials(url: str) -> str:
    """The URL without user and password, should it carry them; otherwise exactly as written."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def url_secrets(url: str) -> list[str]:
    """Every form in which a URL that is itself a secret (a Slack incoming webhook's) may be
    quoted back: whole, without its scheme, and its path and query as the client sends them."""
    secrets = [url, url.split("://", 1)[-1]]
    try:
        tail = httpx.URL(url).raw_path.decode(errors="replace")
    except (httpx.InvalidURL, ValueError):
        tail = ""
    if len(tail) > 1:
        secrets.append(tail)
    return secrets


def redact(text: str, *secrets: str | None, placeholder: str = REDACTED) -> str:
    """`text` with every secret replaced by `placeholder`, the longest first (so that a secret
    containing another is replaced whole)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, placeholder)
    return text

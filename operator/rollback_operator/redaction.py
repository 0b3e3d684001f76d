"""Keeping credentials and production data out of what people read: the ledger, Events, the
post-mortem, logs and notifications.

A URL in the spec may carry a credential (user info, a token in the query string, a Slack
webhook's secret path), a server may echo a token back in an error, a Job's log tail may hold
the Authorization header `curl -v` printed, and psql quotes the rows it could not load. What the
operator writes about an outbound call goes through `display_url`/`redact` first, and every
message, whatever its path, goes through `scrub` on its way out: the ledger scrubs what it
records, `kube.post_event` every Event, `postmortem.render` the document, `webhook_post.post`
every payload, and `install_log_scrubbing` every log record. They are kept together so that each
capability hides secrets the same way, and a new one finds them in one place.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "<redacted>"


def display_url(url: str) -> str:
    """A URL as messages show it: without user info, query string or fragment, where a
    credential may hide. Parsed as the HTTP client parses it, so the URL shown is the one called."""
    import httpx  # noqa: PLC0415 (kube.py, and so kubectl-rollback alone, imports this module)

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
    import httpx  # noqa: PLC0415 (see display_url)

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


# --- scrubbing: what any message quoting the outside world goes through
#
# A Job's log tail, psql's errors, a server's error body: text the operator did not write, about
# to be quoted in the status, an Event, the post-mortem, a notification or the log. `scrub`
# removes what must never be read there: credentials by their shape (headers as `curl -v` prints
# them, URLs with user info, tokens of the well-known kinds, values after key-ish words), the
# exact values of the Secrets the operator read (`remember`), and psql's lines that quote table
# rows. The shapes are narrow on purpose: a sha256, an image digest, a resource's name or uid
# must stay readable, or nobody can act on the message.

# Values shorter than this are not replaced wherever they appear: a Secret holding "admin" or
# "5432" would otherwise blank out every ordinary word that happens to contain it.
MIN_KNOWN = 8
MAX_KNOWN = 1024  # Secret values remembered at most; the oldest is forgotten first

_HEADERS = (
    r"proxy-authorization|authorization|x-api-key|api-key|apikey|x-auth-token|x-auth-key"
    r"|x-access-token|x-api-token|private-token|x-vault-token|x-amz-security-token"
    r"|x-goog-api-key|fastly-key|cf-access-client-secret|x-csrf-token|x-xsrf-token"
)
_SCHEMES = r"bearer|basic|token|digest|negotiate|ntlm|aws4-hmac-sha256|apikey|key|ssws|sso-key"
# A word that says "a secret follows", as a name (`api_key`, `Fastly-Key`, `DB_PASSWORD`).
_KEYISH = (
    r"[A-Za-z0-9_.-]*(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|private[_-]?key|auth[_-]?key|credentials?|signature)"
)
# psql's message labels: where the text of one psql line ends when a log tail was joined into
# one line (the database scripts do so for their termination message).
_PSQL_LABEL = (
    r"(?:psql:\S+:\d+:\s*)?(?:ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|LOG|HINT|DETAIL|CONTEXT"
    r"|STATEMENT|QUERY|WHERE|LINE \d+):"
)
_TO_NEXT_LABEL = rf"[^\n]*?(?=\s{_PSQL_LABEL}|\n|$)"

_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # PEM private keys, whole or cut off by a log tail at either end.
    (
        re.compile(
            r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)",
            re.S,
        ),
        rf"-----BEGIN \1PRIVATE KEY----- {REDACTED} -----END \1PRIVATE KEY-----",
    ),
    # Cut at its start: the base64 lines left before its END line.
    (
        re.compile(r"(?:[A-Za-z0-9+/=]{16,}[ \t]*\r?\n?)+-----END ([A-Z0-9 ]*)PRIVATE KEY-----"),
        rf"{REDACTED} -----END \1PRIVATE KEY-----",
    ),
    # psql's lines that quote rows or statements: dropped whole.
    (re.compile(rf"[ \t]*(?:psql:\S+:\d+:\s*)?\b(?:DETAIL|STATEMENT|QUERY):{_TO_NEXT_LABEL}"), ""),
    (re.compile(rf"[ \t]*(?:psql:\S+:\d+:\s*)?\bLINE \d+:{_TO_NEXT_LABEL}"), ""),
    (re.compile(r"(?m)^\s*\^\s*$\n?"), ""),
    # CONTEXT: COPY users, line 3: "<the row>" (or `, column email: "<value>"`): the place stays.
    (
        re.compile(
            r'(\bCONTEXT:\s*COPY [^\n:]*?line \d+(?:, column [^\n:]+)?):\s*"?[^\n]*?'
            rf"(?=\s{_PSQL_LABEL}|\n|$)"
        ),
        r"\1",
    ),
    (re.compile(r"\b(?:Key \([^\n)]*\)=\(|Failing row contains \()[^\n]*?\)(?= |\.|\n|$)"), ""),
    # Errors that quote the value they could not take.
    (
        re.compile(
            r"((?:invalid input (?:syntax|value) for (?:type|enum) [^\n:]+|malformed [a-z ]+"
            r'literal|invalid byte sequence for encoding "[^"\n]*"|for key \([^\n)]*\)))'
            r':\s*(?:"[^"\n]*"|0x[0-9a-f ]+)'
        ),
        rf'\1: "{REDACTED}"',
    ),
    (re.compile(r'\bvalue "[^"\n]*" is out of range'), f'value "{REDACTED}" is out of range'),
    # Headers, as `curl -v` (`> Authorization: Bearer ...`), a JSON dump or a config prints them.
    (
        re.compile(
            rf"(?i)(\b(?:{_HEADERS})[\"']?\s*[:=]\s*[\"']?)(?:({_SCHEMES})\s+[^\s,;\"']+"
            r"(?:,\s*[A-Za-z]+=[^\s,;\"']+)*|(?=[^\s,;\"']*\d)[^\s,;\"']{8,}|[^\s,;\"']{16,})"
        ),
        # Without a scheme, only a value that looks like a credential: "authorization: required"
        # is a sentence.
        lambda m: f"{m[1]}{m[2] + ' ' if m[2] else ''}{REDACTED}",
    ),
    (
        re.compile(r"(?i)(\b(?:set-cookie|cookie)[\"']?\s*:\s*)[^\s;\"']+(?:;\s*[^\s;\"']+)*"),
        rf"\1{REDACTED}",
    ),
    # URLs with user info (https://user:pass@, postgres://app:pw@db/app, a token as the user).
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"'<>]+@"), rf"\1{REDACTED}@"),
    # Query parameters that carry a credential.
    (
        re.compile(
            r"(?i)([?&;](?:access_token|refresh_token|id_token|token|auth|sig|signature|password"
            r"|passwd|pwd|secret|client_secret|api_key|apikey|key|code|x-amz-signature"
            r"|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)"
            r"[^&\s#\"'<>]+"
        ),
        rf"\1{REDACTED}",
    ),
    # Slack's incoming webhooks: the path is the credential.
    (
        re.compile(r"(?i)(hooks\.slack\.com/(?:services|workflows|triggers))/[A-Za-z0-9/_-]+"),
        rf"\1/{REDACTED}",
    ),
    # Assignments: PGPASSWORD=..., password=..., AWS_SECRET_ACCESS_KEY=..., "token": "...".
    (
        re.compile(rf"(?i)(\b{_KEYISH}s?\s*=\s*)(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s&,;\"'<>]+)"),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(rf"(?i)([\"']{_KEYISH}s?[\"']\s*:\s*)(?:\"[^\"\n]*\"|'[^'\n]*')"),
        rf'\1"{REDACTED}"',
    ),
    # Tokens by their well-known shapes.
    (re.compile(r"\b(Bearer|bearer|BEARER)\s+[A-Za-z0-9._~+/-]{8,}=*"), rf"\1 {REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    (
        re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b"),
        REDACTED,
    ),
    (
        re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"),
        REDACTED,
    ),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), REDACTED),
    (
        re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}|\bnpm_[A-Za-z0-9]{36}\b|\bAIza[0-9A-Za-z_-]{35}\b"),
        REDACTED,
    ),
    (re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b"), REDACTED),
    # A long random-looking value right after a key-ish word (`Fastly-Key: 0f3a...`, `api key
    # AbC...`): 32+ hex digits, or 24+ token characters mixing upper case, lower case and digits.
    # Kubernetes names (lower case), uids (dashed) and digests (after "sha256") never match.
    (
        re.compile(
            rf"(?i)(\b(?:{_KEYISH}s?|keys?)\b[\"']?\s*[:=>]?\s*[\"']?)"
            r"(?-i:(?=[A-Za-z0-9+/_=-]*[A-Z])(?=[A-Za-z0-9+/_=-]*[a-z])(?=[A-Za-z0-9+/_=-]*\d)"
            r"[A-Za-z0-9+/_=-]{24,}|[0-9a-fA-F]{32,})\b"
        ),
        rf"\1{REDACTED}",
    ),
]


class _Known:
    """The Secret values this process read, in memory only (never in the status): the exact
    strings `scrub` replaces wherever they appear, whatever their shape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, None] = {}  # insertion-ordered, for forgetting the oldest
        self.generation = 0  # changes with the values: what `scrub` remembers is keyed by it

    def add(self, value: str) -> None:
        with self._lock:
            if value not in self._values:
                self.generation += 1
            self._values.pop(value, None)
            self._values[value] = None
            while len(self._values) > MAX_KNOWN:
                self._values.pop(next(iter(self._values)))

    def values(self) -> list[str]:
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.generation += 1


KNOWN = _Known()
SCRUB_CACHE_SIZE = 4096  # texts remembered scrubbed: a few hundred per run in flight


def remember(value: str | None) -> None:
    """Makes `scrub` replace a Secret's value wherever it appears from now on: the CDN token,
    the database URL, a webhook's URL, a check's credential. Called where the operator decodes
    a Secret (kube.secret_value). A URL is also hidden without its scheme, and its password
    alone (not its path: a database's name is no secret, and messages must name it)."""
    for text in {value or "", (value or "").strip()}:
        forms = [text]
        if "://" in text:
            forms.append(text.split("://", 1)[1])
            try:
                password = urlsplit(text).password
            except ValueError:  # not a URL after all (a port that is no number, say)
                password = None
            if password:
                forms.append(password)
        for form in forms:
            if len(form) >= MIN_KNOWN:
                KNOWN.add(form)


def scrub(text: str) -> str:
    """`text` as it may be quoted anywhere people read it: the Secrets the operator read and
    every credential-shaped part replaced by `REDACTED`, psql's lines quoting rows dropped.

    Remembered per text while the Secrets known stay the same: the ledger scrubs the whole
    status at every transition, and most of it (the saved originals, the earlier steps'
    messages) is the same text again."""
    if not text:
        return text
    return _scrubbed_text(text, KNOWN.generation)


@functools.lru_cache(maxsize=SCRUB_CACHE_SIZE)
def _scrubbed_text(text: str, generation: int) -> str:
    """`scrub`'s work; `generation` only keys the cache (a Secret learned since a text was
    scrubbed makes a new key; one learned while it is scrubbed can only hide more)."""
    text = redact(text, *KNOWN.values())
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def scrub_tree(value: Any) -> Any:
    """Every string in a JSON-like value (a notification's payload, a status section) scrubbed;
    everything else as it was."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: scrub_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_tree(item) for item in value]
    return value


def install_log_scrubbing() -> None:
    """Every log record of the process, whatever its logger and handler, scrubbed as it is
    made: its message (arguments merged in) and its traceback."""
    make = logging.getLogRecordFactory()
    if getattr(make, "scrubs", False):
        return

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        scrub_record(record)
        return record

    scrubbed.scrubs = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(scrubbed)


def scrub_record(record: logging.LogRecord) -> None:
    """A log record scrubbed in place (see `install_log_scrubbing`)."""
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a malformed format: logging reports it, on the raw parts
        message = f"{record.msg} {record.args}"
    record.msg, record.args = scrub(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)

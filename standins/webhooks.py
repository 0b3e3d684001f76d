"""Local webhook receivers for the notification tests and the demo: a Slack-compatible incoming
webhook and a generic JSON receiver, on loopback, each keeping every request it got.

The Slack receiver checks a request the way Slack's incoming-webhook documentation describes
it, and answers the same way: POST only (405 otherwise), to a hook path it knows
(`/services/T…/B…/<token>`, else 404 `no_service`), `Content-Type: application/json` with a
JSON object (else 400 `invalid_payload`), a `text` or `blocks` (else 400 `no_text`), and
Block Kit blocks within Slack's limits (else 400 `invalid_blocks`); success is 200 with the
plain-text body `ok`. Either receiver can be told to fail first: any status and body, such as
500 `rollup_error` or 429 with a Retry-After header, as Slack's rate limiter answers.
`refused_url()` is a URL where nothing listens: a dead webhook.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standins.local import free_port

SLACK_BLOCK_TYPES = {
    "actions", "context", "divider", "file", "header", "image", "input", "markdown",
    "rich_text", "section", "video",
}  # fmt: skip
TEXT_TYPES = {"plain_text", "mrkdwn"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the JSON, or the raw text when it was not JSON
    status: int  # what the receiver answered


class Hook:
    """One receiver path: what it got, and how it answers."""

    def __init__(self, server: FakeWebhooks, path: str, kind: str) -> None:
        self.server, self.path, self.kind = server, path, kind
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self._always: Answer | None = None

    @property
    def url(self) -> str:
        return f"{self.server.base}{self.path}"

    def fail_first(self, *answers: Answer) -> None:
        """Answer these, in order, before answering normally again."""
        self._script.extend(answers)

    def always(self, answer: Answer) -> None:
        self._always = answer

    @property
    def messages(self) -> list[Any]:
        """The bodies of the requests that were accepted, in order of arrival."""
        with self.server.lock:
            return [r.body for r in self.requests if 200 <= r.status < 300]

    def next_scripted(self) -> Answer | None:
        if self._script:
            return self._script.popleft()
        return self._always


class FakeWebhooks:
    """An HTTP server on 127.0.0.1 serving any number of hooks, in a thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hooks: dict[str, Hook] = {}
        self.rejected: list[Received] = []  # requests a receiver refused for their form
        handler = _handler(self)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeWebhooks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def slack_hook(self) -> Hook:
        """A Slack incoming webhook, its URL shaped like Slack's (the token part is a secret)."""
        path = (
            f"/services/T{secrets.token_hex(4).upper()}/B{secrets.token_hex(4).upper()}/"
            f"{secrets.token_urlsafe(18)}"
        )
        return self._add(Hook(self, path, "slack"))

    def json_hook(self, name: str) -> Hook:
        return self._add(Hook(self, f"/hooks/{name}", "json"))

    def _add(self, hook: Hook) -> Hook:
        with self.lock:
            self.hooks[hook.path] = hook
        return hook


def refused_url() -> str:
    """An http URL on loopback where nothing listens: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/hooks/dead"


def slack_problem(body: Any) -> str | None:
    """What Slack would refuse in this message (its error string), or None."""
    if not isinstance(body, dict):
        return "invalid_payload"
    text, blocks = body.get("text"), body.get("blocks")
    if text is not None and not isinstance(text, str):
        return "invalid_payload"
    if not text and not blocks:
        return "no_text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not _block_ok(block):
            return "invalid_blocks"
    return None


def _text_ok(obj: Any, limit: int, types: set[str] = TEXT_TYPES) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("type") in types
        and isinstance(obj.get("text"), str)
        and 0 < len(obj["text"]) <= limit
    )


def _block_ok(block: Any) -> bool:
    if not isinstance(block, dict) or block.get("type") not in SLACK_BLOCK_TYPES:
        return False
    kind = block["type"]
    if kind == "header":
        return _text_ok(block.get("text"), 150, {"plain_text"})
    if kind == "section":
        text, fields = block.get("text"), block.get("fields")
        if text is None and fields is None:
            return False
        if text is not None and not _text_ok(text, 3000):
            return False
        return fields is None or (
            isinstance(fields, list)
            and 0 < len(fields) <= 10
            and all(_text_ok(f, 2000) for f in fields)
        )
    if kind == "context":
        elements = block.get("elements")
        return (
            isinstance(elements, list)
            and 0 < len(elements) <= 10
            and all(_text_ok(e, 3000) for e in elements)
        )
    return True


def _handler(server: FakeWebhooks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the tests read `requests`

        def do_GET(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with server.lock:
                hook = server.hooks.get(self.path.split("?", 1)[0])
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            answer, form_error = self._judge(hook, body)
            record = Received(
                at=time.monotonic(),
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                status=answer.status,
            )
            with server.lock:
                if hook is not None:
                    hook.requests.append(record)
                if form_error:
                    server.rejected.append(record)
            self._answer(answer)

        def _judge(self, hook: Hook | None, body: Any) -> tuple[Answer, bool]:
            """The answer, and whether the request itself was malformed."""
            slack = hook is None or hook.kind == "slack"
            if hook is None:
                return Answer(404, "no_service" if slack else "not found"), True
            if self.command != "POST":
                return Answer(405, "invalid_method"), True
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if content_type.lower() != "application/json" or isinstance(body, str):
                return self._refuse(slack, "invalid_payload"), True
            if slack:
                problem = slack_problem(body)
                if problem:
                    return Answer(400, problem), True
            elif not isinstance(body, dict):
                return self._refuse(slack, "invalid_payload"), True
            scripted = hook.next_scripted()
            if scripted is not None:
                return scripted, False
            if slack:
                return Answer(200, "ok", {"Content-Type": "text/html"}), False
            return Answer(200, '{"ok":true}', {"Content-Type": "application/json"}), False

        def _refuse(self, slack: bool, error: str) -> Answer:
            if slack:
                return Answer(400, error)
            return Answer(400, json.dumps({"error": error}), {"Content-Type": "application/json"})

        def _answer(self, answer: Answer) -> None:
            data = answer.body.encode()
            self.send_response(answer.status)
            headers = {"Content-Type": "text/plain", **answer.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler

"""Nothing secret in what people read: known secret shapes, fed through every path that writes a
message (the status through the ledger, Events, the post-mortem, notification payloads, log
records, a Job's quoted output), never come out; ordinary messages come out as they went in."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from kubernetes import client

from rollback_operator import redaction
from rollback_operator.announce import Announcer, StepEnded
from rollback_operator.database.jobs import describe_backup
from rollback_operator.engine import stepped
from rollback_operator.kube import Kube
from rollback_operator.ledger import StatusLedger
from rollback_operator.model import RollbackSpec, StepName
from rollback_operator.notify import Event, Notification, NotifySpec, deliver
from rollback_operator.outcomes import Done, Fail
from rollback_operator.postmortem import render
from rollback_operator.redaction import REDACTED, install_log_scrubbing, scrub, scrub_tree
from rollback_operator.status import Status
from rollback_operator.steps.base import StepContext
from rollback_operator.steps.jobs import JOB_NAME_LABEL, JobState, read_result

NS, REQUEST, UID = "lawyershub", "golive-2026-01-10", "0b6f7a52-6a0e-4c5e-9a43-51f1f7b0c001"
T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)
SPEC = RollbackSpec.parse(
    {
        "reason": "error rate over 5 %",
        "trigger": "Manual",
        "traffic": {"ingresses": ["site"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
)
META = {"name": REQUEST, "namespace": NS, "uid": UID, "creationTimestamp": "2026-01-10T03:00:00Z"}

# A Secret's value with no recognisable shape: only knowing the exact value hides it.
SHAPELESS = "correct-horse-battery-staple"
SHA256 = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@dataclass(frozen=True)
class Case:
    """Text quoting a secret, the parts of it that must never come out, and a part of the
    message that must still be there for the reader."""

    id: str
    text: str
    secrets: tuple[str, ...]
    keeps: str


CORPUS = [
    Case(
        "curl -v Authorization header",
        "> GET /healthz HTTP/1.1\n> Host: backend:8080\n> Authorization: Bearer s3cr3tT0kenV4lue"
        "\n>\n< HTTP/1.1 503 Service Unavailable\ncurl: (22) The requested URL returned error: 503",
        ("s3cr3tT0kenV4lue",),
        "503 Service Unavailable",
    ),
    Case(
        "Proxy-Authorization Basic",
        "> Proxy-Authorization: Basic ZGVwbG95OnMzY3IzdA==\n< HTTP/1.1 407",
        ("ZGVwbG95OnMzY3IzdA==",),
        "HTTP/1.1 407",
    ),
    Case(
        "Cookie and Set-Cookie",
        "> Cookie: session=9f8e7d6c5b4a; csrftoken=Zx81Qw\n< Set-Cookie: sid=77aa88bb99cc; Path=/",
        ("9f8e7d6c5b4a", "Zx81Qw", "77aa88bb99cc"),
        "Cookie",
    ),
    Case(
        "X-Api-Key header",
        "> X-Api-Key: ak_live_29d8c7b6a5\n< HTTP/2 401",
        ("ak_live_29d8c7b6a5",),
        "HTTP/2 401",
    ),
    Case(
        "Fastly-Key header, hex",
        "purge failed: Fastly-Key: 0f3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c answered 403",
        ("0f3a9b8c7d6e5f4a3b2c1d0e9f8a7b6c",),
        "answered 403",
    ),
    Case(
        "URL with user and password",
        "fatal: unable to access 'https://deploy:Pa55w0rd!x@git.example.com/app.git/': 403",
        ("Pa55w0rd!x", "deploy:Pa55w0rd!x"),
        "git.example.com/app.git",
    ),
    Case(
        "postgres URL with password",
        "psql: error: connection to "
        '"postgres://app:db-Pa55-word@db.lawyershub.svc:5432/app" failed',
        ("db-Pa55-word",),
        "db.lawyershub.svc:5432/app",
    ),
    Case(
        "query token and access_token",
        "GET https://api.example.com/v1/purge?token=abcd1234secret&x=1&access_token=zz99yy88"
        " -> 500",
        ("abcd1234secret", "zz99yy88"),
        "api.example.com/v1/purge",
    ),
    Case(
        "query sig (signed URL)",
        "download https://acct.blob.core.windows.net/b/f.sql?sv=2021&sig=AbC%2Bdef123%3D failed",
        ("AbC%2Bdef123%3D",),
        "acct.blob.core.windows.net",
    ),
    Case(
        "query password",
        "GET /login?user=admin&password=hunter2secret 302",
        ("hunter2secret",),
        "302",
    ),
    Case(
        "PGPASSWORD assignment",
        "+ PGPASSWORD=hunter2secret psql -h db -U app",
        ("hunter2secret",),
        "psql -h db",
    ),
    Case(
        "libpq password= keyword",
        "could not connect with 'host=db user=app password=hunter2secret dbname=app'",
        ("hunter2secret",),
        "host=db",
    ),
    Case(
        "JSON password with a space",
        'config: {"user": "app", "password": "hunter2 secret words"}',
        ("hunter2 secret words",),
        '"user": "app"',
    ),
    Case(
        "bearer token in prose",
        "the CDN refused bearer AbCdEf0123456789xyz: 401",
        ("AbCdEf0123456789xyz",),
        ": 401",
    ),
    Case("JWT", f"id_token was {JWT} (expired)", (JWT, JWT.split(".")[2]), "(expired)"),
    Case(
        "AWS access key id",
        "InvalidAccessKeyId: AKIAIOSFODNN7EXAMPLE does not exist",
        ("AKIAIOSFODNN7EXAMPLE",),
        "does not exist",
    ),
    Case(
        "AWS secret access key",
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY aws s3 cp",
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",),
        "aws s3 cp",
    ),
    Case(
        "GitHub classic token",
        "remote: Invalid token ghp_16C7e42F292c6912E7710c838347Ae178B4a used",
        ("ghp_16C7e42F292c6912E7710c838347Ae178B4a",),
        "remote: Invalid",
    ),
    Case(
        "GitHub fine-grained token",
        "GITHUB=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF done",
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",),
        "done",
    ),
    Case(
        "Slack bot token",
        "slack said invalid_auth for xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        ("xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "AbCdEfGhIjKl"),
        "invalid_auth",
    ),
    Case(
        "Slack incoming webhook URL",
        "POST https://hooks.slack.com/services/T0AAA1111/B0BBB2222/XyZ123abcDEF456ghiJKL789 404",
        ("XyZ123abcDEF456ghiJKL789", "T0AAA1111/B0BBB2222"),
        "hooks.slack.com",
    ),
    Case(
        "Cloudflare-like token after a key-ish word",
        "cloudflare api_token Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z0AbC rejected",
        ("Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z0AbC",),
        "rejected",
    ),
    Case(
        "long hex after a key-ish word",
        "using api key 0123456789abcdef0123456789abcdef01234567 for purge",
        ("0123456789abcdef0123456789abcdef01234567",),
        "for purge",
    ),
    Case(
        "PEM private key",
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7Vb0b3RzZWNyZXQ\nQm9va3NlY3JldA==\n"
        "-----END RSA PRIVATE KEY-----\nexit 1",
        ("MIIEowIBAAKCAQEA7Vb0b3RzZWNyZXQ", "Qm9va3NlY3JldA=="),
        "exit 1",
    ),
    Case(
        "PEM private key cut by the log tail",
        "Qm9va3NlY3JldA==\nMIIEowIBAAKCAQEA7Vb0b3RzZWNyZXQ\n-----END PRIVATE KEY-----\nexit 1",
        ("MIIEowIBAAKCAQEA7Vb0b3RzZWNyZXQ", "Qm9va3NlY3JldA=="),
        "exit 1",
    ),
    Case(
        "psql DETAIL Key (email)=(...), one line",
        "restore failed: psql:/tmp/rollback/restore.sql:12: ERROR: duplicate key value violates "
        'unique constraint "users_email_key" DETAIL: Key (email)=(alice@example.com) already '
        "exists. CONTEXT: COPY users, line 2",
        ("alice@example.com",),
        'unique constraint "users_email_key"',
    ),
    Case(
        "psql DETAIL Failing row contains, multi-line",
        'psql:/tmp/restore.sql:9: ERROR:  null value in column "name" of relation "users" violates'
        " not-null constraint\nDETAIL:  Failing row contains (7, bob@example.com, null, 555-0100)."
        "\n",
        ("bob@example.com", "555-0100"),
        'of relation "users"',
    ),
    Case(
        "psql COPY CONTEXT quoting a row",
        "ERROR: extra data after last expected column CONTEXT: COPY users, line 4: "
        '"4\tdave@example.com\tDave Secretname"',
        ("dave@example.com", "Dave Secretname"),
        "COPY users, line 4",
    ),
    Case(
        "psql COPY CONTEXT quoting a column, and the ERROR quoting the value",
        'ERROR:  invalid input syntax for type integer: "carol@example.com"\nCONTEXT:  COPY users,'
        ' line 3, column id: "carol@example.com"',
        ("carol@example.com",),
        "COPY users, line 3, column id",
    ),
    Case(
        "psql LINE quoting a statement",
        'ERROR:  syntax error at or near "\'"\nLINE 1: INSERT INTO users VALUES '
        "('frank@example.com', 'ssn 078-05-1120')\n                ^\n",
        ("frank@example.com", "078-05-1120"),
        "syntax error",
    ),
    Case(
        "a Secret's value of no known shape",
        f"echo $CHECK_PASSPHRASE printed {SHAPELESS} then exit 1",
        (SHAPELESS,),
        "then exit 1",
    ),
]

# Messages the operator writes every day: they must come out exactly as they went in.
ORDINARY = [
    "restored "
    + describe_backup(
        {
            "file": "pre-golive-snapshot-20260109.sql",
            "sizeBytes": 1048576,
            "sha256": SHA256,
            "claimName": "db-backups",
        }
    ),
    f"backend: ghcr.io/lawyershub/backend@sha256:{SHA256} is Available (2/2)",
    f"image registry.example.com:5000/team/app:stable-last-known (sha256:{SHA256})",
    "Job golive-2026-01-10-restore-3f2a1 failed: BackoffLimitExceeded",
    f"Deployment backend (uid {UID}) rolled back to stable-last-known",
    "database connection Secret 'db-credentials' has no key 'url'",
    "verification check 'smoke': Secret 'smoke-api-token' has no key 'token' (add it)",
    "Secret cdn-token key api-token is empty (cdn.credentials.secretRef)",
    'psql:/tmp/rollback/down.sql:3: ERROR: relation "users" does not exist',
    "http GET https://backend.lawyershub.svc:8080/healthz answered 503, wanted 200",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 is the last known good",
    "RestoreDatabase awaits approval by a DBA (group dba): kubectl rollback approve "
    "golive-2026-01-10 RestoreDatabase -n lawyershub",
    'rule errorRate: sum(rate(http_requests_total{code=~"5.."}[2m])) > 0.05 for 2m',
    "the CDN token is sent as a bearer token to https://api.fastly.com/service/SU1Z0isxPaozGVKXdv0eY",
    "notified webhook slack-incidents of Succeeded",
    "authorization: required by the admin setting",
]


@pytest.fixture(autouse=True)
def _known_secret() -> Iterator[None]:
    """The shapeless Secret is known the way the operator learns it: read through the API."""
    redaction.KNOWN.clear()
    RecordingKube().secret_value(NS, "smoke", "passphrase")
    yield
    redaction.KNOWN.clear()


class RecordingKube(Kube):
    """The real Kube (its Event and Secret code), with the API server replaced by a record of
    the requests and one Secret."""

    def __init__(self) -> None:
        super().__init__(client.ApiClient(client.Configuration()))
        self.sent: list[tuple[str, str, Any]] = []
        self.pod_list: list[dict[str, Any]] = []
        self.secrets = {("smoke", "passphrase"): SHAPELESS}

    def get(self, path: str) -> dict[str, Any] | None:
        name = path.rsplit("/", 1)[-1]
        data = {
            key: base64.b64encode(value.encode()).decode()
            for (secret, key), value in self.secrets.items()
            if secret == name
        }
        return {"metadata": {"name": name}, "data": data} if data else None

    def request(self, method: str, path: str, body: Any = None, *_: Any, **__: Any) -> Any:
        self.sent.append((method, path, body))
        return {}

    def pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        return self.pod_list


def _clean(out: str, case: Case) -> None:
    for secret in case.secrets:
        assert secret not in out, f"{case.id}: {secret!r} survived in {out!r}"
    assert case.keeps in out, f"{case.id}: over-scrubbed, {case.keeps!r} is gone from {out!r}"


# --- the scrubber itself


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_the_scrubber_removes_every_known_shape_and_keeps_the_message(case: Case) -> None:
    _clean(scrub(case.text), case)


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_messages_are_left_exactly_as_they_are(text: str) -> None:
    assert scrub(text) == text
    assert scrub_tree({"message": text, "n": [text, 3]}) == {"message": text, "n": [text, 3]}


def test_scrubbing_twice_changes_nothing_more() -> None:
    once = scrub("\n".join(c.text for c in CORPUS))
    assert scrub(once) == once


def test_a_short_or_empty_secret_value_does_not_blank_out_ordinary_words() -> None:
    redaction.remember("app")
    redaction.remember("")
    redaction.remember(None)
    assert scrub("database app restored") == "database app restored"


def test_a_database_url_is_known_whole_without_its_scheme_and_by_its_password() -> None:
    redaction.remember("postgresql://app:Vq9xLr2mZt@db:5432/app\n")
    out = scrub("DATABASE_URL is app:Vq9xLr2mZt@db:5432/app; password Vq9xLr2mZt; db /app")
    assert "Vq9xLr2mZt" not in out
    assert "db /app" in out  # its path is no secret


# --- every path that writes a message


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_the_status_holds_no_secret(case: Case) -> None:
    patches: list[dict[str, Any]] = []

    def write(patch: dict[str, Any], version: str | None) -> str:
        patches.append(patch)
        return "2"

    ledger = StatusLedger(Status(), write, lambda: {"metadata": META, "spec": {}})
    ledger.update(stepped, StepName.VERIFY, Fail(case.text), SPEC, T0)
    ledger.put_section("checks", [{"name": "smoke", "message": case.text}], durable=True)
    ledger.flush()
    for written in (json.dumps(patches), json.dumps(ledger.request())):
        for secret in case.secrets:
            assert secret not in written, f"{case.id}: {secret!r} reached the status"
    assert case.keeps in ledger.status.record(StepName.VERIFY).message
    assert case.keeps in ledger.section("checks")[0]["message"]


def test_the_ledger_never_changes_the_saved_originals() -> None:
    """What is put back must be exactly what was there, credential-shaped or not."""
    original = {"annotations": {"auth-url": "https://user:pw12345678@auth.example.com/?token=x1"}}
    ledger = StatusLedger(Status())
    ledger.save("ingresses", "site", original)
    ledger.update(stepped, StepName.VERIFY, Done("ok"), SPEC, T0)
    assert ledger.original("ingresses", "site") == original


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_events_hold_no_secret(case: Case) -> None:
    kube = RecordingKube()
    kube.post_event(META, "Warning", "StepFailed", case.text)
    ((method, path, event),) = kube.sent
    assert (method, path) == ("POST", f"/api/v1/namespaces/{NS}/events")
    _clean(event["message"], case)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_the_announcer_posts_and_logs_no_secret(
    case: Case, caplog: pytest.LogCaptureFixture, scrubbed_logs: None
) -> None:
    """A step's outcome goes to an Event and a log line as the step said it, not through the
    ledger: both must be scrubbed on their own."""
    kube = RecordingKube()
    logger = logging.getLogger("rollback_operator.runner.test")
    announcer = Announcer(kube, META, SPEC, StatusLedger(Status()), logger)

    async def announce() -> None:
        outcome = Done(case.text, warnings=(case.text,))
        await announcer.announce(StepEnded(StepName.VERIFY, outcome), Status())
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))

    with caplog.at_level(logging.INFO, logger="rollback_operator"):
        asyncio.run(announce())
    events = [body["message"] for _, _, body in kube.sent]
    assert len(events) == 2  # StepSucceeded, and the warning
    for text in [*events, *(r.getMessage() for r in caplog.records)]:
        _clean(text, case)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_the_postmortem_holds_no_secret(case: Case) -> None:
    request = {
        "metadata": META,
        "spec": {"reason": case.text, "trigger": "Manual"},
        "status": {
            "steps": [{"name": "Verify", "state": "Failed", "message": case.text}],
            "checks": [{"name": "smoke", "type": "job", "passed": False, "message": case.text}],
        },
    }
    document = render(request, T0)
    for secret in case.secrets:
        assert secret not in document, f"{case.id}: {secret!r} reached the post-mortem"
    assert document.startswith(f"# Post-mortem: rollback {REQUEST}\n\n- **Namespace:** {NS}")
    assert "## Timeline" in document and "### Verify" in document
    assert case.keeps in document


@pytest.mark.parametrize("format_", ["json", "slack"])
@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_notifications_hold_no_secret(case: Case, format_: str) -> None:
    bodies: list[str] = []

    def receive(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content.decode())
        return httpx.Response(200)

    spec = NotifySpec.parse([{"name": "team", "url": "https://hooks.example/x", "format": format_}])
    note = Notification(
        event=Event.FAILED,
        namespace=NS,
        name=REQUEST,
        uid=UID,
        phase="Failed",
        step="Verify",
        message=case.text,
        trigger="Manual",
        reason=case.text,
        dry_run=False,
        time="2026-01-10T03:00:00Z",
    )
    done = deliver(note, spec, None, lambda w: w.url, transport=httpx.MockTransport(receive))
    assert done.sent_to == ["team"]
    (body,) = bodies
    text = json.loads(body)  # the receiver's view: strings unescaped
    flat = json.dumps(text, ensure_ascii=False)
    for secret in case.secrets:
        assert secret not in flat, f"{case.id}: {secret!r} reached the {format_} notification"
    if format_ == "json":  # Slack's escapes &, < and >: the JSON body shows the text as is
        assert case.keeps in text["message"] and case.keeps in text["reason"]


def test_a_webhook_error_quoting_a_secret_is_scrubbed() -> None:
    def receive(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="bad request from Authorization: Bearer s3cr3tT0kenV4lue")

    spec = NotifySpec.parse([{"name": "team", "url": "https://hooks.example/x"}])
    note = Notification(
        Event.FAILED, NS, REQUEST, UID, "Failed", None, "m", "Manual", "r", False, "t"
    )
    done = deliver(note, spec, None, lambda w: w.url, transport=httpx.MockTransport(receive))
    assert "s3cr3tT0kenV4lue" not in json.dumps([done.notifications, done.failures])
    assert "HTTP 400" in done.failures[0]


@pytest.fixture
def scrubbed_logs() -> Iterator[None]:
    """The operator's log scrubbing, as __main__ installs it, undone after the test."""
    before = logging.getLogRecordFactory()
    install_log_scrubbing()
    yield
    logging.setLogRecordFactory(before)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_log_records_hold_no_secret(
    case: Case, caplog: pytest.LogCaptureFixture, scrubbed_logs: None
) -> None:
    logger = logging.getLogger("kopf.objects")  # anyone's logger, not only the operator's
    with caplog.at_level(logging.DEBUG):
        logger.warning("Verify failed: %s", case.text)
        try:
            raise RuntimeError(case.text)
        except RuntimeError:
            logger.exception("handler crashed")
    formatted = caplog.text  # as a handler writes them, tracebacks included
    for secret in case.secrets:
        assert secret not in formatted, f"{case.id}: {secret!r} reached the log"
    assert case.keeps in caplog.records[0].getMessage()


# --- Job output, where most of it comes from


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_a_jobs_output_is_quoted_scrubbed(case: Case) -> None:
    redaction.KNOWN.clear()  # the Job's Secret is learnt from the Job itself
    kube = RecordingKube()
    name = "golive-2026-01-10-check-smoke-3f2a1"
    kube.pod_list = [
        {
            "metadata": {"name": f"{name}-x", "labels": {JOB_NAME_LABEL: name}},
            "spec": {
                "containers": [
                    {
                        "name": "check-smoke",
                        "env": [
                            {
                                "name": "CHECK_PASSPHRASE",
                                "valueFrom": {
                                    "secretKeyRef": {"name": "smoke", "key": "passphrase"}
                                },
                            }
                        ],
                    }
                ]
            },
            "status": {
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 1, "message": case.text}}}
                ]
            },
        }
    ]
    ctx = StepContext(
        kube=kube,
        namespace=NS,
        request=REQUEST,
        spec=SPEC,
        ledger=StatusLedger(Status()),
        step_started_at=T0,
        now=lambda: T0,
        request_uid=UID,
    )
    job = {
        "metadata": {"name": name},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    result = read_result(ctx, job)
    assert result.state == JobState.FAILED
    _clean(result.message, case)


def test_the_placeholder_says_what_happened() -> None:
    assert (
        scrub("> Authorization: Bearer s3cr3tT0kenV4lue") == f"> Authorization: Bearer {REDACTED}"
    )


def test_a_text_scrubbed_before_a_secret_was_read_is_scrubbed_again_after() -> None:
    """`scrub` remembers what it scrubbed, but not across a Secret learnt since."""
    text = "curl -H 'X-Purge: q8Zr2LmW0pTb7Kcv' https://cdn.example/purge"
    assert scrub(text) == text  # nothing credential-shaped, no Secret known yet
    redaction.remember("q8Zr2LmW0pTb7Kcv")
    assert "q8Zr2LmW0pTb7Kcv" not in scrub(text)
    redaction.KNOWN.clear()
    assert scrub(text) == text

"""Nothing secret in the ledger, end to end: a smoke-test Job given a token and a passphrase from
a Secret fails the way real ones do, printing the Authorization header `curl -v` shows and the
row psql quotes in a DETAIL line. The operator process quotes what the Job said in the status,
Events, the post-mortem, its log and the notifications: none of them holds the token, the
passphrase or the row, and each still says what went wrong."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from standins.postgres import Database
from standins.webhooks import FakeWebhooks
from tests.e2e.lawyershub import Operator, events_for, ledger, on_maintenance, run_request
from tests.e2e.people import NO_GATES, admin_settings
from tests.e2e.postgres import database_fixture, postgres_server_fixture  # noqa: F401 (fixtures)
from tests.e2e.support import needs_job_runner
from tests.e2e.test_database import Backups, backups, db, restore_section  # noqa: F401

pytestmark = [pytest.mark.e2e, needs_job_runner]

ROW_EMAIL = "jane.client@lawyershub.example"
# What `curl -v` and psql print, as a smoke test's log has it; the token and the passphrase
# come from the Secret, through the Job's environment only.
SMOKE = f"""
echo '> POST /api/documents HTTP/1.1'
echo '> Host: backend.lawyershub.svc'
echo "> Authorization: Bearer $API_TOKEN"
echo '< HTTP/1.1 500 Internal Server Error'
echo 'psql:/smoke/seed.sql:3: ERROR:  duplicate key value violates unique constraint' \
  '"users_email_key"'
echo 'DETAIL:  Key (email)=({ROW_EMAIL}) already exists.'
echo "checked with passphrase $PASSPHRASE"
exit 1
"""


@pytest.fixture
def hooks() -> Iterator[FakeWebhooks]:
    with FakeWebhooks() as server:
        yield server


def test_a_failed_jobs_token_passphrase_and_row_reach_no_reader(
    api: client.ApiClient, app: str, operator: Operator, hooks: FakeWebhooks
) -> None:
    namespace = app
    token = f"T0k{secrets.token_urlsafe(24)}"
    passphrase = f"staple-{secrets.token_hex(6)}-horse"  # no shape a rule knows
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "smoke-credentials"},
            "data": {
                "token": base64.b64encode(token.encode()).decode(),
                "passphrase": base64.b64encode(passphrase.encode()).decode(),
            },
        },
    )
    slack, generic = hooks.slack_hook(), hooks.json_hook("generic")
    env = [
        {"name": "API_TOKEN", "secretKeyRef": {"name": "smoke-credentials", "key": "token"}},
        {"name": "PASSPHRASE", "secretKeyRef": {"name": "smoke-credentials", "key": "passphrase"}},
    ]
    check = {"image": "busybox:1.36", "command": ["sh", "-c", SMOKE], "env": env}
    done = run_request(
        api,
        namespace,
        "golive",
        "Failed",
        verification={"timeout": "5m", "checks": [{"name": "smoke", "job": check}]},
        notify=[
            {"name": "slack", "url": slack.url, "format": "slack"},
            {"name": "generic", "url": generic.url},
        ],
        timeout=120,
    )
    assert on_maintenance(api, namespace)

    status = json.dumps(done["status"])
    event_messages = [e.message or "" for e in events_for(api, namespace, "golive")]
    events = "\n".join(event_messages)
    report = client.CoreV1Api(api).read_namespaced_config_map("golive-postmortem", namespace)
    postmortem = report.data["postmortem.md"]
    logs = operator.logs()
    notifications = json.dumps([*slack.messages, *generic.messages], ensure_ascii=False)
    readers = {
        "status": status,
        "Events": events,
        "post-mortem": postmortem,
        "operator log": logs,
        "notifications": notifications,
    }
    for where, text in readers.items():
        for secret in (token, passphrase, ROW_EMAIL, "Key (email)="):
            assert secret not in text, f"{secret!r} reached the {where}"

    # Still readable: what failed, and where to look, with the header named but not its value.
    message = done["status"]["message"]
    assert "smoke (Job golive-check-smoke-" in message
    assert "Authorization: Bearer <redacted>" in message
    assert "HTTP/1.1 500 Internal Server Error" in message
    assert 'violates unique constraint "users_email_key"' in message
    assert "checked with passphrase <redacted>" in message
    assert "Authorization: Bearer <redacted>" in postmortem
    assert any("smoke" in e and "Bearer <redacted>" in e for e in event_messages)
    assert generic.messages and generic.messages[-1]["event"] == "Failed"
    assert "<redacted>" in generic.messages[-1]["message"]


def _readers(
    api: client.ApiClient, namespace: str, done: dict[str, Any], operator: Operator
) -> dict[str, str]:
    """Everything people read of a run: its status, its Events, its post-mortem, the log."""
    report = client.CoreV1Api(api).read_namespaced_config_map("golive-postmortem", namespace)
    return {
        "status": json.dumps(done["status"]),
        "Events": "\n".join(e.message or "" for e in events_for(api, namespace, "golive")),
        "post-mortem": report.data["postmortem.md"],
        "operator log": operator.logs(),
    }


def test_rows_psql_quotes_from_a_failed_restore_reach_no_reader(
    api: client.ApiClient,
    app: str,
    db: Database,  # noqa: F811 (the fixture imported above)
    backups: Backups,  # noqa: F811 (the fixture imported above)
    operator: Operator,
) -> None:
    """A dump whose `User` rows break the unique email constraint: real psql, in the restore
    Job, names the duplicated row in a DETAIL line; the run says the restore failed and which
    constraint, never whose email."""
    namespace = app
    dump = backups.dump(db)
    text = dump.read_text()
    header = next(line for line in text.splitlines() if line.startswith('COPY public."User"'))
    columns = header.split("(", 1)[1].split(")", 1)[0].split(", ")
    twin = {'"id"': "99", "id": "99", "email": "ayu@lawyershub.example"}
    row = "\t".join(twin.get(c, "\\N") for c in columns)
    dump.write_text(text.replace(header + "\n", f"{header}\n{row}\n", 1))
    admin_settings(api, namespace, NO_GATES)  # the restore runs unattended here

    done = run_request(
        api,
        namespace,
        "golive",
        "Failed",
        timeout=120,
        database=restore_section(requireApproval=False),
    )

    restore = ledger(done)["RestoreDatabase"]["message"]
    assert restore.startswith("the restore failed and its transaction was rolled back")
    assert '"User_email_key"' in restore  # which constraint: the DBA's lead
    for where, said in _readers(api, namespace, done, operator).items():
        for secret in ("ayu@lawyershub.example", "Key (email)=", db.password):
            assert secret not in said, f"{secret!r} reached the {where}"

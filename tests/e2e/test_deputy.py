"""No confused deputy (safety rule 9), tried as a requester would: a user bound only to the
rollback-requester role in the namespace tries to borrow the operator's powers through a
RollbackRequest.

Two layers stop them, each proven here against the real API server and the operator process:
- admission (manifests/common/requester-rights.yaml): a Secret the user may not get, or Jobs
  the user may not create, refuse the request before it exists, with a message naming the field
  and the Secret;
- Preflight (steps/limits.py): an address the operator must not contact (metadata, link-local,
  also once resolved; plain http with a credential; outside the admins' allowedHosts) or an
  image outside allowedImages fails the run before anything is contacted, started or changed.
And a dry run contacts no Prometheus and starts no Job that sees a Secret.

Every Secret holds a fresh random value, which must appear in no status, Event or log line.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.local import wait_until
from tests.e2e.lawyershub import (
    GROUP,
    PLURAL,
    VERSION,
    Operator,
    events_for,
    ledger,
    request_body,
    snapshot,
    wait_outcome,
)
from tests.e2e.people import (
    DEVELOPER,
    USER_ROLES,
    _server_side_apply,
    allow_people,
    as_person,
    may_use,
)
from tests.e2e.support import REPO_ROOT, bound_claim, needs_job_runner

pytestmark = pytest.mark.e2e

RIGHTS = REPO_ROOT / "manifests" / "common" / "requester-rights.yaml"
SECRETS = ("cdn-token", "prod-db", "slack-url", "other-team")


@pytest.fixture
def values() -> dict[str, str]:
    """A fresh value per Secret, so that finding one anywhere means this run leaked it."""
    return {name: f"s3cr3t-{name}-{secrets.token_hex(12)}" for name in SECRETS}


@pytest.fixture
def requester(
    api: client.ApiClient,
    kubeconfig: str,
    namespace: str,
    values: dict[str, str],
    crds_installed: None,
) -> client.ApiClient:
    """The policy in force, the Secrets in the namespace, and an API client acting as the
    developer, bound only to rollback-requester."""
    for path in (RIGHTS, USER_ROLES):  # another test may have removed them (test_helm)
        for obj in yaml.safe_load_all(path.read_text()):
            _server_side_apply(api, obj)
    allow_people(api, namespace)
    core = client.CoreV1Api(api)
    for name, value in values.items():
        data = {"url": value}
        if name == "slack-url":  # a webhook URL is the credential itself
            data = {"url": f"http://hooks.slack.invalid/services/T0/B0/{value}"}
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": data})
    developer = as_person(kubeconfig, DEVELOPER)

    def in_force() -> bool:
        try:
            _create(developer, namespace, "probe", dry_run=True, database=_database())
        except ApiException as error:
            return error.status == 403 and "rollback-requester-rights" in error.body
        return False

    wait_until(in_force, timeout=30, what="the rollback-requester-rights policy in force")
    return developer


def grant_secrets(api: client.ApiClient, namespace: str, *names: str) -> None:
    may_use(api, namespace, DEVELOPER[1], names, jobs=False)


def grant_jobs(api: client.ApiClient, namespace: str) -> None:
    may_use(api, namespace, DEVELOPER[1], (), jobs=True)


def _create(
    person: client.ApiClient, namespace: str, name: str, *, dry_run: bool = False, **spec: Any
) -> dict[str, Any]:
    created: dict[str, Any] = client.CustomObjectsApi(person).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        request_body(name, **spec),
        dry_run="All" if dry_run else None,
    )
    return created


def refused_at_admission(person: client.ApiClient, namespace: str, **spec: Any) -> str:
    """The message with which admission refuses the request (403), tried as a dry run."""
    with pytest.raises(ApiException) as refused:
        _create(person, namespace, "attack", dry_run=True, **spec)
    assert refused.value.status == 403, refused.value.body
    return str(json.loads(refused.value.body)["message"])


def _database(secret: str = "prod-db", **restore: Any) -> dict[str, Any]:
    return {
        "connection": {"secretRef": {"name": secret, "key": "url"}},
        "restore": {"backup": {"claimName": "db-backups", "file": "pre-golive.sql"}, **restore},
    }


def _job_check(image: str = "busybox:1.36", secret: str | None = None) -> dict[str, Any]:
    env = [{"name": "TOKEN", "secretKeyRef": {"name": secret, "key": "url"}}] if secret else []
    return {"checks": [{"name": "smoke", "job": {"image": image, "command": ["true"], "env": env}}]}


# --- admission


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        pytest.param(
            {"database": _database()},
            "Secret prod-db (spec.database.connection.secretRef)",
            id="database-url-of-a-secret-the-user-cannot-get",
        ),
        pytest.param(
            {
                "cdn": {
                    "provider": "cloudflare",
                    "zoneId": "abc",
                    "credentials": {"secretRef": {"name": "cdn-token", "key": "url"}},
                }
            },
            "Secret cdn-token (spec.cdn.credentials.secretRef)",
            id="cdn-token-of-a-secret-the-user-cannot-get",
        ),
        pytest.param(
            {"notify": [{"name": "ops", "urlSecretRef": {"name": "slack-url", "key": "url"}}]},
            "Secret slack-url (spec.notify[ops].urlSecretRef)",
            id="webhook-url-of-a-secret-the-user-cannot-get",
        ),
        pytest.param(
            {"verification": _job_check(secret="other-team")},
            "Secret other-team (spec.verification.checks[smoke].job.env[TOKEN].secretKeyRef)",
            id="job-check-with-someone-elses-secretkeyref",
        ),
    ],
)
def test_a_secret_the_requester_cannot_get_is_refused_at_admission(
    requester: client.ApiClient, namespace: str, spec: dict[str, Any], named: str
) -> None:
    message = refused_at_admission(requester, namespace, **spec)
    assert f"{DEVELOPER[0]} may not get" in message and named in message, message
    assert f"in namespace {namespace}" in message


def test_only_the_secrets_the_requester_may_get_pass_and_jobs_need_their_own_right(
    api: client.ApiClient, requester: client.ApiClient, namespace: str
) -> None:
    """Read access to one Secret by name lets that one through, not its neighbour; a spec that
    starts Jobs also needs the right to create Jobs."""
    grant_secrets(api, namespace, "prod-db")
    check = {"verification": _job_check(secret="other-team")}

    def jobs_refused() -> str | None:
        try:
            _create(requester, namespace, "attack", dry_run=True, database=_database())
        except ApiException as error:
            body = str(json.loads(error.body)["message"])
            return body if "may not create Jobs" in body else None
        raise AssertionError(
            "a request starting Jobs was admitted without the right to create Jobs"
        )

    message = wait_until(jobs_refused, timeout=30, what="the Secret readable, Jobs still refused")
    assert "spec.database make the operator start Jobs" in message, message
    grant_jobs(api, namespace)
    wait_until(
        lambda: _admitted(requester, namespace, database=_database()),
        timeout=30,
        what="a request naming a readable Secret admitted",
    )
    message = refused_at_admission(requester, namespace, database=_database(), **check)
    assert "Secret other-team" in message and "Secret prod-db" not in message, message


def test_twenty_readable_secrets_are_all_asked_for_and_more_are_refused_readably(
    api: client.ApiClient, requester: client.ApiClient, namespace: str
) -> None:
    """Each authorizer check costs much of the API server's CEL budget: every distinct Secret
    gets a check of its own, so a request naming many (each webhook its own) is judged, not
    refused for the policy's cost, and past the limit the message says what to do."""
    names = [f"hook-{i}" for i in range(21)]
    may_use(api, namespace, DEVELOPER[1], tuple(names), jobs=False)
    notify = [{"name": n, "urlSecretRef": {"name": n, "key": "url"}} for n in names]
    wait_until(
        lambda: _admitted(requester, namespace, notify=notify[:16]),
        timeout=30,
        what="sixteen readable webhook Secrets admitted",
    )
    check = _job_check(secret=names[16])
    check["checks"][0]["job"]["env"] += [
        {"name": f"E{i}", "secretKeyRef": {"name": names[i], "key": "url"}} for i in (17, 18, 19)
    ]
    grant_jobs(api, namespace)
    wait_until(
        lambda: _admitted(requester, namespace, notify=notify[:16], verification=check),
        timeout=30,
        what="twenty readable Secrets admitted",
    )
    check["checks"][0]["job"]["env"].append(
        {"name": "E20", "secretKeyRef": {"name": names[20], "key": "url"}}
    )
    with pytest.raises(ApiException) as refused:
        _create(requester, namespace, "many", dry_run=True, notify=notify[:16], verification=check)
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert "the request names 21 different Secrets, and at most 20 can be checked" in message


def _admitted(person: client.ApiClient, namespace: str, **spec: Any) -> bool:
    try:
        _create(person, namespace, "attack", dry_run=True, **spec)
    except ApiException:
        return False
    return True


# --- Preflight


class Recorder:
    """A local HTTP server that records every request (a Prometheus or a webhook that must not
    be called)."""

    def __init__(self) -> None:
        got = self.got = []  # type: list[str]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(self.path)
                self.send_response(200)
                self.end_headers()

            do_GET = do_POST  # noqa: N815

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


def set_policy(api: client.ApiClient, namespace: str, **spec: Any) -> None:
    """The namespace's RollbackPolicy, as a cluster admin writes it."""
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "rollbackpolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "RollbackPolicy",
            "metadata": {"name": "default"},
            "spec": spec,
        },
    )


CF_TOKEN = {"secretRef": {"name": "cdn-token", "key": "url"}}
PREFLIGHT_ATTACKS = [
    pytest.param(
        {
            "cdn": {
                "provider": "cloudflare",
                "zoneId": "abc",
                "apiBase": "http://169.254.169.254/latest",
                "credentials": CF_TOKEN,
            }
        },
        {},
        ("cdn-token",),
        "spec.cdn.apiBase: 169.254.169.254 is a cloud metadata address",
        id="cdn-apibase-at-the-metadata-address",
    ),
    pytest.param(
        {
            "cdn": {
                "provider": "cloudflare",
                "zoneId": "abc",
                "apiBase": "http://cdn-gateway.example.com/client/v4",
                "credentials": CF_TOKEN,
            }
        },
        {},
        ("cdn-token",),
        (
            "spec.cdn.apiBase: "
            "http://cdn-gateway.example.com/client/v4 is plain http, "
            "and the call carries the CDN token"
        ),
        id="cdn-token-over-plain-http",
    ),
    pytest.param(
        {"notify": [{"name": "ops", "url": "http://metadata.google.internal/computeMetadata/v1/"}]},
        {},
        (),
        "spec.notify[ops].url: metadata.google.internal is a cloud metadata name",
        id="webhook-to-the-metadata-host",
    ),
    pytest.param(
        {"notify": [{"name": "ops", "urlSecretRef": {"name": "slack-url", "key": "url"}}]},
        {},
        ("slack-url",),
        "spec.notify[ops].urlSecretRef: the URL in Secret slack-url key url is plain http",
        id="secret-webhook-url-over-plain-http",
    ),
    pytest.param(
        {"monitoring": {"prometheus": {"url": "http://169.254.10.10:9090"}}},
        {},
        (),
        "spec.monitoring.prometheus.url: 169.254.10.10 is a link-local address",
        id="prometheus-at-a-link-local-address",
    ),
    pytest.param(
        {"monitoring": {"prometheus": {"url": "http://admin:hunter2@prometheus.example.com:9090"}}},
        {},
        (),
        "is plain http, and the call carries the user and password in its URL",
        id="prometheus-basic-auth-over-plain-http",
    ),
    pytest.param(
        {
            "verification": {
                "checks": [
                    {
                        "name": "redis",
                        "tcp": {"host": "0xa9fea9fe", "port": 80, "send": "GET / HTTP/1.0\r\n\r\n"},
                    }
                ]
            }
        },
        {},
        (),
        (
            "spec.verification.checks[redis].tcp.host: "
            "0xa9fea9fe resolves to 169.254.169.254, a cloud metadata address"
        ),
        id="tcp-check-to-a-name-resolving-to-the-metadata-address",
    ),
    pytest.param(
        {
            "verification": {
                "checks": [
                    {
                        "name": "other-redis",
                        "tcp": {"host": "127.0.0.1", "port": 6379, "send": "PING\r\n"},
                    }
                ]
            }
        },
        {"allowedHosts": ["*.lawyershub.svc.cluster.local"]},
        (),
        (
            "spec.verification.checks[other-redis].tcp.host: "
            "host 127.0.0.1 is not in the admins' allowedHosts (*.lawyershub.svc.cluster.local)"
        ),
        id="tcp-check-to-a-host-outside-the-allowlist",
    ),
    pytest.param(
        {
            "verification": {
                "checks": [{"name": "api", "http": {"url": "http://[fe80::1]:8080/healthz"}}]
            }
        },
        {},
        (),
        "spec.verification.checks[api].http.url: fe80::1 is a link-local address",
        id="http-check-to-an-ipv6-link-local-address",
    ),
    pytest.param(
        {"verification": _job_check(image="attacker.example/exfiltrate:latest")},
        {"allowedImages": ["registry.lawyershub.example:5000/*"]},
        ("jobs",),
        (
            "spec.verification.checks[smoke].job.image: "
            "image attacker.example/exfiltrate:latest is not in the admins' allowedImages"
        ),
        id="job-check-image-outside-the-allowlist",
    ),
    pytest.param(
        {"database": _database(image="attacker.example/psql:latest")},
        {"allowedImages": ["postgres:16"]},
        ("prod-db", "jobs"),
        (
            "spec.database.restore.image: "
            "image attacker.example/psql:latest is not in the admins' allowedImages (postgres:16)"
        ),
        id="database-job-image-outside-the-allowlist",
    ),
]


@pytest.mark.parametrize(("spec", "policy", "rights", "expected"), PREFLIGHT_ATTACKS)
def test_an_address_or_image_the_operator_must_not_use_stops_preflight(
    api: client.ApiClient,
    app: str,
    requester: client.ApiClient,
    operator: Operator,
    values: dict[str, str],
    spec: dict[str, Any],
    policy: dict[str, Any],
    rights: tuple[str, ...],
    expected: str,
) -> None:
    """Created by the requester (with just the rights admission asks for), the request fails in
    Preflight naming the field, nothing in the namespace changes, no Job is started and no
    Secret value is anywhere."""
    if policy:
        set_policy(api, app, **policy)
    names = tuple(r for r in rights if r != "jobs")
    if names:
        grant_secrets(api, app, *names)
    if "jobs" in rights:
        grant_jobs(api, app)
    before = snapshot(api, app)
    wait_until(lambda: _admitted(requester, app, **spec), timeout=30, what="the rights in force")
    _create(requester, app, "attack", **spec)
    done = wait_outcome(api, app, "attack", "Failed")
    steps = ledger(done)
    assert steps["Preflight"]["state"] == "Failed"
    message = steps["Preflight"]["message"]
    assert expected in message, message
    assert "Nothing was contacted, started or changed" in message
    assert all(steps[s]["state"] == "Pending" for s in steps if s != "Preflight"), steps
    assert snapshot(api, app) == before
    assert client.BatchV1Api(api).list_namespaced_job(app).items == []
    if "notify" in spec:  # the Started notification, due while Preflight ran, was not sent
        (delivery,) = done["status"]["notifications"]
        assert delivery["sent"] == 0 and "not sent: spec.notify[ops]" in delivery["lastError"]
    assert_no_secret_anywhere(api, app, "attack", operator, values)


def assert_no_secret_anywhere(
    api: client.ApiClient, namespace: str, name: str, operator: Operator, values: dict[str, str]
) -> None:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    seen = json.dumps(obj.get("status")) + " ".join(
        e.message or "" for e in events_for(api, namespace, name)
    )
    seen += operator.logs()
    for value in values.values():
        assert value not in seen
    assert "hunter2" not in seen


# --- dry runs


def test_a_dry_run_sends_prometheus_nothing(
    api: client.ApiClient,
    app: str,
    requester: client.ApiClient,
    operator: Operator,
    recorder: Recorder,
) -> None:
    _create(requester, app, "plan", dryRun=True, monitoring={"prometheus": {"url": recorder.url}})
    done = wait_outcome(api, app, "plan", "Succeeded")
    message = ledger(done)["Preflight"]["message"]
    assert f"monitoring: Prometheus at {recorder.url} was not queried" in message, message
    assert recorder.got == []


@needs_job_runner
def test_a_dry_run_with_a_database_starts_no_job_that_sees_a_secret(
    api: client.ApiClient,
    app: str,
    requester: client.ApiClient,
    operator: Operator,
    values: dict[str, str],
    tmp_path: Path,
) -> None:
    """The inspection Job still resolves and measures the backup, but gets no Secret: the
    ledger says the database was not contacted."""
    grant_secrets(api, app, "prod-db")
    grant_jobs(api, app)
    backups = tmp_path / "backups"
    backups.mkdir()
    backups.chmod(0o755)
    dump = backups / "pre-golive.sql"
    dump.write_text("CREATE TABLE public.cases (id integer);\n")
    dump.chmod(0o644)
    with bound_claim(api, app, "db-backups", backups, "ReadOnlyMany"):
        wait_until(
            lambda: _admitted(requester, app, database=_database()), timeout=30, what="rights"
        )
        _create(requester, app, "plan", dryRun=True, database=_database(requireApproval=False))
        done = wait_outcome(api, app, "plan", "Succeeded", timeout=120)
    message = ledger(done)["Preflight"]["message"]
    assert "the database was not contacted (a dry run's Job gets no Secret)" in message, message
    assert "backup pre-golive.sql" in message, message
    jobs = client.BatchV1Api(api).list_namespaced_job(app).items
    assert len(jobs) == 1  # the inspection, nothing else
    pod = api.sanitize_for_serialization(jobs[0])["spec"]["template"]["spec"]
    containers = pod["containers"] + (pod.get("initContainers") or [])
    assert all("valueFrom" not in e for c in containers for e in c.get("env") or []), containers
    assert not any("envFrom" in c for c in containers)
    assert not any("secret" in v for v in pod.get("volumes") or [])
    assert_no_secret_anywhere(api, app, "plan", operator, values)

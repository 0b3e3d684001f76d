"""Crash anywhere, resume correctly (safety rule 6), exhaustively: the operator is SIGKILLed
right after its Nth mutating API request, for every N of a full run with a database restore, a
CDN purge and a verification check. Each time, the operator started again finishes the run
Succeeded, with the true originals restored, the database as before go-live, and the restore
Job started once.

The kill comes from the test, not from the product: the operator process is started with a
`sitecustomize` on its PYTHONPATH that counts the mutating requests (anything but GET) its API
client sends, and SIGKILLs its own process as soon as the answer to the Nth one arrives. A
first run, never killed, counts them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from standins.cdn import FakeCloudflare
from standins.lawyershub_db import PRE_GOLIVE_SQL, contents, corrupt, go_live
from standins.local import wait_until
from standins.postgres import PostgresServer
from tests.e2e.lawyershub import (
    GROUP,
    Operator,
    create_request,
    deploy_app,
    ledger,
    snapshot,
    wait_phase,
)
from tests.e2e.people import NO_GATES, admin_settings
from tests.e2e.postgres import postgres_server_fixture  # noqa: F401 (fixture)
from tests.e2e.support import bound_claim, healthy_endpoint, needs_job_runner

pytestmark = [pytest.mark.e2e, needs_job_runner]

ZONE, TOKEN = "023e105f4ecef8ad9ca31a8372d0c353", "a-cloudflare-token"
SNAPSHOT, CHOSEN = "pre-golive-snapshot-YYYYMMDD.sql", "pre-golive-snapshot-20260109.sql"
PARALLEL = 3  # crash points tried at once, each in a namespace of its own

KILLER = '''
"""Counts the operator's mutating API requests; SIGKILLs the process after the Nth answer."""
import os, signal, threading
from rollback_operator import kube

_send, _lock, _count = kube.Kube.send, threading.Lock(), [0]
_limit = int(os.environ.get("ROLLBACK_KILL_AFTER", "0"))
_file = os.environ.get("ROLLBACK_COUNT_FILE")


def send(self, method, path, *args, **kwargs):
    response = _send(self, method, path, *args, **kwargs)
    if method != "GET":
        with _lock:
            _count[0] += 1
            n = _count[0]
            if _file:
                with open(_file, "w") as out:
                    out.write(str(n))
        if n == _limit:
            os.kill(os.getpid(), signal.SIGKILL)
    return response


kube.Kube.send = send
'''


@dataclass
class Outcome:
    limit: int
    killed: bool
    mutations: int  # counted by the first process (up to the kill)
    status: dict[str, Any]


@dataclass
class Place:
    """One run's namespace, database and backups, as a bad release left them."""

    namespace: str
    here: Path
    before: dict[str, Any]
    before_db: dict[str, Any]


def _prepare(api: client.ApiClient, db: Any, work: Path, limit: int) -> Place:
    core = client.CoreV1Api(api)
    namespace = f"crash-{os.urandom(4).hex()}-{limit}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    here = work / namespace
    (here / "backups").mkdir(parents=True)
    (here / "backups").chmod(0o755)
    deploy_app(api, namespace)
    db.psql(PRE_GOLIVE_SQL)
    before_db = contents(db)
    db.dump(here / "backups" / CHOSEN).chmod(0o644)
    go_live(db)
    corrupt(db)
    core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "app"},
            "stringData": {"DATABASE_URL": f"{db.url}?schema=public", "cdn": TOKEN},
        },
    )
    return Place(namespace, here, snapshot(api, namespace), before_db)


def _request(api: client.ApiClient, namespace: str, cdn: FakeCloudflare, site: str) -> None:
    admin_settings(api, namespace, NO_GATES)  # the restore runs unattended here
    create_request(
        api,
        namespace,
        "crash",
        database={
            "connection": {"secretRef": {"name": "app", "key": "DATABASE_URL"}},
            "restore": {
                "backup": {"claimName": "db-backups", "file": SNAPSHOT},
                "requireApproval": False,
            },
        },
        cdn={
            "provider": "cloudflare",
            "apiBase": cdn.api_base,
            "zoneId": ZONE,
            "credentials": {"secretRef": {"name": "app", "key": "cdn"}},
        },
        verification={"checks": [{"name": "site", "http": {"url": site}}]},
    )


def _drive(
    api: client.ApiClient, kubeconfig: str, place: Place, work: Path, limit: int, start: Any
) -> tuple[bool, int, dict[str, Any], str]:
    """The operator killed after `limit` mutations (0: never) and started again; the run
    followed to its end. Returns (killed, mutations counted, the request, the logs)."""
    operator = Operator(place.namespace, kubeconfig, place.here)
    count = place.here / "mutations"
    operator.env.update(
        PYTHONPATH=f"{work / 'killer'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        ROLLBACK_KILL_AFTER=str(limit),
        ROLLBACK_COUNT_FILE=str(count),
    )
    operator.start()
    killed = False
    try:
        start()
        if limit:
            process = operator.process
            assert process is not None

            def gone_or_done() -> bool:
                return process.poll() is not None or (
                    _status(api, place.namespace).get("announced") is True
                )

            wait_until(gone_or_done, timeout=180, what=f"the kill after {limit}", interval=0.2)
            killed = process.poll() is not None
            # The next process neither kills nor counts: the count is the first one's.
            operator.env.pop("ROLLBACK_COUNT_FILE")
            operator.env["ROLLBACK_KILL_AFTER"] = "0"
            if killed:
                operator.start()
        done = wait_phase(api, place.namespace, "crash", "Succeeded", "Failed", timeout=180)
    finally:
        operator.stop()
    mutations = int(count.read_text() or 0) if count.exists() else 0
    return killed, mutations, done, operator.logs()


def _check(api: client.ApiClient, place: Place, db: Any, done: dict[str, Any], limit: int) -> None:
    status = done["status"]
    assert status["phase"] == "Succeeded", (limit, status["message"])
    after, before = snapshot(api, place.namespace), place.before
    # The true originals were recorded, and are back.
    paths = before["ingresses"]["lawyershub"]["spec"]["rules"][0]["http"]["paths"]
    saved = status["saved"]["ingresses"]["lawyershub"]["backends"]
    assert [b["backend"] for b in saved] == [p["backend"] for p in paths], limit
    ingress = after["ingresses"]["lawyershub"]["spec"]
    assert ingress == before["ingresses"]["lawyershub"]["spec"], limit
    for hpa in ("backend", "frontend"):
        assert after["hpas"][hpa]["spec"] == before["hpas"][hpa]["spec"], (limit, hpa)
    # The database is as before go-live, restored by one Job, started once.
    assert contents(db) == place.before_db, limit
    restores = (
        client.BatchV1Api(api)
        .list_namespaced_job(place.namespace, label_selector=f"{GROUP}/step=RestoreDatabase")
        .items
    )
    assert len(restores) == 1, limit
    job = restores[0].metadata.name
    pods = client.CoreV1Api(api).list_namespaced_pod(
        place.namespace, label_selector=f"batch.kubernetes.io/job-name={job}"
    )
    assert len(pods.items) == 1, limit
    assert ledger(done)["RestoreDatabase"]["state"] == "Succeeded"


def _one_run(
    api: client.ApiClient,
    kubeconfig: str,
    server: PostgresServer,
    cdn: FakeCloudflare,
    site: str,
    work: Path,
    limit: int,
) -> Outcome:
    """A full run in a namespace of its own, with the kill after `limit` mutations."""
    db = server.create_database()
    place = None
    try:
        place = _prepare(api, db, work, limit)
        with bound_claim(
            api, place.namespace, "db-backups", place.here / "backups", "ReadOnlyMany"
        ):
            killed, mutations, done, logs = _drive(
                api,
                kubeconfig,
                place,
                work,
                limit,
                lambda: _request(api, place.namespace, cdn, site),
            )
            try:
                _check(api, place, db, done, limit)
            except AssertionError:
                print(logs[-8000:])
                raise
        return Outcome(limit, killed, mutations, done["status"])
    finally:
        if place is not None:
            client.CoreV1Api(api).delete_namespace(place.namespace)
        server.drop_database(db)


def _status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, "v1alpha1", namespace, "rollbackrequests", "crash"
    )
    return dict(obj.get("status") or {})


# About seventy-five full runs, three at a time: started first in the e2e tier's parallel phase,
# where it shares the machine with the other workers, hence more than the default 600 s before
# pytest-timeout stops it (each run keeps its own deadlines).
@pytest.mark.long
@pytest.mark.timeout(1800)
def test_a_kill_after_every_mutating_request_of_a_full_run_ends_the_same(
    api: client.ApiClient,
    kubeconfig: str,
    crds_installed: None,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    (tmp_path / "killer").mkdir()
    (tmp_path / "killer" / "sitecustomize.py").write_text(KILLER)
    with FakeCloudflare(ZONE, TOKEN) as cdn, healthy_endpoint() as site:
        counted = _one_run(api, kubeconfig, postgres_server, cdn, site, tmp_path, 0)
        total = counted.mutations
        assert total >= 20, total  # a full run: saves, patches, the Jobs, Events, the status
        with ThreadPoolExecutor(PARALLEL) as pool:
            outcomes = list(
                pool.map(
                    lambda n: _one_run(api, kubeconfig, postgres_server, cdn, site, tmp_path, n),
                    range(1, total + 1),
                )
            )
    killed = [o.limit for o in outcomes if o.killed]
    print(f"crash points covered: {len(killed)} of {total} mutating requests")
    # Every crash point was reached. A run's requests vary a little with timing (Events folded
    # or not, progress written or not, retries), so the last few limits may lie beyond a run's
    # end: a run not killed made fewer mutating requests than its limit, and every limit up to
    # the shortest whole run was a kill.
    missed = [(o.limit, o.mutations) for o in outcomes if not o.killed]
    assert all(mutations < limit for limit, mutations in missed), missed
    shortest = min([total, *(mutations for _, mutations in missed)])
    assert killed[:shortest] == list(range(1, shortest + 1)), (total, killed, missed)
    assert shortest >= 20, (total, missed)

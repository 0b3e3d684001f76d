"""Local stand-ins for everything examples/rollback.yaml talks to in production, started
together (`StandIns`), so that the example runs end to end on one machine (`make demo`,
tests/e2e/test_example.py).

| production (examples/rollback.yaml)  | stand-in here                                           |
|--------------------------------------|---------------------------------------------------------|
| PostgreSQL postgres.lawyershub.svc   | a real PostgreSQL (Debian's), seeded with Lawyers Hub's |
|                                      | tables, dumped before go-live, then migrated and        |
|                                      | corrupted as the bad release did                        |
| PVC db-backups                       | a host directory holding the dumps, as a hostPath       |
|                                      | PersistentVolume and a claim bound to it                |
| Prometheus prometheus.monitoring.svc | a real Prometheus (Debian's) scraping synthetic traffic |
|                                      | at a healthy error ratio and latency                    |
| Cloudflare api.cloudflare.com        | standins.cdn.FakeCloudflare                             |
| Slack, the on-call webhook           | standins.webhooks.FakeWebhooks                          |
| Redis redis.lawyershub.svc           | a listener answering PING with +PONG                    |
| backend, frontend, AI Gateway        | small HTTP servers: health pages, the smoke endpoint    |

The Lawyers Hub schema and the go-live migrations are those of the database tests
(standins/lawyershub_db.py).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException

from standins.cdn import FakeCloudflare
from standins.lawyershub_db import PRE_GOLIVE_SQL, contents, corrupt, go_live
from standins.local import bound_claim_objects, wait_until
from standins.postgres import Database, PostgresServer, start_server, stop_server
from standins.prometheus import PrometheusServer, Traffic, TrafficTarget
from standins.sites import Hit, SiteServer, TcpListener, redis_like
from standins.transform import Local, load_example
from standins.webhooks import FakeWebhooks, Hook

DATABASE = "lawyershub"  # the database and its owner role, as production names them

# The dated dumps on the backups volume: two before go-live, one after it (notAfter leaves it).
PRE_GOLIVE_DUMPS = ("pre-golive-snapshot-20260105.sql", "pre-golive-snapshot-20260109.sql")
POST_GOLIVE_DUMP = "pre-golive-snapshot-20260111.sql"
CHOSEN_DUMP = PRE_GOLIVE_DUMPS[-1]

# The healthy traffic Prometheus sees once the application is back: 0.4 % errors, 120 ms.
TRAFFIC = {"rate": 200.0, "error_ratio": 0.004, "latency": 0.12}


class StartInterruptedError(Exception):
    """Stopping was asked while the stand-ins were starting."""


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass
class Seeded:
    """The database's contents at the points the demo shows: before go-live (what the restore
    must bring back exactly) and at the bad release."""

    pre_golive: dict[str, Any] = field(default_factory=dict)
    bad_release: dict[str, Any] = field(default_factory=dict)


class StandIns:
    """Every stand-in, started together for one namespace (the request's): `start`, `install`
    (the Secrets, volume and claim the request refers to), then `stop`. A context manager.

    `local()` maps the example's production addresses to the stand-in serving each; what the
    request names itself (zone id, webhook paths, Secret names, claim) is read from it."""

    def __init__(self, workdir: Path, namespace: str, request: dict[str, Any] | None = None):
        self.workdir, self.namespace = workdir, namespace
        self.request = request if request is not None else load_example()
        self.spec: dict[str, Any] = self.request["spec"]
        self.backups = workdir / "backups"
        self.postgres: PostgresServer | None = None
        self.db: Database | None = None
        self.seeded = Seeded()
        self.target: TrafficTarget | None = None
        self.traffic: Traffic | None = None
        self.prometheus: PrometheusServer | None = None
        self.cdn_token = secrets.token_urlsafe(24)
        self.smoke_token = secrets.token_urlsafe(24)
        self.cdn: FakeCloudflare | None = None
        self.webhooks: FakeWebhooks | None = None
        self.hooks: dict[str, Hook] = {}  # by notify name
        self.sites: dict[str, SiteServer] = {}
        self.redis: TcpListener | None = None
        self.volume = f"{namespace}-{self._claim()}" if self._claim() else ""

    def __enter__(self) -> StandIns:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- starting and stopping

    def start(
        self,
        stop: threading.Event | None = None,
        started: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        """Starts everything. `started` is told of each process that outlives this one unless
        stopped (PostgreSQL, which pg_ctl detaches), as soon as it runs; `stop`, once set,
        ends the start between two stand-ins (StartInterruptedError), never in the middle of one."""

        def check() -> None:
            if stop is not None and stop.is_set():
                raise StartInterruptedError("asked to stop while starting")

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_database()
        if started is not None and self.postgres is not None:
            started({"postgres": str(self.postgres.root), "bin": str(self.postgres.bin_dir)})
        check()
        self._start_prometheus()
        check()
        cdn = FakeCloudflare((self.spec.get("cdn") or {}).get("zoneId", "0"), self.cdn_token)
        cdn.__enter__()
        self.cdn = cdn
        self._start_webhooks()
        self.redis = TcpListener(redis_like(b"+PONG\r\n"))
        self.sites = {
            "backend": SiteServer(
                "backend",
                {
                    ("GET", "/api/health"): lambda h, b: (
                        200,
                        _json({"status": "ok", "version": "stable-last-known"}),
                    ),
                    ("POST", "/api/smoke/documents"): self._smoke_document,
                },
            ),
            "frontend": SiteServer(
                "frontend",
                {("GET", "/"): lambda h, b: (200, "<!doctype html><title>Lawyers Hub</title>")},
            ),
            "ai-gateway": SiteServer(
                "ai-gateway", {("GET", "/healthz"): lambda h, b: (200, _json({"status": "ok"}))}
            ),
        }

    def stop(self) -> None:
        """Stops whatever was started; safe to call twice and after a failed start."""
        for site in self.sites.values():
            site.close()
        self.sites = {}
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        if self.cdn is not None:
            self.cdn.__exit__()
            self.cdn = None
        if self.webhooks is not None:
            self.webhooks.__exit__()
            self.webhooks = None
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.target is not None:
            self.target.close()
            self.target = None
        if self.postgres is not None:
            stop_server(self.postgres)
            self.postgres = None

    def _start_database(self) -> None:
        self.postgres = server = start_server()
        password = secrets.token_hex(16)
        server.psql("postgres", f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{password}'")
        server.psql("postgres", f"CREATE DATABASE {DATABASE} OWNER {DATABASE}")
        self.db = db = Database(server, DATABASE, DATABASE, password)
        db.psql(PRE_GOLIVE_SQL)
        self.seeded.pre_golive = contents(db)
        self.backups.mkdir(parents=True, exist_ok=True)
        self.backups.chmod(0o755)  # read by the Jobs' non-root user
        for name in PRE_GOLIVE_DUMPS:
            db.dump(self.backups / name).chmod(0o644)
        go_live(db)
        corrupt(db)
        self.seeded.bad_release = contents(db)
        # The nightly backup after go-live holds the bad data: notAfter must leave it alone.
        db.dump(self.backups / POST_GOLIVE_DUMP).chmod(0o644)

    def _start_prometheus(self) -> None:
        self.target = TrafficTarget()
        self.traffic = self.target.traffic(self.namespace, **TRAFFIC)
        directory = self.workdir / "prometheus"
        directory.mkdir(exist_ok=True)
        self.prometheus = PrometheusServer([self.target.address], directory)
        self.prometheus.start()
        self.prometheus.wait_for_data(self.namespace)

    def _start_webhooks(self) -> None:
        webhooks = FakeWebhooks()
        webhooks.__enter__()
        self.webhooks = webhooks
        for hook in self.spec.get("notify") or []:
            if hook.get("format") == "slack":
                self.hooks[hook["name"]] = self.webhooks.slack_hook()
                continue
            path = urlsplit(hook.get("url", "")).path
            if not path.startswith("/hooks/"):
                raise ValueError(f"spec.notify[{hook['name']}]: the stand-in serves /hooks/<name>")
            self.hooks[hook["name"]] = self.webhooks.json_hook(path.removeprefix("/hooks/"))

    def _smoke_document(self, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        """The backend's "save a legal document" smoke endpoint: needs the smoke user's token
        and a case; saves nothing (dryRun) and says what it would have saved."""
        if headers.get("authorization") != f"Bearer {self.smoke_token}":
            return 401, _json({"error": "unauthorized"})
        try:
            document = json.loads(body)
        except ValueError:
            return 400, _json({"error": "not JSON"})
        return 201, _json({"saved": True, "dryRun": True, "caseId": document.get("caseId")})

    # --- what the request sees

    def local(self) -> Local:
        """The production addresses of the example, each with its stand-in's address."""
        assert self.postgres and self.prometheus and self.redis and self.cdn and self.webhooks
        webhooks = urlsplit(self.webhooks.base).netloc
        return Local(
            addresses={
                "backend.lawyershub.svc:8080": self.sites["backend"].address,
                "frontend.lawyershub.svc:80": self.sites["frontend"].address,
                "ai-gateway.lawyershub.svc:8080": self.sites["ai-gateway"].address,
                "postgres.lawyershub.svc:5432": f"{self.postgres.host}:{self.postgres.port}",
                "redis.lawyershub.svc:6379": self.redis.address,
                "prometheus.monitoring.svc:9090": f"127.0.0.1:{self.prometheus.port}",
                "oncall.lawyershub.example:443": webhooks,
            },
            cdn_api_base=self.cdn.api_base,
        )

    def _claim(self) -> str:
        restore = (self.spec.get("database") or {}).get("restore") or {}
        return str((restore.get("backup") or {}).get("claimName", ""))

    def database_url(self) -> str:
        """The application's URL as Prisma writes it (psql does not know connection_limit)."""
        assert self.db is not None
        return f"{self.db.url}?schema=public&connection_limit=5"

    def cluster_objects(self) -> list[dict[str, Any]]:
        """What the request refers to in the namespace, with the stand-ins' values: every
        Secret key it names, and the backups' claim bound to a hostPath PersistentVolume (the
        local cluster runs no volume binder: see cluster/README.md)."""
        secrets_: dict[str, dict[str, str]] = {}

        def put(ref: dict[str, str], value: str) -> None:
            secrets_.setdefault(ref["name"], {})[ref["key"]] = value

        spec = self.spec
        if "cdn" in spec:
            put(spec["cdn"]["credentials"]["secretRef"], self.cdn_token)
        if "database" in spec:
            put(spec["database"]["connection"]["secretRef"], self.database_url())
        for hook in spec.get("notify") or []:
            if "urlSecretRef" in hook:
                put(hook["urlSecretRef"], self.hooks[hook["name"]].url)
        for check in (spec.get("verification") or {}).get("checks") or []:
            for env in (check.get("job") or {}).get("env") or []:
                if "secretKeyRef" in env:
                    put(env["secretKeyRef"], self.smoke_token)
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.namespace},
                "stringData": data,
            }
            for name, data in secrets_.items()
        ]
        claim = self._claim()
        if claim:
            objects += bound_claim_objects(
                self.namespace, claim, self.volume, self.backups, "ReadOnlyMany"
            )
        return objects

    def install(self, api: client.ApiClient) -> list[str]:
        """Creates `cluster_objects` (replacing a volume an earlier run left); returns what was
        created, for a person to read (never a value)."""
        core = client.CoreV1Api(api)
        created = []
        for obj in self.cluster_objects():
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Secret":
                core.create_namespaced_secret(self.namespace, obj)
                created.append(f"Secret {name} ({', '.join(sorted(obj['stringData']))})")
            elif kind == "PersistentVolume":
                self.uninstall(api)
                core.create_persistent_volume(obj)
                created.append(f"PersistentVolume {name} (hostPath {self.backups})")
            else:
                core.create_namespaced_persistent_volume_claim(self.namespace, obj)
                created.append(f"PersistentVolumeClaim {name}, bound to it")
        return created

    def uninstall(self, api: client.ApiClient) -> None:
        """Deletes the PersistentVolume, the one cluster-scoped object (and waits until it is
        gone, so that the next run may create it again); the rest goes with the namespace."""
        if not self.volume:
            return
        core = client.CoreV1Api(api)
        try:
            core.delete_persistent_volume(self.volume)
        except ApiException as error:
            if error.status != 404:
                raise
            return

        def gone() -> bool:
            try:
                core.read_persistent_volume(self.volume)
            except ApiException as error:
                if error.status == 404:
                    return True
                raise
            return False

        wait_until(gone, timeout=30, what=f"PersistentVolume {self.volume} deleted")

    # --- what they received

    def smoke_calls(self) -> list[Hit]:
        """The smoke test's calls to the backend's smoke endpoint."""
        site = self.sites["backend"]
        with site.lock:
            return [h for h in site.hits if h.path.startswith("/api/smoke/")]

    def received(self) -> dict[str, Any]:
        """What the stand-ins got, as plain data: the CDN's requests, each webhook's accepted
        messages, the smoke test's calls and the database's tables now."""
        assert self.cdn is not None and self.db is not None
        notifications = {}
        for name, hook in self.hooks.items():
            notifications[name] = {"kind": hook.kind, "messages": hook.messages}
        return {
            "cdn": {
                "apiBase": self.cdn.api_base,
                "requests": [
                    {"method": r.method, "path": r.path, "status": r.status, "body": r.json}
                    for r in self.cdn.received()
                ],
                "violations": list(self.cdn.violations),
            },
            "notifications": notifications,
            "smoke": [h.__dict__ for h in self.smoke_calls()],
            "database": {
                "address": f"{self.db.server.host}:{self.db.server.port}",
                "name": self.db.name,
                "chosen": CHOSEN_DUMP,
                "preGolive": self.seeded.pre_golive,
                "badRelease": self.seeded.bad_release,
                "now": contents(self.db),
            },
        }

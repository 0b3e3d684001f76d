"""Typed views of a RollbackRequest: the runbook's vocabulary, parsed once from the raw object.

The API server has already validated the spec (CRD schema and CEL rules), so parsing here only
gives it names and types; it does not re-validate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from rollback_operator import GROUP

ABORT_ANNOTATION = f"{GROUP}/abort"
APPROVE_ANNOTATION = f"{GROUP}/approve"
APPROVED_BY_ANNOTATION = f"{GROUP}/approved-by"
# Who created the request: set by the API server at admission from the user's own name
# (manifests/common/approvals.yaml), never by the requester; nobody can change it.
REQUESTED_BY_ANNOTATION = f"{GROUP}/requested-by"
# Written by `kubectl rollback`: what `restore-traffic` put back by hand, and the request a
# `retry` was made from.
TRAFFIC_RESTORED_ANNOTATION = f"{GROUP}/traffic-restored"
RETRY_OF_ANNOTATION = f"{GROUP}/retry-of"
# A request runs once per name and spec (runonce.py): re-created by a GitOps sync, it ends at
# once. This annotation, with a reason not used before for that name and spec, runs it again.
RERUN_ANNOTATION = f"{GROUP}/rerun"
# Set by the operator on a request whose run is over and announced (handlers.py): its watch
# selects only requests without it, so finished requests cost the operator nothing.
FINISHED_LABEL = f"{GROUP}/finished"
# The key of the post-mortem in its ConfigMap (postmortem.py writes it).
POSTMORTEM_KEY = "postmortem.md"

# The longest name a RollbackRequest may have: the name is the value of the label
# `rollback.lawyershub.io/request` on the run's Jobs, their pods and its post-mortem ConfigMap,
# and a label value has at most 63 characters. The other names derived from it fit by
# construction (a Job's name is cut, `steps.jobs.job_name`; `<name>-postmortem` and an Event's
# `<name>.<12 hex>` are subdomains of up to 253). The CRD refuses a longer name on create.
MAX_REQUEST_NAME = 63


# The tag every reverted container is set to when the request names none (runbook §2.1).
DEFAULT_TARGET_TAG = "stable-last-known"

# The spec's optional parts, one per capability: a request without one skips its steps.
OPTIONAL_SECTIONS = ("cdn", "database", "verification", "monitoring", "notify")
# spec.gitops (read by rollback_operator.gitops): every request has it, defaulted.
SECTIONS_ALWAYS_READ = ("gitops",)


class Phase(StrEnum):
    PENDING = "Pending"
    QUEUED = "Queued"
    RUNNING = "Running"
    AWAITING_APPROVAL = "AwaitingApproval"
    MONITORING = "Monitoring"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABORTED = "Aborted"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED)


def ended(status: Mapping[str, Any]) -> bool:
    """Whether a request's run is over, its end announced too: between the terminal write and
    the post-mortem, outcome Event and notifications, status.announced is False."""
    terminal = Phase(status.get("phase", Phase.PENDING)).terminal
    return terminal and status.get("announced") is not False


class StepName(StrEnum):
    """The runbook's steps, in the order they run."""

    PREFLIGHT = "Preflight"
    SUSPEND_GITOPS = "SuspendGitOps"
    ENABLE_MAINTENANCE = "EnableMaintenance"
    PAUSE_AUTOSCALING = "PauseAutoscaling"
    REVERT_WORKLOADS = "RevertWorkloads"
    PURGE_CDN = "PurgeCDN"
    MIGRATE_DATABASE_DOWN = "MigrateDatabaseDown"
    RESTORE_DATABASE = "RestoreDatabase"
    VERIFY = "Verify"
    RESUME_AUTOSCALING = "ResumeAutoscaling"
    DISABLE_MAINTENANCE = "DisableMaintenance"
    MONITOR = "Monitor"
    REPORT = "Report"


STEP_ORDER: tuple[StepName, ...] = tuple(StepName)


class StepState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    ABORTED = "Aborted"

    @property
    def finished(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.SKIPPED)


@dataclass(frozen=True)
class SecretKeyRef:
    """A key of a Secret in the request's namespace: how the spec names every credential (the
    database URL, a CDN token, a webhook URL), so that none is ever written into the spec."""

    name: str
    key: str

    def __str__(self) -> str:
        return f"Secret {self.name} key {self.key}"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> SecretKeyRef:
        """`{name, key}`, as the spec writes a secretRef."""
        return cls(name=raw["name"], key=raw["key"])

    @classmethod
    def optional(cls, raw: Mapping[str, Any] | None) -> SecretKeyRef | None:
        """`parse`, for a reference the spec may leave out."""
        return None if not raw else cls.parse(raw)

    def env(self, variable: str) -> dict[str, Any]:
        """A container env var taken from this key: the only way a credential reaches a Job."""
        return {
            "name": variable,
            "valueFrom": {"secretKeyRef": {"name": self.name, "key": self.key}},
        }


@dataclass(frozen=True)
class BackendRef:
    """The maintenance Service; `port` is a number or a port name, exactly as written."""

    service: str
    port: int | str

    def as_ingress_backend(self) -> dict[str, Any]:
        port_key = "number" if isinstance(self.port, int) else "name"
        return {"service": {"name": self.service, "port": {port_key: self.port}}}


@dataclass(frozen=True)
class RouteSelection:
    """An HTTPRoute of the request's namespace, and the names of the rules to switch (None:
    every rule that sends traffic to a backend)."""

    name: str
    rules: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> RouteSelection:
        rules = raw.get("rules")
        return cls(name=raw["name"], rules=None if rules is None else tuple(rules))


@dataclass(frozen=True)
class Workload:
    deployment: str
    containers: tuple[str, ...] | None  # None: every container of the Deployment
    # None: the init containers whose image repository is one the request reverts; () none.
    init_containers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RollbackSpec:
    reason: str
    trigger: str
    dry_run: bool
    target_tag: str
    ingresses: tuple[str, ...]
    maintenance_backend: BackendRef
    hpas: tuple[str, ...] | None  # None: discover the HPAs scaling the listed Deployments
    workloads: tuple[Workload, ...]
    rollout_timeout_seconds: float
    # The HTTPRoutes (Gateway API) switched beside the Ingresses.
    http_routes: tuple[RouteSelection, ...] = ()
    # The optional sections (cdn, database, verification, monitoring, notify) as written, with
    # the CRD's defaults applied; each is given its types by the module of its steps.
    sections: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> RollbackSpec:
        traffic = spec["traffic"]
        backend = traffic["maintenanceBackend"]
        hpas = (spec.get("autoscaling") or {}).get("hpas")
        return cls(
            reason=spec["reason"],
            trigger=spec["trigger"],
            dry_run=bool(spec.get("dryRun", False)),
            target_tag=spec.get("targetTag", DEFAULT_TARGET_TAG),
            ingresses=tuple(traffic.get("ingresses") or ()),
            http_routes=tuple(RouteSelection.parse(r) for r in traffic.get("httpRoutes") or ()),
            maintenance_backend=BackendRef(service=backend["service"], port=backend["port"]),
            hpas=None if hpas is None else tuple(hpas),
            workloads=tuple(
                Workload(
                    deployment=w["deployment"],
                    containers=None if w.get("containers") is None else tuple(w["containers"]),
                    init_containers=None
                    if w.get("initContainers") is None
                    else tuple(w["initContainers"]),
                )
                for w in spec["workloads"]
            ),
            rollout_timeout_seconds=parse_duration(spec.get("rolloutTimeout", "10m")),
            sections={
                k: spec[k]
                for k in OPTIONAL_SECTIONS + SECTIONS_ALWAYS_READ
                if spec.get(k) is not None
            },
        )

    @property
    def deployments(self) -> tuple[str, ...]:
        return tuple(w.deployment for w in self.workloads)

    @property
    def route_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.http_routes)

    def route(self, name: str) -> RouteSelection:
        return next(r for r in self.http_routes if r.name == name)


@dataclass(frozen=True)
class Targets:
    """The objects a request touches, in the spec's order; two requests sharing any of them run
    one after the other. From the spec before Preflight; Preflight adds the HPAs it discovered
    and records the whole in status.targets, which the steps then work on."""

    ingresses: tuple[str, ...] = ()
    deployments: tuple[str, ...] = ()
    hpas: tuple[str, ...] = ()
    http_routes: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: RollbackSpec) -> Targets:
        return cls(spec.ingresses, spec.deployments, spec.hpas or (), spec.route_names)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> Targets | None:
        if raw is None:
            return None
        ingresses, deployments, hpas = (
            tuple(raw.get(kind) or ()) for kind in ("ingresses", "deployments", "hpas")
        )
        return cls(ingresses, deployments, hpas, tuple(raw.get("httpRoutes") or ()))

    def to_dict(self) -> dict[str, list[str]]:
        written = {
            "ingresses": list(self.ingresses),
            "deployments": list(self.deployments),
            "hpas": list(self.hpas),
        }
        if self.http_routes:
            written["httpRoutes"] = list(self.http_routes)
        return written

    def claim_keys(self) -> list[tuple[str, str]]:
        return (
            [("Ingress", n) for n in sorted(set(self.ingresses))]
            + [("HTTPRoute", n) for n in sorted(set(self.http_routes))]
            + [("Deployment", n) for n in sorted(set(self.deployments))]
            + [("HorizontalPodAutoscaler", n) for n in sorted(set(self.hpas))]
        )


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `90s`, `10m` or `1h30m` (the CRD checked its form)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


class SpecSection:
    """An optional section of the spec, typed by the module of its steps: `parse(raw)` is the
    section as written, `of(spec)` the request's (None when the request has none)."""

    SPEC_KEY: ClassVar[str]  # its key in the spec, and in RollbackSpec.sections

    @classmethod
    def parse(cls, raw: Any) -> Self:
        raise NotImplementedError

    @classmethod
    def of(cls, spec: RollbackSpec) -> Self | None:
        raw = spec.sections.get(cls.SPEC_KEY)
        return None if raw is None else cls.parse(raw)

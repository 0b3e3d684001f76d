"""The cluster admins' settings (a RollbackPolicy named `default`), typed, and how the two
levels combine. Pure: the reader that fetches the objects lives in `admin_policy_reader`.

Runbook §3 gives the restore to the DBA and the sign-off to QA: who must approve is therefore
not the requester's choice. It is set by admins in objects the requester cannot write, one per
application namespace and one cluster-wide (in the operator's namespace), and the request may
only ask for more. The same objects carry the allowlists of Job images and outbound hosts.

How the levels combine (`effective`):
- a step waits for an approval if either level names it;
- the groups that may approve it are the namespace's where the namespace names the step,
  else the cluster's (`approvals`, what messages name first); and, as the API server judges
  each level on its own (one ValidatingAdmissionPolicyBinding per level), the approver must
  also be a member of one group of every other level that names it and of the step's base
  groups (`DEFAULT_GROUPS`, the admission policy's own): `approval_layers`. A namespace can
  narrow who approves, never widen it;
- an image or host must be allowed by every level that has an allowlist;
- a level whose object has no `approvals` leaves them to the other; neither sets them: the
  default's;
- nothing configured anywhere: `DEFAULT_POLICY` (a DBA approves the restore and the
  migrate-down; nothing else is restricted).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rollback_operator.model import StepName

# The steps a person may have to approve, in runbook order.
APPROVABLE: tuple[StepName, ...] = (
    StepName.MIGRATE_DATABASE_DOWN,
    StepName.RESTORE_DATABASE,
    StepName.VERIFY,
)
POLICY_NAME = "default"  # the one RollbackPolicy read, in each namespace
KIND = "RollbackPolicy"
PLURAL = "rollbackpolicies"
DBA = "dba"
QA = "qa"

# Where a step's approval requirement comes from, for the ledger's "why".
FROM_DEFAULT = "the built-in default"
FROM_CLUSTER = "the cluster-wide RollbackPolicy"
FROM_NAMESPACE = "the namespace's RollbackPolicy"
FROM_REQUEST = "the request"


@dataclass(frozen=True)
class AdminPolicy:
    """Which steps need whose approval, and what images and hosts a request may use.

    `allowed_images` and `allowed_hosts` are the patterns as one level wrote them; the
    `*_layers` hold every level's non-empty list, and each must allow (`allows_image`,
    `allows_host`), so that a namespace can narrow the cluster's allowlist, never widen it.
    `origins` says, per step, which level asks for its approval.
    """

    approvals: Mapping[StepName, tuple[str, ...]]
    allowed_images: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allowed_images_layers: tuple[tuple[str, ...], ...] | None = None
    allowed_hosts_layers: tuple[tuple[str, ...], ...] | None = None
    origins: Mapping[StepName, str] = field(default_factory=dict)
    # Per step, every list of groups of which the approver must be in one (see the docstring).
    approval_layers: Mapping[StepName, tuple[tuple[str, ...], ...]] | None = None
    # False when the object has no `approvals` at all: it then leaves them to the other level
    # (or the default), so that an object written only for its allowlists drops no gate.
    sets_approvals: bool = True

    def __post_init__(self) -> None:
        if self.approval_layers is None:
            by_step = {step: _layers(step, (groups,)) for step, groups in self.approvals.items()}
            object.__setattr__(self, "approval_layers", by_step)
        if self.allowed_images_layers is None:
            layers = (self.allowed_images,) if self.allowed_images else ()
            object.__setattr__(self, "allowed_images_layers", layers)
        if self.allowed_hosts_layers is None:
            layers = (self.allowed_hosts,) if self.allowed_hosts else ()
            object.__setattr__(self, "allowed_hosts_layers", layers)

    @classmethod
    def parse(cls, raw_spec: Mapping[str, Any] | None, origin: str = FROM_NAMESPACE) -> AdminPolicy:
        """A RollbackPolicy's spec, as the CRD admits it (an unknown step is ignored: the CRD
        refuses it, and an older operator must not fail on a newer CRD's step)."""
        raw = raw_spec or {}
        approvals: dict[StepName, tuple[str, ...]] = {}
        for entry in raw.get("approvals") or ():
            try:
                step = StepName(entry.get("step"))
            except ValueError:
                continue
            groups = tuple(str(g) for g in entry.get("groups") or () if g)
            if step in APPROVABLE and groups:
                approvals[step] = groups
        return cls(
            approvals=approvals,
            allowed_images=tuple(str(p) for p in raw.get("allowedImages") or () if p),
            allowed_hosts=tuple(str(p) for p in raw.get("allowedHosts") or () if p),
            origins={step: origin for step in approvals},
            sets_approvals=raw.get("approvals") is not None,
        )

    def requires(self, step: StepName) -> bool:
        """Whether `step` waits for an approval under these settings."""
        return step in self.approvals

    def groups(self, step: StepName) -> tuple[str, ...]:
        """The groups whose members may approve `step` (empty: it takes no approval here)."""
        return self.approvals.get(step, ())

    def allows_image(self, image: str) -> bool:
        """Whether every level that has an image allowlist lets a Job run `image`."""
        return all(_matches(image, layer) for layer in self.allowed_images_layers or ())

    def allows_host(self, host: str) -> bool:
        """Whether every level that has a host allowlist lets the operator contact `host`
        (compared without case, as DNS does)."""
        host = host.lower().rstrip(".")
        return all(
            _matches(host, tuple(p.lower() for p in layer))
            for layer in self.allowed_hosts_layers or ()
        )

    def describe(self) -> str:
        """The approvals, for the ledger: "RestoreDatabase by dba (the built-in default)"."""
        if not self.approvals:
            return "no step needs an approval"
        return "; ".join(
            f"{step} by a member of {', '.join(self.approvals[step])} "
            f"({self.origins.get(step, FROM_DEFAULT)})"
            for step in APPROVABLE
            if step in self.approvals
        )


# The base groups of each step: the admission policy's own `approvers`, which every approver
# belongs to, and who approves a step only the request asks to approve.
DEFAULT_GROUPS: Mapping[StepName, tuple[str, ...]] = {
    StepName.RESTORE_DATABASE: (DBA,),
    StepName.MIGRATE_DATABASE_DOWN: (DBA,),
    StepName.VERIFY: (QA,),
}


def _layers(step: StepName, named: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    """The base groups of `step`, then each level's, without repeats."""
    out: list[tuple[str, ...]] = []
    for groups in (DEFAULT_GROUPS.get(step, (DBA,)), *named):
        if groups and groups not in out:
            out.append(groups)
    return tuple(out)


DEFAULT_POLICY = AdminPolicy(
    approvals={StepName.RESTORE_DATABASE: (DBA,), StepName.MIGRATE_DATABASE_DOWN: (DBA,)},
    origins={
        StepName.RESTORE_DATABASE: FROM_DEFAULT,
        StepName.MIGRATE_DATABASE_DOWN: FROM_DEFAULT,
    },
)


def effective(cluster: AdminPolicy | None, namespace: AdminPolicy | None) -> AdminPolicy:
    """The settings in force in a namespace, from the cluster-wide object and the
    namespace's own (None: that object does not exist). Neither: `DEFAULT_POLICY`."""
    if cluster is None and namespace is None:
        return DEFAULT_POLICY
    levels = [p for p in (cluster, namespace) if p is not None]
    deciding = [p for p in levels if p.sets_approvals] or [DEFAULT_POLICY]
    approvals: dict[StepName, tuple[str, ...]] = {}
    origins: dict[StepName, str] = {}
    named: dict[StepName, list[tuple[str, ...]]] = {}
    for level in deciding:  # the namespace last: its groups win for the steps it names
        for step, groups in level.approvals.items():
            approvals[step] = groups
            origins[step] = level.origins.get(step, FROM_NAMESPACE)
            named.setdefault(step, []).append(groups)
    narrowest = levels[-1]
    return AdminPolicy(
        approvals={step: approvals[step] for step in APPROVABLE if step in approvals},
        allowed_images=narrowest.allowed_images or levels[0].allowed_images,
        allowed_hosts=narrowest.allowed_hosts or levels[0].allowed_hosts,
        allowed_images_layers=tuple(
            layer for p in levels for layer in p.allowed_images_layers or ()
        ),
        allowed_hosts_layers=tuple(layer for p in levels for layer in p.allowed_hosts_layers or ()),
        origins=origins,
        approval_layers={step: _layers(step, tuple(named[step])) for step in approvals},
    )


@dataclass(frozen=True)
class Gate:
    """Whether a step waits for an approval in one run, who may give it, and why."""

    step: StepName
    layers: tuple[tuple[str, ...], ...]  # a member of one group of each
    reason: str  # which level asked: an admin setting, or the request itself

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups named first: the narrowest level's."""
        return self.layers[-1]

    def who(self) -> str:
        """ "a member of group dba" / "a member of group payments-dba, also of group dba"."""
        first, *also = reversed(self.layers)
        text = f"a member of group {' or '.join(first)}"
        return text + "".join(f", also of group {' or '.join(more)}" for more in also)


def gate(policy: AdminPolicy, step: StepName, requested: bool) -> Gate | None:
    """The approval `step` waits for: the admins' requirement, or the request's own
    (`requested`: spec ...requireApproval: true) with the admins' groups or the default ones.
    A request can add a gate, never remove one: `requested` False changes nothing."""
    if policy.requires(step):
        layers = (policy.approval_layers or {}).get(step) or _layers(step, (policy.groups(step),))
        return Gate(step, layers, policy.origins.get(step, FROM_DEFAULT))
    if requested:
        return Gate(step, _layers(step, ()), FROM_REQUEST)
    return None


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)

"""Who else reconciles the objects a rollback changes, and how to stop them undoing it.

Argo CD (an Application with self-heal or automated sync), Flux (a Kustomization or a
HelmRelease, which correct drift every interval) and KEDA (a ScaledObject, which owns the HPA
it made) each put back what the rollback changed: the bad image, the original Ingress
backends, the HPA's behavior. Preflight finds the managing objects from the marks each tool
leaves on what it manages; SuspendGitOps stops them before the first change, saving what it
changes; `kubectl rollback resume-gitops` puts that back once Git no longer holds the bad
release.

Marks read:
- Argo CD: the annotation `argocd.argoproj.io/tracking-id` (Argo CD 3's default,
  `<app>:<group>/<kind>:<namespace>/<name>`, `<app>` being `<namespace>_<name>` for an
  Application outside Argo CD's namespace), and the label `app.kubernetes.io/instance` of older
  setups. That label is common (Helm charts set it), so it counts only when an Application of
  that name exists in Argo CD's namespace.
- Flux: the labels `kustomize.toolkit.fluxcd.io/name|namespace` and
  `helm.toolkit.fluxcd.io/name|namespace`.
- KEDA: an HPA whose controller owner is a `ScaledObject`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from rollback_operator.kube import ApiError, Kube

JSON_PATCH = "application/json-patch+json"
TRACKING_ID = "argocd.argoproj.io/tracking-id"
INSTANCE_LABEL = "app.kubernetes.io/instance"
KEDA_PAUSED = "autoscaling.keda.sh/paused"
FLUX_LABELS = {
    "Kustomization": "kustomize.toolkit.fluxcd.io",
    "HelmRelease": "helm.toolkit.fluxcd.io",
}
# kind: (apiVersion, plural)
API = {
    "Kustomization": ("kustomize.toolkit.fluxcd.io/v1", "kustomizations"),
    "HelmRelease": ("helm.toolkit.fluxcd.io/v2", "helmreleases"),
    "Application": ("argoproj.io/v1alpha1", "applications"),
    "ScaledObject": ("keda.sh/v1alpha1", "scaledobjects"),
}
# Marks are written by whoever may edit the marked object, and their names end up in API paths:
# only well-formed names are read, and only a manager whose own status lists the target counts.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_GROUPS = {
    "Deployment": "apps",
    "Ingress": "networking.k8s.io",
    "HTTPRoute": "gateway.networking.k8s.io",
    "HorizontalPodAutoscaler": "autoscaling",
}


@dataclass(frozen=True)
class GitOpsSpec:
    """spec.gitops: what to do about a tool that would undo the rollback (default Suspend), and
    where Argo CD keeps its Applications (default argocd)."""

    policy: str = "Suspend"
    argocd_namespace: str = "argocd"

    @classmethod
    def of(cls, spec: dict[str, Any] | None) -> GitOpsSpec:
        """From a spec, or a RollbackSpec's sections (both hold it under "gitops")."""
        raw = (spec or {}).get("gitops") or {}
        return cls(
            policy=raw.get("policy", "Suspend"),
            argocd_namespace=raw.get("argoCDNamespace", "argocd"),
        )


@dataclass(frozen=True)
class Manager:
    """One object that reconciles some of the run's targets: what it is, and which targets."""

    kind: str
    namespace: str
    name: str
    manages: tuple[str, ...]  # "Deployment/web", "Ingress/web", "HorizontalPodAutoscaler/web"

    @property
    def key(self) -> str:
        """Its key in status.saved.gitops."""
        return f"{self.kind}/{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} (manages {', '.join(self.manages)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "manages": list(self.manages),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manager:
        return cls(raw["kind"], raw["namespace"], raw["name"], tuple(raw.get("manages") or ()))


def path(kind: str, namespace: str, name: str) -> str:
    api_version, plural = API[kind]
    return f"/apis/{api_version}/namespaces/{namespace}/{plural}/{name}"


def read(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(path(kind, namespace, name))


def _marks(
    obj: dict[str, Any], namespace: str, argocd_namespace: str
) -> list[tuple[str, str, str, bool]]:
    """(kind, namespace, name, certain) of every manager the object's marks name; `certain` is
    False for the instance label, which counts only if that Application exists. Marks whose
    names are not Kubernetes names are left out."""
    meta = obj.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    found: list[tuple[str, str, str, bool]] = []
    tracking = annotations.get(TRACKING_ID, "")
    if ":" in tracking:
        app = tracking.split(":", 1)[0]
        app_ns, _, app_name = app.rpartition("_")
        found.append(("Application", app_ns or argocd_namespace, app_name, True))
    elif labels.get(INSTANCE_LABEL):
        found.append(("Application", argocd_namespace, labels[INSTANCE_LABEL], False))
    for kind, prefix in FLUX_LABELS.items():
        name = labels.get(f"{prefix}/name")
        if name:
            found.append((kind, labels.get(f"{prefix}/namespace") or namespace, name, True))
    for owner in meta.get("ownerReferences") or []:
        if owner.get("kind") == "ScaledObject" and owner.get("apiVersion", "").startswith(
            "keda.sh/"
        ):
            found.append(("ScaledObject", namespace, owner.get("name", ""), True))
    return [m for m in found if _NAMESPACE.match(m[1]) and _NAME.match(m[2])]


def lists(kind: str, manager: dict[str, Any], target_kind: str, target: dict[str, Any]) -> bool:
    """Whether the manager's own record says it manages the target: a Kustomization's
    inventory, an Application's status.resources, a HelmRelease's release (history) named in
    the target's Helm annotations, a ScaledObject whose uid the HPA's owner reference carries.
    A mark alone is not enough: anyone who may edit the target may write one."""
    meta, status = target["metadata"], manager.get("status") or {}
    name, namespace, group = meta["name"], meta.get("namespace", ""), _GROUPS[target_kind]
    if kind == "Kustomization":
        entries = (status.get("inventory") or {}).get("entries") or []
        return f"{namespace}_{name}_{group}_{target_kind}" in {e.get("id") for e in entries}
    if kind == "Application":
        return any(
            (r.get("group") or "") == group
            and r.get("kind") == target_kind
            and r.get("name") == name
            and r.get("namespace") == namespace
            for r in status.get("resources") or []
        )
    if kind == "HelmRelease":
        annotations = meta.get("annotations") or {}
        release = annotations.get("meta.helm.sh/release-name")
        release_ns = annotations.get("meta.helm.sh/release-namespace")
        return bool(release) and any(
            h.get("name") == release and h.get("namespace") == release_ns
            for h in status.get("history") or []
        )
    uid = (manager.get("metadata") or {}).get("uid")
    return any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])


def detect(
    kube: Kube, namespace: str, objects: list[tuple[str, dict[str, Any]]], argocd_namespace: str
) -> tuple[list[Manager], list[str], list[str]]:
    """The managers of `objects` ((kind, object) as read): each one a mark names, read, that
    lists the target as its own. Then the problems (a manager a certain mark names that cannot
    be found or read) and the marks not borne out (the manager does not list the target: it
    would not undo the rollback, and is not touched)."""
    manages: dict[tuple[str, str, str], list[str]] = {}
    problems: list[str] = []
    unconfirmed: list[str] = []
    found: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for kind, obj in objects:
        target = f"{kind}/{obj['metadata']['name']}"
        for m_kind, m_ns, m_name, certain in _marks(obj, namespace, argocd_namespace):
            key = (m_kind, m_ns, m_name)
            if key not in found:
                try:
                    found[key] = read(kube, m_kind, m_ns, m_name)
                except ApiError as error:
                    problems.append(f"{m_kind} {m_ns}/{m_name} (marked on {target}): {error}")
                    found[key] = None
                    continue
                if found[key] is None and certain:
                    problems.append(
                        f"{target} is marked as managed by {m_kind} {m_ns}/{m_name}, which was "
                        "not found"
                        + (" (set spec.gitops.argoCDNamespace?)" if m_kind == "Application" else "")
                    )
            manager = found[key]
            if manager is None:
                continue
            if not lists(m_kind, manager, kind, obj):
                unconfirmed.append(f"{target} (marked for {m_kind} {m_ns}/{m_name})")
            elif target not in manages.setdefault(key, []):
                manages[key].append(target)
    managers = [Manager(k, ns, n, tuple(t)) for (k, ns, n), t in manages.items() if t]
    return sorted(managers, key=lambda m: m.key), problems, unconfirmed


# --- suspending, and putting back


def saved_state(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What SuspendGitOps changes on the manager, as it is now: recorded before the change."""
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    if kind in FLUX_LABELS:
        out: dict[str, Any] = {"suspend": bool(spec.get("suspend", False))}
        revision = (obj.get("status") or {}).get("lastAppliedRevision")
        if revision:
            out["revision"] = revision  # the source revision that carried the bad release
        return out
    if kind == "Application":
        policy = spec.get("syncPolicy")
        return {} if policy is None else {"syncPolicy": copy.deepcopy(policy)}
    paused = (meta.get("annotations") or {}).get(KEDA_PAUSED)
    return {} if paused is None else {"paused": paused}


def is_suspended(kind: str, obj: dict[str, Any]) -> bool:
    """Whether the manager no longer undoes the rollback (by our change or anyone's)."""
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    if kind in FLUX_LABELS:
        return spec.get("suspend") is True
    if kind == "Application":
        return not (spec.get("syncPolicy") or {}).get("automated")
    return (meta.get("annotations") or {}).get(KEDA_PAUSED) == "true"


def _guarded(obj: dict[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A JSON patch that applies only to the object as read: a newer edit fails it (409/422)."""
    version = obj["metadata"]["resourceVersion"]
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, *ops]


def suspend_patch(kind: str, obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch that stops the manager undoing the rollback; None when it already does
    not. Argo CD: `syncPolicy.automated` removed (automated sync and self-heal off, the rest of
    syncPolicy kept); Flux: `spec.suspend: true`; KEDA: the `autoscaling.keda.sh/paused`
    annotation."""
    if is_suspended(kind, obj):
        return None
    if kind in FLUX_LABELS:
        return _guarded(obj, [{"op": "add", "path": "/spec/suspend", "value": True}])
    if kind == "Application":
        return _guarded(obj, [{"op": "remove", "path": "/spec/syncPolicy/automated"}])
    ops: list[dict[str, Any]] = []
    if not (obj["metadata"].get("annotations")):
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {}})
    ops.append(
        {"op": "add", "path": f"/metadata/annotations/{_escape(KEDA_PAUSED)}", "value": "true"}
    )
    return _guarded(obj, ops)


def resume_patch(
    kind: str, obj: dict[str, Any], saved: dict[str, Any]
) -> tuple[list[dict[str, Any]] | None, str]:
    """The JSON patch that puts back exactly what was saved, and what it does (or why nothing
    is done: already back, or someone changed the setting since: their change is newer)."""
    spec, meta = obj.get("spec") or {}, obj.get("metadata") or {}
    if kind in FLUX_LABELS:
        if spec.get("suspend") is not True:
            return None, "not suspended any more, left as is"
        if saved.get("suspend"):
            return None, "was suspended before the run, left suspended"
        return _guarded(obj, [{"op": "add", "path": "/spec/suspend", "value": False}]), (
            "spec.suspend back to false"
        )
    if kind == "Application":
        current, original = spec.get("syncPolicy"), saved.get("syncPolicy")
        if current == original:
            return None, "syncPolicy already as saved"
        if (current or {}).get("automated"):
            return None, "automated sync was turned on again since, left as is"
        op = {"op": "add", "path": "/spec/syncPolicy", "value": original}
        if original is None:
            op = {"op": "remove", "path": "/spec/syncPolicy"}
        return _guarded(obj, [op]), "syncPolicy restored as saved"
    annotations = meta.get("annotations") or {}
    if annotations.get(KEDA_PAUSED) != "true":
        return None, "not paused any more, left as is"
    where = f"/metadata/annotations/{_escape(KEDA_PAUSED)}"
    if saved.get("paused") == "true":
        return None, "was paused before the run, left paused"
    if saved.get("paused") is None:
        return _guarded(obj, [{"op": "remove", "path": where}]), "pause annotation removed"
    op = {"op": "replace", "path": where, "value": saved["paused"]}
    return _guarded(obj, [op]), f"pause annotation back to {saved['paused']!r}"


def keda_paused(saved: dict[str, Any], hpa: str) -> str | None:
    """The ScaledObject (`namespace/name`) that SuspendGitOps paused and that owns HPA `hpa`,
    from status.saved.gitops; None if there is none. A paused ScaledObject holds the replicas
    and KEDA deletes its HPA (recreating it once unpaused): the HPA is then frozen by KEDA
    itself, and its absence is no sign of someone else at work."""
    for record in saved.values():
        if record.get("kind") == "ScaledObject" and (
            f"HorizontalPodAutoscaler/{hpa}" in (record.get("manages") or [])
        ):
            return f"{record['namespace']}/{record['name']}"
    return None


def _escape(key: str) -> str:
    """A JSON pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def hand_commands(manager: Manager) -> str:
    """What an SRE runs to suspend a manager by hand (the Refuse policy's message)."""
    m = manager
    if m.kind == "Kustomization":
        return f"flux suspend kustomization {m.name} -n {m.namespace}"
    if m.kind == "HelmRelease":
        return f"flux suspend helmrelease {m.name} -n {m.namespace}"
    if m.kind == "Application":
        return (
            f"kubectl patch applications.argoproj.io {m.name} -n {m.namespace} --type json "
            '-p \'[{"op":"remove","path":"/spec/syncPolicy/automated"}]\''
        )
    return (
        f"kubectl annotate scaledobjects.keda.sh {m.name} -n {m.namespace} "
        f"{KEDA_PAUSED}=true --overwrite"
    )


def source_unchanged(kube: Kube, manager: Manager, saved: dict[str, Any], bad: set[str]) -> str:
    """Why the manager's source still renders the bad release, as far as its status tells;
    empty when it does not (or cannot be told).

    Argo CD lists the images it renders (status.summary.images): any bad image there refuses.
    Flux records the source revision it last applied: a source (GitRepository, OCIRepository,
    Bucket) still at that revision has not been given the revert.
    """
    obj = read(kube, manager.kind, manager.namespace, manager.name) or {}
    status = obj.get("status") or {}
    if manager.kind == "Application":
        rendered = set((status.get("summary") or {}).get("images") or ())
        still = sorted(rendered & bad)
        return f"it still renders {', '.join(still)}" if still else ""
    if manager.kind != "Kustomization" or not saved.get("revision"):
        return ""
    ref = (obj.get("spec") or {}).get("sourceRef") or {}
    kinds = {"GitRepository": "gitrepositories", "OCIRepository": "ocirepositories"}
    plural = kinds.get(ref.get("kind", ""))
    if not plural:
        return ""
    source = kube.get(
        f"/apis/source.toolkit.fluxcd.io/v1/namespaces/{ref.get('namespace') or manager.namespace}"
        f"/{plural}/{ref.get('name')}"
    )
    revision = ((source or {}).get("status") or {}).get("artifact", {}).get("revision")
    if revision == saved["revision"]:
        return f"its {ref['kind']} {ref.get('name')} still serves revision {revision}"
    return ""

"""Image references: swap the tag, keep everything else (registry, port, path); drop a digest.

And which containers of a Deployment's pod template a request reverts: the listed containers
(every one when none is listed), and the listed init containers or, when the workload lists
none, every init container whose image repository is one the request reverts (a `migrate`
init container on the bad release's image would otherwise run the bad release's migrations in
every pod started after the rollback).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rollback_operator.model import Workload

CONTAINERS = "containers"
INIT_CONTAINERS = "initContainers"


def repository(image: str) -> str:
    """`registry:5000/team/app:1.2@sha256:...` -> `registry:5000/team/app`."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    # A colon before the last slash is a registry port, not a tag.
    return name[:colon] if colon > last_slash else name


def with_tag(image: str, tag: str) -> str:
    return f"{repository(image)}:{tag}"


def pod_images(deployment: Mapping[str, Any], kind: str = CONTAINERS) -> dict[str, str]:
    """`{name: image}` of the pod template's containers, or of its init containers."""
    pod = deployment.get("spec", {}).get("template", {}).get("spec", {})
    return {c["name"]: c["image"] for c in pod.get(kind) or []}


def selected_images(deployment: Mapping[str, Any], workload: Workload) -> dict[str, str]:
    """The containers the workload reverts: those listed, or every one."""
    return {
        name: image
        for name, image in pod_images(deployment).items()
        if workload.containers is None or name in workload.containers
    }


def reverted_repositories(
    deployments: Iterable[tuple[Workload, Mapping[str, Any]]],
) -> frozenset[str]:
    """The image repositories of every container the request reverts, in every Deployment."""
    return frozenset(
        repository(image)
        for workload, deployment in deployments
        for image in selected_images(deployment, workload).values()
    )


def selected_init_images(
    deployment: Mapping[str, Any], workload: Workload, repositories: frozenset[str]
) -> dict[str, str]:
    """The init containers the workload reverts: those listed, or, when it lists none, those
    whose image repository is in `repositories` (see `reverted_repositories`)."""
    return {
        name: image
        for name, image in pod_images(deployment, INIT_CONTAINERS).items()
        if (
            name in workload.init_containers
            if workload.init_containers is not None
            else repository(image) in repositories
        )
    }


def running_images(
    deployment: Mapping[str, Any], kind: str, wanted: Iterable[str]
) -> dict[str, str]:
    """What the Deployment's containers (or init containers) named in `wanted` now run; ""
    for one that is not there."""
    images = pod_images(deployment, kind)
    return {name: images.get(name, "") for name in wanted}


@dataclass(frozen=True)
class SelectedImages:
    """A workload's selected containers and init containers, `{name: image}` each: what
    RevertWorkloads saves in status.saved.deployments, and Verify and the post-mortem read."""

    containers: dict[str, str]
    init: dict[str, str]

    @classmethod
    def of(
        cls, deployment: Mapping[str, Any], workload: Workload, repositories: frozenset[str]
    ) -> SelectedImages:
        return cls(
            selected_images(deployment, workload),
            selected_init_images(deployment, workload, repositories),
        )

    @classmethod
    def saved(cls, record: Mapping[str, Any]) -> SelectedImages:
        """From a status.saved.deployments record (one written before init containers were
        reverted has no initImages)."""
        return cls(dict(record["images"]), dict(record.get("initImages") or {}))

    def record(self, restarted_at: str) -> dict[str, Any]:
        """The status.saved.deployments record: initImages only when there are some."""
        out: dict[str, Any] = {"images": dict(self.containers)}
        if self.init:
            out["initImages"] = dict(self.init)
        out["restartedAt"] = restarted_at
        return out

    def retagged(self, tag: str) -> SelectedImages:
        return SelectedImages(
            {c: with_tag(i, tag) for c, i in self.containers.items()},
            {c: with_tag(i, tag) for c, i in self.init.items()},
        )

    def by_kind(self) -> list[tuple[str, str, str, str]]:
        """`(kind, name, label, image)` for each, containers first; an init container's label
        is `<name> (init)`, as plans, messages and the post-mortem show it."""
        return [(CONTAINERS, n, n, i) for n, i in self.containers.items()] + [
            (INIT_CONTAINERS, n, f"{n} (init)", i) for n, i in self.init.items()
        ]

    def labelled(self) -> list[tuple[str, str]]:
        """`(label, image)` for each, as `by_kind` labels them."""
        return [(label, image) for _, _, label, image in self.by_kind()]

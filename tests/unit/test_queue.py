"""One run per target (safety rule 5): who waits for whom, and that nobody waits forever."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from rollback_operator.model import Phase, RollbackSpec, Targets
from rollback_operator.queue import Claim, ClaimKey, blocker, claims

NS = "lawyershub"
T0 = "2026-01-10T03:00:00Z"
T1 = "2026-01-10T03:00:01Z"
T2 = "2026-01-10T03:00:02Z"


def spec(
    *,
    ingresses: Iterable[str] = ("site",),
    deployments: Iterable[str] = ("backend",),
    hpas: Iterable[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "reason": "error rate",
        "trigger": "ErrorRate",
        "dryRun": dry_run,
        "traffic": {
            "ingresses": list(ingresses),
            "maintenanceBackend": {"service": "maint", "port": 80},
        },
        "workloads": [{"deployment": d} for d in deployments],
    }
    if hpas is not None:
        raw["autoscaling"] = {"hpas": list(hpas)}
    return raw


@dataclass(frozen=True)
class Request:
    name: str
    created: str
    phase: Phase
    spec: dict[str, Any]

    def claims(self) -> dict[ClaimKey, Claim]:
        return claims(NS, self.name, self.spec, {"phase": str(self.phase)}, self.created)

    def me(self) -> Claim:
        """The claim the daemon checks with (as handlers.py builds it: never `started`)."""
        return Claim(name=self.name, order=(self.created, self.name), started=False)

    def keys(self) -> list[ClaimKey]:
        """The keys the daemon looks up (as handlers.py computes them: from the spec)."""
        targets = Targets.of(RollbackSpec.parse(self.spec))
        return [(NS, kind, name) for kind, name in targets.claim_keys()]


def index(requests: Iterable[Request]) -> dict[ClaimKey, list[Claim]]:
    """What Kopf's index holds: for each key, the claims of every request holding it."""
    holders: dict[ClaimKey, list[Claim]] = {}
    for request in requests:
        for key, claim in request.claims().items():
            holders.setdefault(key, []).append(claim)
    return holders


def blocker_of(request: Request, requests: Iterable[Request]) -> str | None:
    return blocker(request.me(), request.keys(), index(requests))


def waits(request: Request, requests: Iterable[Request]) -> str | None:
    """Whom the request actually waits for: the engine queues only a request not yet started."""
    if request.phase not in (Phase.PENDING, Phase.QUEUED) or request.spec.get("dryRun"):
        return None
    return blocker_of(request, requests)


def test_claims_cover_ingresses_deployments_and_listed_hpas() -> None:
    """These are the objects two runs must not change at the same time."""
    held = claims(
        NS,
        "a",
        spec(ingresses=["site", "api"], deployments=["backend", "frontend"], hpas=["backend"]),
        {"phase": "Running"},
        T0,
    )
    assert sorted(held) == [
        (NS, "Deployment", "backend"),
        (NS, "Deployment", "frontend"),
        (NS, "HorizontalPodAutoscaler", "backend"),
        (NS, "Ingress", "api"),
        (NS, "Ingress", "site"),
    ]
    assert set(held.values()) == {Claim(name="a", order=(T0, "a"), started=True)}


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.AWAITING_APPROVAL, Phase.MONITORING])
def test_started_phases_mark_the_claim_started(phase: Phase) -> None:
    """A started run holds its objects against everyone, earlier or not."""
    held = claims(NS, "a", spec(), {"phase": str(phase)}, T0)
    assert all(c.started for c in held.values())


@pytest.mark.parametrize("status", [{}, {"phase": "Pending"}, {"phase": "Queued"}])
def test_a_request_not_started_claims_without_starting(status: dict[str, str]) -> None:
    """A brand-new request (no status at all) claims too, ordered by its creation."""
    held = claims(NS, "a", spec(), status, T0)
    assert held
    assert not any(c.started for c in held.values())


@pytest.mark.parametrize("phase", [Phase.SUCCEEDED, Phase.FAILED, Phase.ABORTED])
def test_terminal_requests_claim_nothing(phase: Phase) -> None:
    """A finished run, even a failed one, must not hold the next rollback back forever."""
    assert claims(NS, "a", spec(), {"phase": str(phase)}, T0) == {}


def test_dry_runs_claim_nothing() -> None:
    """A dry run changes nothing, so it must never delay a real rollback."""
    assert claims(NS, "a", spec(dry_run=True), {"phase": "Running"}, T0) == {}


def test_claims_are_per_namespace() -> None:
    """Objects of the same name in two namespaces are different objects."""
    a = claims("one", "a", spec(), {}, T0)
    b = claims("two", "b", spec(), {}, T0)
    assert not set(a) & set(b)


def test_the_earlier_request_goes_first() -> None:
    """Ordered by creationTimestamp: the later request waits, the earlier one does not."""
    first = Request("zeta", T0, Phase.PENDING, spec())
    second = Request("alpha", T1, Phase.PENDING, spec())
    both = [first, second]
    assert blocker_of(second, both) == "zeta"
    assert blocker_of(first, both) is None


def test_same_timestamp_is_ordered_by_name() -> None:
    """Two requests created in the same second still have one order, the same everywhere."""
    a = Request("a", T0, Phase.PENDING, spec())
    b = Request("b", T0, Phase.PENDING, spec())
    assert blocker_of(b, [a, b]) == "a"
    assert blocker_of(a, [a, b]) is None


def test_a_started_request_blocks_even_an_earlier_one() -> None:
    """A running rollback is never overtaken, whoever was created first."""
    earlier = Request("earlier", T0, Phase.PENDING, spec())
    running = Request("running", T1, Phase.RUNNING, spec())
    assert blocker_of(earlier, [earlier, running]) == "running"


def test_no_shared_object_no_wait() -> None:
    """Requests on different objects run in parallel."""
    a = Request("a", T0, Phase.RUNNING, spec(ingresses=["one"], deployments=["backend"]))
    b = Request("b", T1, Phase.PENDING, spec(ingresses=["two"], deployments=["frontend"]))
    assert blocker_of(b, [a, b]) is None


@pytest.mark.parametrize(
    "shared",
    [
        {"ingresses": ["site"], "deployments": ["x"]},
        {"ingresses": ["other"], "deployments": ["backend"]},
        {"ingresses": ["other"], "deployments": ["x"], "hpas": ["backend"]},
    ],
)
def test_any_shared_object_makes_the_later_request_wait(shared: dict[str, Any]) -> None:
    """One shared Ingress, Deployment or listed HPA is enough to serialise two runs."""
    a = Request("a", T0, Phase.RUNNING, spec(hpas=["backend"]))
    b = Request("b", T1, Phase.PENDING, spec(**shared))
    assert blocker_of(b, [a, b]) == "a"


def test_terminal_and_dry_run_requests_block_nobody() -> None:
    """Only live, unfinished requests hold objects."""
    done = Request("done", T0, Phase.FAILED, spec())
    dry = Request("dry", T0, Phase.RUNNING, spec(dry_run=True))
    mine = Request("mine", T1, Phase.PENDING, spec())
    assert blocker_of(mine, [done, dry, mine]) is None


def test_a_request_never_blocks_itself() -> None:
    """Its own claim is in the index too."""
    me = Request("me", T0, Phase.PENDING, spec())
    assert blocker_of(me, [me]) is None


SCENARIOS = {
    "chain": [
        Request("a", T0, Phase.PENDING, spec(ingresses=["i1"], deployments=["d1"])),
        Request("b", T1, Phase.PENDING, spec(ingresses=["i1"], deployments=["d2"])),
        Request("c", T2, Phase.PENDING, spec(ingresses=["i2"], deployments=["d2"])),
    ],
    "started late": [
        Request("a", T0, Phase.QUEUED, spec(ingresses=["i1"], deployments=["d1"])),
        Request("b", T1, Phase.RUNNING, spec(ingresses=["i1"], deployments=["d2"])),
        Request("c", T2, Phase.PENDING, spec(ingresses=["i2"], deployments=["d1"])),
    ],
    "same second": [
        Request("c", T0, Phase.PENDING, spec(ingresses=["i1"])),
        Request("b", T0, Phase.QUEUED, spec(ingresses=["i1"], deployments=["d1"])),
        Request("a", T0, Phase.PENDING, spec(ingresses=["i2"], deployments=["d1"])),
    ],
    "mixed": [
        Request("a", T0, Phase.SUCCEEDED, spec()),
        Request("b", T0, Phase.RUNNING, spec(dry_run=True)),
        Request("c", T1, Phase.PENDING, spec(hpas=["h"])),
        Request("d", T2, Phase.QUEUED, spec(ingresses=["x"], deployments=["y"], hpas=["h"])),
    ],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_two_requests_wait_for_each_other_in_any_order(scenario: str) -> None:
    """Whatever order the index was filled in, the wait-for graph has no cycle (no deadlock),
    and whether a request waits does not depend on the order the index was built in."""
    requests = SCENARIOS[scenario]
    answers: set[tuple[tuple[str, bool], ...]] = set()
    for order in itertools.permutations(requests):
        waits_for = {r.name: waits(r, order) for r in requests}
        answers.add(tuple(sorted((name, w is not None) for name, w in waits_for.items())))
        for start, first in waits_for.items():
            seen = {start}
            current = first
            while current is not None:
                assert current not in seen, f"{scenario}: {start} waits in a cycle {seen}"
                seen.add(current)
                current = waits_for[current]
    assert len(answers) == 1, f"{scenario}: the answer depends on the index order: {answers}"
    assert not all(w for _, w in answers.pop()), "somebody must be able to go"


def test_the_first_pending_request_can_always_go() -> None:
    """With nothing started, the earliest request of every permutation never waits."""
    for order in itertools.permutations(SCENARIOS["chain"]):
        earliest = min(order, key=lambda r: (r.created, r.name))
        assert waits(earliest, order) is None


def test_two_requests_switching_the_same_http_route_run_one_after_the_other() -> None:
    """A route is switched and restored by one run at a time, as an Ingress is."""
    routed = spec(ingresses=(), deployments=("frontend",))
    routed["traffic"]["httpRoutes"] = [{"name": "site", "rules": ["api"]}]
    other = spec(ingresses=(), deployments=("backend",))
    other["traffic"]["httpRoutes"] = [{"name": "site"}]
    first = Request("a", T0, Phase.RUNNING, routed)
    second = Request("b", "2026-01-10T03:00:05Z", Phase.PENDING, other)
    assert (NS, "HTTPRoute", "site") in first.claims()
    assert waits(second, [first, second]) == "a"

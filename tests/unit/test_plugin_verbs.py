"""`kubectl rollback` list, restore-traffic, retry, status -w, -o, NO_COLOR and completion:
the pure parts, and the watch against a fake transport."""

from __future__ import annotations

import copy
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from importlib.metadata import version as installed
from typing import Any

import pytest
import yaml

from kubectl_rollback import PluginError, cli, commands, completion, recover, render
from rollback_operator import GROUP, PLURAL, VERSION
from rollback_operator.autoscaling import FREEZE_PATCH, resume_operations
from rollback_operator.kube import ApiError

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
APP = {"service": {"name": "frontend", "port": {"number": 80}}}
API = {"service": {"name": "backend", "port": {"number": 8080}}}
MAINTENANCE = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
ROOT = {"rule": 0, "path": 0, "host": "lawyershub.example", "pathValue": "/"}
API_PATH = {"rule": 0, "path": 1, "host": "lawyershub.example", "pathValue": "/api"}
BEHAVIOR = {"scaleDown": {"stabilizationWindowSeconds": 60}}


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def failed(
    name: str = "golive",
    phase: str = "Failed",
    *,
    finished: str = "2026-01-10T11:00:00Z",
    restored: bool = False,
) -> dict[str, Any]:
    state = "Succeeded" if restored else "Pending"
    return {
        "metadata": {
            "name": name,
            "namespace": "lawyershub",
            "creationTimestamp": stamp(600),
            "resourceVersion": "10",
            "labels": {"team": "web"},
            "annotations": {"rollback.lawyershub.io/approve": "Verify"},
        },
        "spec": {
            "reason": "Error rate 7.2 %",
            "trigger": "ErrorRate",
            "traffic": {
                "ingresses": ["site"],
                "maintenanceBackend": {"service": "maintenance-page", "port": 80},
            },
            "workloads": [{"deployment": "backend"}],
        },
        "status": {
            "phase": phase,
            "finishedAt": finished,
            "targets": {"ingresses": ["site"], "hpas": ["web", "api"]},
            "saved": {
                "ingresses": {
                    "site": {
                        "backends": [
                            {"location": ROOT, "backend": APP},
                            {"location": API_PATH, "backend": API},
                        ]
                    }
                },
                "hpas": {
                    "web": {"minReplicas": 2, "maxReplicas": 5, "behavior": BEHAVIOR},
                    "api": {"minReplicas": 1, "maxReplicas": 3},
                },
            },
            "steps": [
                {"name": "ResumeAutoscaling", "state": state},
                {"name": "DisableMaintenance", "state": state},
            ],
        },
    }


def ingress(root: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    paths = [{"path": "/", "backend": root}, {"path": "/api", "backend": api}]
    return {
        "metadata": {"name": "site", "resourceVersion": "7"},
        "spec": {"rules": [{"host": "lawyershub.example", "http": {"paths": paths}}]},
    }


def hpa(frozen: bool) -> dict[str, Any]:
    behavior = copy.deepcopy(FREEZE_PATCH["spec"]["behavior"]) if frozen else BEHAVIOR
    return {
        "metadata": {"resourceVersion": "3"},
        "spec": {"minReplicas": 2, "maxReplicas": 5, "behavior": behavior},
    }


# --- restore-traffic


def test_restore_puts_back_only_what_is_still_the_operators_change():
    someone = {"service": {"name": "hotfix", "port": {"number": 80}}}
    plan = recover.plan_traffic(
        failed(),
        [failed()],
        {"site": ingress(MAINTENANCE, someone)},
        {"web": hpa(frozen=True), "api": hpa(frozen=False)},
    )
    site, changes = plan.ingresses["site"]
    assert changes == [(ROOT, APP)]  # the path still on the maintenance page
    assert site["metadata"]["resourceVersion"] == "7"  # the patch is guarded by this read
    # The HPA's patch tests the freeze (no resourceVersion: status writes keep moving it).
    assert plan.hpas == {"web": resume_operations({"behavior": BEHAVIOR})}
    assert plan.left == [
        "Ingress site lawyershub.example/api now points to hotfix:80 (was backend:8080), "
        "left as is",
        "HPA api: no longer frozen, left as is",
    ]
    assert plan.summary() == "Ingress site (1 backend(s)), HPA web (behavior)"


class Site:
    """The saved objects of `failed()` behind a Kube: the Ingress on the maintenance page and
    both HPAs frozen; `moved` Ingress writes answer 409 first (a controller's status write
    between the plugin's read and its write)."""

    def __init__(self, moved: int = 0, hpa_taken: bool = False, hpa_moved: int = 0) -> None:
        self.site = ingress(MAINTENANCE, MAINTENANCE)
        self.hpas = {"web": hpa(frozen=True), "api": hpa(frozen=True)}
        self.moved, self.hpa_taken, self.hpa_moved = moved, hpa_taken, hpa_moved
        self.reads = 0
        self.writes: list[tuple[str, Any]] = []

    def ingress(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return copy.deepcopy(self.site)

    def hpa(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.hpas[name])

    def http_route(self, namespace: str, name: str) -> None:
        return None

    def patch(self, path: str, body: Any, content_type: str = "") -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if "/ingresses/" in path:
            if self.moved:
                self.moved -= 1
                raise ApiError(409, "Conflict", "the object has been modified")
            self.site["spec"] = body["spec"]
        elif self.hpa_taken and name == "api":
            raise ApiError(422, "Invalid", "the test operation failed")
        elif self.hpa_moved:
            self.hpa_moved -= 1
            raise ApiError(409, "Conflict", "the object has been modified")
        else:
            self.hpas[name]["spec"]["behavior"] = BEHAVIOR
        self.writes.append((name, body))
        return copy.deepcopy(self.site)


def test_restore_reads_and_plans_again_when_an_object_changed_under_its_write():
    kube = Site(moved=2)
    put, left = recover.put_back(kube, "lawyershub", failed(), [failed()])  # type: ignore[arg-type]
    assert kube.reads == 3  # two conflicts, then the write at a fresh read
    assert put.summary() == "Ingress site (2 backend(s)), HPA web (behavior), HPA api (behavior)"
    assert left == []
    assert [name for name, _ in kube.writes] == ["site", "web", "api"]
    endless = Site(moved=recover.CONFLICT_ATTEMPTS)
    with pytest.raises(ApiError) as refused:
        recover.put_back(endless, "lawyershub", failed(), [failed()])  # type: ignore[arg-type]
    assert refused.value.status == 409 and endless.writes == []


def test_restore_reports_once_what_an_earlier_attempt_put_back():
    """The Ingress is put back, then a write meets a conflict: the fresh plan reads the Ingress
    as already back, and the summary still names it, once."""
    kube = Site(hpa_moved=1)
    put, left = recover.put_back(kube, "lawyershub", failed(), [failed()])  # type: ignore[arg-type]
    assert put.summary() == "Ingress site (2 backend(s)), HPA web (behavior), HPA api (behavior)"
    assert left == []  # not "Ingress site: already back"
    assert [name for name, _ in kube.writes] == ["site", "web", "api"]


def test_restore_leaves_an_hpa_someone_changed_between_the_read_and_the_patch():
    kube = Site(hpa_taken=True)
    put, left = recover.put_back(kube, "lawyershub", failed(), [failed()])  # type: ignore[arg-type]
    assert put.summary() == "Ingress site (2 backend(s)), HPA web (behavior)"
    assert left == ["HPA api: changed since it was read, left as is"]


def test_restore_leaves_what_the_run_restored_and_what_a_later_request_took_over():
    done = recover.plan_traffic(
        failed(restored=True), [], {"site": ingress(MAINTENANCE, MAINTENANCE)}, {}
    )
    assert not done.ingresses and not done.hpas
    assert "Ingress site: already put back by the run" in done.left
    later = failed("golive-retry-1", finished="2026-01-10T11:30:00Z")
    taken = recover.plan_traffic(
        failed(), [failed(), later], {"site": ingress(MAINTENANCE, MAINTENANCE)}, {}
    )
    assert not taken.ingresses
    assert taken.left[0] == (
        "Ingress site: rollbackrequest/golive-retry-1 took over its record; "
        "restore-traffic that one"
    )
    gone = recover.plan_traffic(failed(), [failed()], {"site": None}, {})
    assert gone.left[0].startswith("Ingress site: not found")


def test_restore_and_retry_apply_to_failed_or_aborted_runs_nobody_else_is_working_on():
    assert recover.refusal(failed(), [failed()], "retry") is None
    assert recover.refusal(failed(phase="Aborted"), [], "restore-traffic") is None
    refused = recover.refusal(failed(phase="Succeeded"), [], "retry")
    assert refused == "rollbackrequest/golive is Succeeded: retry is for a Failed or Aborted run"
    assert "is still running" in str(recover.refusal(failed(phase="Running"), [], "retry"))
    busy = failed("next", phase="Running")
    busy["status"]["saved"] = {}
    why = recover.refusal(failed(), [failed(), busy], "restore-traffic")
    assert why == (
        "rollbackrequest/next (Running) is working on the same objects: "
        "let it finish, or abort it, first"
    )
    dry = failed()
    dry["spec"]["dryRun"] = True
    assert "was a dry run" in str(recover.refusal(dry, [], "restore-traffic"))


# --- retry


def test_retry_names_count_on_and_the_body_keeps_the_spec_not_the_approvals():
    assert recover.retry_name("golive", set()) == "golive-retry-1"
    assert recover.retry_name("golive", {"golive-retry-1"}) == "golive-retry-2"
    assert recover.retry_name("golive-retry-2", {"golive-retry-1"}) == "golive-retry-2"
    assert recover.retry_name("a-retry-x", set()) == "a-retry-x-retry-1"
    finished = failed()
    finished["metadata"]["labels"]["rollback.lawyershub.io/finished"] = "true"
    body = recover.retry_body(finished, "golive-retry-1")
    # Without the operator's finished label: the new request would be hidden from its watch.
    assert body["metadata"] == {
        "name": "golive-retry-1",
        "namespace": "lawyershub",
        "labels": {"team": "web"},
        "annotations": {"rollback.lawyershub.io/retry-of": "golive"},
    }
    assert body["spec"] == failed()["spec"]
    assert "status" not in body


# --- list, -o, NO_COLOR


def test_list_shows_phase_step_age_and_who_approved_what():
    waiting = failed("waiting", phase="AwaitingApproval")
    waiting["metadata"]["creationTimestamp"] = stamp(30)
    waiting["status"]["step"] = "Verify"
    done = failed("done", phase="Succeeded")
    done["metadata"]["namespace"] = "other"
    done["status"]["steps"] = [
        {"name": "RestoreDatabase", "state": "Succeeded", "approvedBy": "dba-alice"},
        {"name": "Verify", "state": "Succeeded", "approvedBy": "qa-quinn"},
    ]
    lines = render.list_lines([waiting, failed()], NOW, all_namespaces=False, color=False)
    assert [line.split() for line in lines] == [
        ["NAME", "PHASE", "STEP", "AGE", "APPROVED"],
        ["golive", "Failed", "-", "10m", "-"],
        ["waiting", "AwaitingApproval", "Verify", "30s", "-"],
    ]
    wide = render.list_lines([done, waiting], NOW, all_namespaces=True, color=True)
    assert wide[0].split()[0] == "NAMESPACE"
    assert wide[2].startswith("other ")
    assert wide[2].endswith("RestoreDatabase by dba-alice, Verify by qa-quinn")
    assert "\x1b[32mSucceeded" in wide[2]


def test_no_color_turns_colours_off_on_a_terminal(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert render.colors_allowed(True) and not render.colors_allowed(False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.colors_allowed(True)
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: no preference (no-color.org)
    assert render.colors_allowed(True)


def test_output_json_and_yaml_round_trip():
    obj = failed()
    assert json.loads(render.dump(obj, "json")) == obj
    text = render.dump(obj, "yaml")
    assert text.startswith("---\n")
    assert yaml.safe_load(text) == obj


# --- status -w: a watch, not polling


class Stream:
    def __init__(self, lines: list[bytes], block: threading.Event | None = None) -> None:
        self.lines, self.block = lines, block

    def __iter__(self) -> Any:
        yield from self.lines
        if self.block is not None:
            self.block.wait()

    def release_conn(self) -> None:
        pass


class FakeKube:
    """GETs answer `gets` in order; each watch call answers the next of `streams`."""

    def __init__(self, gets: list[dict[str, Any]], streams: list[Stream]) -> None:
        self.gets, self.streams = gets, streams
        self.get_calls = 0
        self.watches: list[dict[str, str]] = []

    def request(self, method: str, path: str, *_: Any, **__: Any) -> Any:
        assert method == "GET" and path.endswith("/rollbackrequests/golive"), (method, path)
        self.get_calls += 1
        return self.gets.pop(0)

    def stream(self, path: str, query: dict[str, str]) -> Stream:
        assert path == f"/apis/{GROUP}/{VERSION}/namespaces/lawyershub/{PLURAL}"
        self.watches.append(query)
        if not self.streams:
            raise ApiError(0, "Unreachable", "no more")
        return self.streams.pop(0)


def event(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def version(phase: str, rv: str) -> dict[str, Any]:
    obj = failed(phase=phase)
    obj["metadata"]["resourceVersion"] = rv
    obj["status"]["message"] = f"now {phase}"
    return obj


def follow(monkeypatch, kube: FakeKube, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(commands, "connect", lambda args: (kube, "lawyershub"))
    out = io.StringIO()
    code = cli.main(["status", "golive", "-w", *argv], out)
    return code, out.getvalue()


def test_status_watch_reads_once_then_follows_the_watch(monkeypatch):
    lines = [
        event("MODIFIED", version("Running", "11")),
        event("MODIFIED", version("Succeeded", "12")),
    ]
    kube = FakeKube([version("Pending", "10")], [Stream(lines)])
    code, out = follow(monkeypatch, kube)
    assert code == 0
    assert kube.get_calls == 1  # no polling: every later version came from the watch
    assert kube.watches[0]["watch"] == "true"
    assert kube.watches[0]["resourceVersion"] == "10"
    assert kube.watches[0]["fieldSelector"] == "metadata.name=golive"
    headers = [line for line in out.splitlines() if line.startswith("rollbackrequest/")]
    assert [line.split()[2] for line in headers] == ["Pending", "Running", "Succeeded"]
    assert out.rstrip().endswith("golive: Succeeded: now Succeeded")


def documents(text: str) -> list[dict[str, Any]]:
    """The JSON objects `-o json -w` printed one after the other."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        obj, end = decoder.raw_decode(text, at)
        found.append(obj)
        at = end + (len(text[end:]) - len(text[end:].lstrip()))
    return found


def test_status_watch_starts_again_from_a_fresh_read_after_410_gone(monkeypatch):
    gone = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410}}).encode()
    kube = FakeKube(
        [version("Running", "10"), version("Running", "20")],
        [Stream([gone + b"\n"]), Stream([event("MODIFIED", version("Failed", "21"))])],
    )
    code, out = follow(monkeypatch, kube, "-o", "json")
    assert code == 1
    assert [w["resourceVersion"] for w in kube.watches] == ["10", "20"]
    assert [d["metadata"]["resourceVersion"] for d in documents(out)] == ["10", "20", "21"]


def test_status_watch_gives_up_at_the_timeout_with_exit_3(monkeypatch, capsys):
    never = threading.Event()
    kube = FakeKube([version("Running", "10")], [Stream([], block=never)])
    code, _ = follow(monkeypatch, kube, "--timeout", "300ms")
    never.set()
    assert code == 3
    assert capsys.readouterr().err == "timed out after 0.30s: rollbackrequest/golive is Running\n"


def test_status_watch_reports_a_deleted_request(monkeypatch, capsys):
    deleted = Stream([event("DELETED", version("Running", "11"))])
    kube = FakeKube([version("Running", "10")], [deleted])
    code, _ = follow(monkeypatch, kube)
    assert code == 2
    assert capsys.readouterr().err == "error: rollbackrequest/golive was deleted\n"


def test_a_bad_timeout_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "golive", "-w", "--timeout", "soon"])
    assert exited.value.code == 2
    assert "not a duration: 'soon'" in capsys.readouterr().err


# --- completion and --version


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ([""], [*cli.SUBCOMMANDS, "--help", "--version"]),
        (["re"], ["restore-traffic", "retry", "resume-gitops", "report"]),
        (["approve", "golive", "ver"], ["Verify"]),
        (["status", "golive", "-o", ""], ["json", "yaml"]),
        (["list", "--all"], ["--all-namespaces"]),
        (["retry", "golive", "--d"], ["--dry-run"]),
        (["completion", ""], ["bash", "zsh"]),
        (["status", "golive", "-w", ""], []),  # one NAME only
    ],
)
def test_completion_candidates(words, expected):
    found, directive = completion.candidates(cli.build_parser(), words)
    assert found == expected
    assert directive == completion.NO_FILES


def test_completion_of_a_file_flag_lets_the_shell_complete_files():
    assert completion.candidates(cli.build_parser(), ["create", "-f", ""]) == ([], 0)


def test_complete_speaks_cobras_protocol_and_scripts_call_it(capsys):
    assert cli.main(["__complete", "ab"]) == 0
    assert capsys.readouterr().out == "abort\n:4\n"
    for shell in ("bash", "zsh"):
        out = io.StringIO()
        assert cli.main(["completion", shell], out) == 0
        assert "kubectl-rollback __complete" in out.getvalue()
        assert "kubectl-rollback" in out.getvalue().splitlines()[-1]


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"kubectl-rollback {installed('rollback-operator')}\n"


def test_completion_of_a_name_lists_the_requests_of_the_namespace_typed(monkeypatch):
    seen: list[str | None] = []

    def connect(args: Any) -> tuple[None, str]:
        seen.append(args.namespace)
        return None, args.namespace or "default"

    listed = {"items": [{"metadata": {"name": n}} for n in ("golive-b", "golive-a", "other")]}
    monkeypatch.setattr(completion.api, "connect", connect)
    monkeypatch.setattr(completion.api, "list_requests", lambda kube, ns: listed)
    words = ["restore-traffic", "-n", "lawyershub", "gol"]
    assert completion.candidates(cli.build_parser(), words) == (["golive-a", "golive-b"], 4)
    assert seen == ["lawyershub"]

    def unreachable(args: Any) -> None:
        raise SystemExit(2)  # whatever goes wrong, the shell gets no candidates and no error

    monkeypatch.setattr(completion.api, "connect", unreachable)
    assert completion.candidates(cli.build_parser(), ["status", ""]) == ([], 4)


def test_approve_names_what_the_waiting_step_would_do_and_nothing_else() -> None:
    waiting = {
        "metadata": {"name": "golive"},
        "status": {
            "phase": "AwaitingApproval",
            "step": "RestoreDatabase",
            "steps": [
                {
                    "name": "RestoreDatabase",
                    "state": "Running",
                    "approvalDigest": "0123456789abcdef",
                    "approvalSubject": "file /backups/x.sql; sha256 ab",
                }
            ],
        },
    }
    assert render.awaited(waiting, "RestoreDatabase") == (
        "0123456789abcdef",
        "file /backups/x.sql; sha256 ab",
    )
    with pytest.raises(PluginError) as refused:
        render.awaited(waiting, "Verify")
    assert str(refused.value) == (
        "rollbackrequest/golive is not waiting for an approval of Verify (phase "
        "AwaitingApproval, step RestoreDatabase): an approval counts only while its step waits "
        "for it"
    )
    with pytest.raises(PluginError):
        render.awaited({"metadata": {"name": "golive"}}, "RestoreDatabase")

"""`kubectl rollback`: the parts that need no API server (rendering, plans, exit codes, flags,
completion), and the watch of `status -w` against a fake transport."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubectl_rollback import STEPS, PluginError, api, cli, render
from rollback_operator.model import STEP_ORDER

NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    moment = NOW - timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def request(phase: str = "Running", steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "golive-2026-01-10",
            "namespace": "lawyershub",
            "creationTimestamp": stamp(125),
        },
        "spec": {"trigger": "ErrorRate", "reason": "Error rate 7.2 %"},
        "status": {"phase": phase, "message": "Rolling back", "steps": steps or []},
    }


RUNNING_LEDGER = [
    {
        "name": "Preflight",
        "state": "Succeeded",
        "startedAt": stamp(20),
        "finishedAt": stamp(19.83),
        "message": "4 objects checked",
    },
    {"name": "SuspendGitOps", "state": "Succeeded", "message": "no GitOps tool manages them"},
    {
        "name": "EnableMaintenance",
        "state": "Succeeded",
        "startedAt": stamp(19),
        "finishedAt": stamp(18),
    },
    {"name": "PauseAutoscaling", "state": "Skipped", "message": "no HPA applies"},
    {
        "name": "RevertWorkloads",
        "state": "Running",
        "startedAt": stamp(12.5),
        "message": "waiting for backend: 1 of 2 replicas updated " + "x" * 200,
    },
]


def test_the_step_names_are_the_runbooks():
    assert tuple(str(s) for s in STEP_ORDER) == STEPS


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.17, "0.17s"), (9.994, "9.99s"), (12.34, "12.3s"), (125, "2m05s"), (3720, "1h02m")],
)
def test_durations(seconds, text):
    assert render.format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(5.9, "5s"), (125, "2m"), (7300, "2h"), (200000, "2d"), (-3, "0s")]
)
def test_ages(seconds, text):
    assert render.format_age(seconds) == text


def test_took_is_start_to_end_and_elapsed_so_far_while_running():
    done = {"state": "Succeeded", "startedAt": stamp(20), "finishedAt": stamp(19.83)}
    assert render.took(done, NOW) == "0.17s"
    assert render.took({"state": "Running", "startedAt": stamp(12.5)}, NOW) == "12.5s"
    assert render.took({"state": "Pending"}, NOW) == ""
    assert render.took({"state": "Failed", "startedAt": "not a time"}, NOW) == ""


def test_plain_table_has_every_step_no_ansi_and_fits_the_width():
    lines = render.render_status(request(steps=RUNNING_LEDGER), NOW, tty=False, width=100)
    text = "\n".join(lines)
    assert "\x1b" not in text
    assert lines[0] == (
        "rollbackrequest/golive-2026-01-10  phase Running  trigger ErrorRate  age 2m"
    )
    assert lines[1].split() == ["STEP", "STATE", "STARTED", "TOOK", "MESSAGE"]
    rows = lines[2:]
    assert [row.split()[0] for row in rows] == list(STEPS)
    assert rows[0].split()[:5] == ["Preflight", "Succeeded", "20s", "ago", "0.17s"]
    assert rows[0].endswith("4 objects checked")
    assert rows[4].split()[:5] == ["RevertWorkloads", "Running", "12s", "ago", "12.5s"]
    assert len(rows[4]) == 100 and rows[4].endswith("…")
    assert rows[5].split() == ["PurgeCDN", "Pending"]  # not in the status yet: Pending
    assert all(len(line) <= 100 for line in lines)


def test_plain_table_without_a_width_keeps_whole_messages():
    lines = render.render_status(request(steps=RUNNING_LEDGER), NOW, tty=False, width=None)
    assert lines[6].endswith("x" * 200)


def test_tty_table_has_colors_and_a_progress_bar():
    lines = render.render_status(request(steps=RUNNING_LEDGER), NOW, tty=True, width=80, color=True)
    assert "\x1b[33mRunning\x1b[0m" in lines[0]
    assert lines[1] == "[####.........] 4/13 steps done"  # Succeeded and Skipped count
    assert "\x1b[32mSucceeded" in lines[3]
    assert "\x1b[2mSkipped" in lines[6]


def test_header_says_queued_behind_and_dry_run():
    obj = request("Queued")
    obj["status"]["queuedBehind"] = "earlier"
    obj["spec"]["dryRun"] = True
    header = render.render_status(obj, NOW, tty=False, width=None)[0]
    assert header.endswith("dry run  behind earlier")


def test_change_follower_prints_only_what_changed():
    follower = render.ChangeFollower(width=None)
    first = follower.lines(request(steps=RUNNING_LEDGER), NOW)
    assert len(first) == 2 + 13
    # One second later, nothing but the elapsed time changed: nothing printed.
    assert follower.lines(request(steps=RUNNING_LEDGER), NOW + timedelta(seconds=1)) == []
    steps = [dict(s) for s in RUNNING_LEDGER]
    steps[4] = {**steps[4], "state": "Succeeded", "finishedAt": stamp(0), "message": "done"}
    later = follower.lines(request("Succeeded", steps), NOW)
    assert later[0].startswith("rollbackrequest/golive-2026-01-10  phase Succeeded")
    assert [line.split()[0] for line in later[1:]] == ["RevertWorkloads"]


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Succeeded", 0),
        ("Failed", 1),
        ("Aborted", 1),
        ("Running", 3),
        ("Queued", 3),
        ("Pending", 3),
        (None, 3),
    ],
)
def test_exit_codes_by_phase(phase, code):
    assert render.exit_code(phase) == code


def test_outcome_line():
    assert render.outcome(request("Failed")) == "golive-2026-01-10: Failed: Rolling back"


SPEC: dict[str, Any] = {
    "reason": "Error rate 7.2 % for 15 min after go-live",
    "trigger": "ErrorRate",
    "dryRun": False,
    "targetTag": "stable-last-known",
    "rolloutTimeout": "10m",
    "traffic": {
        "ingresses": ["lawyershub"],
        "maintenanceBackend": {"service": "maintenance-page", "port": 80},
    },
    "autoscaling": {"hpas": ["backend", "frontend"]},
    "workloads": [{"deployment": "backend", "containers": ["api"]}, {"deployment": "frontend"}],
}


def planned(spec: dict[str, Any], images: dict[str, dict[str, str]] | None = None) -> str:
    return render.plan_text(
        {"metadata": {"name": "golive", "namespace": "lawyershub"}, "spec": spec}, images
    )


def test_plan_names_the_http_routes_and_their_rules():
    traffic = SPEC["traffic"] | {"httpRoutes": [{"name": "site"}, {"name": "api", "rules": ["v2"]}]}
    text = planned(SPEC | {"traffic": traffic})
    assert "  Ingress lawyershub\n  HTTPRoute site (every rule)\n  HTTPRoute api (rules v2)\n" in (
        text
    )


def test_plan_from_the_spec_alone():
    text = planned(SPEC)
    assert "Ingresses switch to maintenance-page:80\n  Ingress lawyershub\n" in text
    assert "  HPA backend\n  HPA frontend\n" in text
    assert "containers revert to tag stable-last-known (rollouts within 10m)" in text
    assert "  Deployment backend, container api: :stable-last-known" in text
    assert "  Deployment frontend: every container -> :stable-last-known" in text
    assert text.endswith("nothing was created.")
    assert "spec.dryRun" not in text


def test_plan_with_current_images_keeps_the_repository():
    images = {
        "backend": {"api": "reg:5000/lh/backend:v2@sha256:abc", "proxy": "reg/proxy:1.4"},
        "frontend": {"web": "reg:5000/lh/frontend:v2"},
    }
    text = planned({**SPEC, "targetTag": "v1"}, images)
    assert "  Deployment backend, container api: reg:5000/lh/backend:v2@sha256:abc" in text
    assert "-> reg:5000/lh/backend:v1" in text
    assert "proxy" not in text  # not listed: left alone
    assert "  Deployment frontend, container web: reg:5000/lh/frontend:v2 -> " in text


def test_plan_without_hpas_names_the_discovery_and_flags_a_dry_run_spec():
    spec = {k: v for k, v in SPEC.items() if k != "autoscaling"}
    text = planned({**spec, "dryRun": True})
    assert "  every HPA scaling backend, frontend (found by Preflight)" in text
    assert "spec.dryRun is true" in text


def test_step_names_are_validated_and_spelt_as_the_runbook():
    assert render.canonical_step("verify") == "Verify"
    with pytest.raises(PluginError) as refused:
        render.canonical_step("Verfy")
    assert 'unknown step "Verfy"' in refused.value.message
    assert "RestoreDatabase" in refused.value.message
    assert refused.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["create"],
        ["status"],
        ["approve", "golive"],
        ["abort"],
        ["report", "a", "b"],
        ["status", "golive", "--nope"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: kubectl rollback" in capsys.readouterr().err


@pytest.mark.parametrize("command", list(cli.SUBCOMMANDS.keys() - {"completion"}))
def test_every_subcommand_has_help_with_an_example_and_the_global_flags(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert f"example:\n  kubectl rollback {command}" in text
    for flag in ("--kubeconfig", "--context", "-n NAMESPACE, --namespace NAMESPACE"):
        assert flag in text


def test_global_flags_parse_after_the_subcommand():
    args = cli.build_parser().parse_args(
        ["status", "golive", "-w", "-n", "lh", "--context", "prod", "--kubeconfig", "/k"]
    )
    assert (args.name, args.watch, args.namespace, args.context, args.kubeconfig) == (
        "golive",
        True,
        "lh",
        "prod",
        "/k",
    )


def test_an_unknown_step_fails_before_any_api_call(capsys):
    code = cli.main(["approve", "golive", "Nope", "--kubeconfig", "/nonexistent"])
    assert code == 2
    assert 'unknown step "Nope"' in capsys.readouterr().err


def test_a_file_that_is_not_a_rollback_request_is_refused(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert cli.main(["create", "-f", str(path)], io.StringIO()) == 2
    assert "document 1 is a ConfigMap, not a RollbackRequest" in capsys.readouterr().err


def test_a_missing_kubeconfig_is_an_error_not_a_traceback(tmp_path, capsys):
    assert cli.main(["status", "golive", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("error: kubeconfig:")


def test_the_default_namespace_is_the_contexts(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(
        """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts:
  - {name: plain, context: {cluster: c, user: u}}
  - {name: prod, context: {cluster: c, user: u, namespace: lawyershub}}
current-context: plain
"""
    )
    assert api.context_namespace(str(path), None) == "default"
    assert api.context_namespace(str(path), "prod") == "lawyershub"

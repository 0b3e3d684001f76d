"""The command line: the subcommands, their flags and help, and the exit codes of errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from kubectl_rollback import EXIT_ERROR, EXIT_INTERRUPTED, STEPS, PluginError, completion
from kubectl_rollback.api import connection_flags
from kubectl_rollback.commands import (
    cmd_abort,
    cmd_approve,
    cmd_create,
    cmd_list,
    cmd_report,
    cmd_status,
)
from kubectl_rollback.gitops import cmd_resume_gitops
from kubectl_rollback.recover import cmd_restore_traffic, cmd_retry
from kubectl_rollback.render import OUTPUTS
from rollback_operator import __version__
from rollback_operator.kube import ApiError
from rollback_operator.model import parse_duration

Command = Callable[[argparse.Namespace, TextIO], int]

# name: (what it does, an example, the function)
SUBCOMMANDS: dict[str, tuple[str, str, Command]] = {
    "create": (
        "Create the RollbackRequest(s) of a YAML file, or print their plan with --dry-run.",
        "kubectl rollback create -f rollback.yaml --dry-run",
        cmd_create,
    ),
    "list": (
        "List the requests of the namespace (-A: of every namespace): phase, step, age and "
        "who approved what.",
        "kubectl rollback list -A",
        cmd_list,
    ),
    "status": (
        "Show a request's ledger: phase, trigger, age and every step; -w follows it to its end.",
        "kubectl rollback status golive-2026-01-10 -w --timeout 45m",
        cmd_status,
    ),
    "approve": (
        "Approve a step of a request as the current user (annotations approve, approved-by).",
        "kubectl rollback approve golive-2026-01-10 Verify",
        cmd_approve,
    ),
    "abort": (
        "Stop a request at the next step boundary; nothing is undone.",
        "kubectl rollback abort golive-2026-01-10",
        cmd_abort,
    ),
    "restore-traffic": (
        "Put back the Ingress backends and HPA settings a Failed or Aborted run left changed, "
        "from its status.saved: only what is still the operator's change.",
        "kubectl rollback restore-traffic golive-2026-01-10 --dry-run",
        cmd_restore_traffic,
    ),
    "retry": (
        "Create a new request from a Failed or Aborted one's spec; it takes over the failed "
        "one's record of the originals.",
        "kubectl rollback retry golive-2026-01-10",
        cmd_retry,
    ),
    "resume-gitops": (
        "Once the revert is in Git: give the Argo CD, Flux and KEDA objects the run suspended "
        "their saved sync settings back (refused while their source still holds the bad release).",
        "kubectl rollback resume-gitops golive-2026-01-10 --dry-run",
        cmd_resume_gitops,
    ),
    "report": (
        "Print a finished request's post-mortem from the ConfigMap named in status.report.",
        "kubectl rollback report golive-2026-01-10",
        cmd_report,
    ),
    "completion": (
        "Print the shell completion script for bash or zsh.",
        "source <(kubectl-rollback completion bash)",
        completion.cmd_completion,
    ),
}


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90s, 10m, 1h30m)"
        ) from None


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=OUTPUTS, help="print the object(s) as JSON or YAML"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl rollback",
        description="Create, follow, approve, abort, list, retry and read RollbackRequests.",
        epilog="example:\n  kubectl rollback status golive-2026-01-10 -n lawyershub -w",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubectl-rollback {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = connection_flags()
    subs: dict[str, argparse.ArgumentParser] = {}
    for name, (description, example, _) in SUBCOMMANDS.items():
        subs[name] = commands.add_parser(
            name,
            parents=[] if name == "completion" else [common],
            help=description,
            description=description,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    for name in (
        "status",
        "approve",
        "abort",
        "restore-traffic",
        "retry",
        "resume-gitops",
        "report",
    ):
        subs[name].add_argument("name", help="the RollbackRequest")
    subs["create"].add_argument(
        "-f", "--filename", required=True, help="YAML file of RollbackRequests ('-': stdin)"
    )
    for name, what in (
        ("create", "server-side dry run: print the plan, create nothing"),
        ("restore-traffic", "print what would be put back, change nothing"),
        ("retry", "server-side dry run: create nothing"),
        ("resume-gitops", "print what would be resumed, change nothing"),
    ):
        subs[name].add_argument("--dry-run", action="store_true", help=what)
    subs["list"].add_argument(
        "-A", "--all-namespaces", action="store_true", help="the requests of every namespace"
    )
    _output(subs["list"])
    subs["status"].add_argument(
        "-w", "--watch", action="store_true", help="follow the request until it is over"
    )
    subs["status"].add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="with -w: give up after this long (90s, 45m, 1h30m), exit code 3",
    )
    _output(subs["status"])
    subs["approve"].add_argument("step", help=f"the step to approve: {', '.join(STEPS)}")
    subs["retry"].add_argument(
        "--name", dest="new_name", help="the new request's name (default: NAME-retry-N)"
    )
    subs["resume-gitops"].add_argument(
        "--force",
        action="store_true",
        help="resume even though the source still seems to hold the bad release",
    )
    subs["completion"].add_argument("shell", choices=completion.SHELLS, help="bash or zsh")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    if argv[:1] == [completion.HIDDEN]:
        return completion.complete(build_parser(), argv[1:], out)
    args = build_parser().parse_args(argv)  # a usage error exits 2 here
    try:
        return SUBCOMMANDS[args.command][2](args, out)
    except PluginError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.code
    except ApiError as error:
        detail = f"Error from server ({error.reason})" if error.status else "error"
        print(f"{detail}: {error.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED

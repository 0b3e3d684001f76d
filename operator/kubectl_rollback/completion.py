"""Shell completion: `kubectl-rollback completion bash|zsh`, and `kubectl rollback <TAB>`.

Both shells' scripts ask the plugin itself (`kubectl-rollback __complete WORDS... CURRENT`), so
the candidates come from the parser that parses them: the subcommands, their flags, the step
names for `approve`, `json`/`yaml` for `-o`, and the requests of the namespace for NAME (read
from the API server, quietly nothing when it cannot be read). kubectl (>= 1.26) completes its
plugins through an executable `kubectl_complete-<plugin>` on PATH, which the package installs:
it answers in the same protocol, cobra's (candidates, then `:directive`).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from kubectl_rollback import EXIT_OK, STEPS, api

HIDDEN = "__complete"
SHELLS = ("bash", "zsh")
# cobra's directives: 0 let the shell complete files too, 4 no file completion.
FILES, NO_FILES = 0, 4
_FILE_FLAGS = ("-f", "--filename", "--kubeconfig")

BASH = """# kubectl-rollback completion for bash: source <(kubectl-rollback completion bash)
_kubectl_rollback() {
    local IFS=$'\\n'
    COMPREPLY=($(kubectl-rollback __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null \\
        | grep -v '^:'))
}
complete -o default -F _kubectl_rollback kubectl-rollback
"""

ZSH = """#compdef kubectl-rollback
# kubectl-rollback completion for zsh: source <(kubectl-rollback completion zsh)
_kubectl_rollback() {
    local -a candidates
    candidates=(${(f)"$(kubectl-rollback __complete "${(@)words[2,CURRENT]}" 2>/dev/null \\
        | grep -v '^:')"})
    compadd -a candidates
}
compdef _kubectl_rollback kubectl-rollback
"""


def cmd_completion(args: argparse.Namespace, out: TextIO) -> int:
    out.write(BASH if args.shell == "bash" else ZSH)
    return EXIT_OK


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


def candidates(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], int]:
    """What may come at the last word of `words` (the one being typed, maybe ""), and the
    directive: whether the shell may offer file names too."""
    *before, current = words or [""]
    subs = _subparsers(parser)
    command = next((w for w in before if w in subs), None)
    if command is None:
        first = [*subs, "--help", "--version"]
        return [c for c in first if c.startswith(current)], NO_FILES
    sub = subs[command]
    options = _options(sub)
    previous = before[-1] if before else ""
    if previous in options and options[previous].nargs != 0:
        if previous in _FILE_FLAGS:
            return [], FILES
        choices = list(options[previous].choices or ())
        return [c for c in choices if c.startswith(current)], NO_FILES
    if current.startswith("-"):
        return sorted(f for f in options if f.startswith(current)), NO_FILES
    position = _positionals_typed(before[before.index(command) + 1 :], options)
    if command == "completion":
        found: list[str] = list(SHELLS)
    elif command == "approve" and position == 1:
        found = list(STEPS)
    elif position == 0 and command not in ("create", "list"):
        found = _request_names(before[before.index(command) + 1 :])
    else:
        found = []
    return [c for c in found if c.lower().startswith(current.lower())], NO_FILES


def _positionals_typed(words: list[str], options: dict[str, argparse.Action]) -> int:
    count, skip = 0, False
    for word in words:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in options and options[word].nargs != 0 and "=" not in word
        else:
            count += 1
    return count


def _request_names(words: list[str]) -> list[str]:
    """The requests of the namespace the typed flags name (or the context's)."""
    try:
        args, _ = api.connection_flags().parse_known_args(words)
        kube, namespace = api.connect(args)
        items = api.list_requests(kube, namespace).get("items") or []
    except (Exception, SystemExit):  # completion must never print an error into the shell
        return []
    return sorted(str(item["metadata"]["name"]) for item in items)


def complete(parser: argparse.ArgumentParser, words: list[str], out: TextIO) -> int:
    found, directive = candidates(parser, words)
    out.write("".join(f"{c}\n" for c in found) + f":{directive}\n")
    return EXIT_OK


def kubectl_main() -> None:
    """`kubectl_complete-rollback WORDS...`: what kubectl runs to complete `kubectl rollback`."""
    from kubectl_rollback.cli import build_parser  # noqa: PLC0415 (cli imports this module)

    sys.exit(complete(build_parser(), sys.argv[1:], sys.stdout))

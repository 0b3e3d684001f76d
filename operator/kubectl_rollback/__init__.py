"""`kubectl rollback`: create, follow, approve, abort, list, retry and read RollbackRequests.

A kubectl plugin (the `kubectl-rollback` executable that `pip install` puts on PATH), packaged
beside the operator and installable without it (`pipx install rollback-operator`: no Kopf, no
aiohttp, no httpx). It talks to the API server as the kubeconfig's user, through the operator's
JSON transport and vocabulary (`rollback_operator.kube`, `.model`); it never needs the
operator's permissions. See docs/kubectl-rollback.md.

Exit codes: 0 done (for `status`, the request Succeeded); 1 the request Failed or was Aborted,
or `report` found no report yet; 2 a usage error, a request not found, a refusal or any error
from the API server; 3 `status` on a request that is still running (without -w, or when
--timeout ran out); 130 interrupted.
"""

from __future__ import annotations

from rollback_operator.model import STEP_ORDER

STEPS: tuple[str, ...] = tuple(str(step) for step in STEP_ORDER)

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_RUNNING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# The field manager of the plugin's writes, and the component of its Events.
FIELD_MANAGER = "kubectl-rollback"


class PluginError(Exception):
    """Stops a command with a message on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code

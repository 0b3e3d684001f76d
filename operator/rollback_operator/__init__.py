"""rollback-operator: runs the production rollback runbook from one RollbackRequest."""

from importlib.metadata import PackageNotFoundError, version

GROUP = "rollback.lawyershub.io"
VERSION = "v1alpha1"
PLURAL = "rollbackrequests"
KIND = "RollbackRequest"

try:
    # pyproject.toml's `version` is the one source: the operator's and the plugin's --version.
    __version__ = version("rollback-operator")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

"""rollback-operator: runs the production rollback runbook from one RollbackRequest."""

GROUP = "rollback.lawyershub.io"
VERSION = "v1alpha1"
PLURAL = "rollbackrequests"
KIND = "RollbackRequest"

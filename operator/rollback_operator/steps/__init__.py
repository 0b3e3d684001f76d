"""The runbook's steps, one module each (the registry, `rollback_operator.registry`, lists them
in the runbook's order), with what they share: `base` (the Step protocol, the context and the
outcomes) and `jobs` (Jobs run once)."""

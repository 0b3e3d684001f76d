"""The database capability (runbook §2.3, §3): MigrateDatabaseDown and RestoreDatabase.

- `spec`: spec.database, typed;
- `scripts`: the POSIX sh and SQL the Jobs run (tested for real against PostgreSQL);
- `inspection`: Preflight's read-only Job script and what it reports;
- `jobs`: what the three database Jobs share (secretKeyRef, mounts, labels, messages);
- `preflight`: Preflight's database part, the references and the inspection Job.
"""

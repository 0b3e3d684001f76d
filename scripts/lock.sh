#!/usr/bin/env bash
# Regenerates requirements.lock (runtime) and requirements-dev.lock (tests, lint) from
# pyproject.toml, each resolved in a clean virtualenv, so a fresh machine installs exactly
# what was tested. Both hold the operator's extra: the lock is what the image and `make venv`
# install (kubectl-rollback alone needs only the base dependencies).
set -euo pipefail
export LC_ALL=C  # one sort order on every machine
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/rt" && "$tmp/rt/bin/pip" install -q '.[operator]'
python3 -m venv "$tmp/dev" && "$tmp/dev/bin/pip" install -q '.[operator,dev]'
"$tmp/rt/bin/pip" freeze --exclude-editable | grep -v '^rollback-operator' | sort -f >"$tmp/rt.txt"
"$tmp/dev/bin/pip" freeze --exclude-editable | grep -v '^rollback-operator' | sort -f >"$tmp/dev.txt"
{
  echo "# Runtime dependencies (rollback-operator[operator]), pinned: what the image and the operator"
  echo "# install. Regenerate with"
  echo "# scripts/lock.sh after changing pyproject.toml."
  cat "$tmp/rt.txt"
} >requirements.lock
{
  echo "# Development and test dependencies, pinned, on top of the runtime set."
  echo "-r requirements.lock"
  grep -vxF -f "$tmp/rt.txt" "$tmp/dev.txt"
} >requirements-dev.lock

#!/usr/bin/env bash
# Regenerates requirements.lock (runtime) and requirements-dev.lock (tests, lint) from
# pyproject.toml, each resolved in a clean virtualenv, so a fresh machine installs exactly
# what was tested.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/rt" && "$tmp/rt/bin/pip" install -q .
python3 -m venv "$tmp/dev" && "$tmp/dev/bin/pip" install -q '.[dev]'
"$tmp/rt/bin/pip" freeze --exclude-editable | grep -v '^rollback-operator' | sort -f >"$tmp/rt.txt"
"$tmp/dev/bin/pip" freeze --exclude-editable | grep -v '^rollback-operator' | sort -f >"$tmp/dev.txt"
{
  echo "# Runtime dependencies, pinned: what the image and the operator install. Regenerate with"
  echo "# scripts/lock.sh after changing pyproject.toml."
  cat "$tmp/rt.txt"
} >requirements.lock
{
  echo "# Development and test dependencies, pinned, on top of the runtime set."
  echo "-r requirements.lock"
  comm -13 "$tmp/rt.txt" "$tmp/dev.txt"
} >requirements-dev.lock

#!/usr/bin/env bash
# `make test-lowest`: the unit tests against the lowest versions pyproject.toml allows, so that
# its lower bounds are true. Each direct dependency (the base and the `operator` extra) is
# installed at its lower bound and what they pull in at its newest allowed (as uv's
# `--resolution lowest-direct`), from PyPI, in .venv-lowest; the venv is kept until
# pyproject.toml changes, so a warm run is only the unit tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.venv-lowest
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  python3 - >"$venv/lowest.txt" <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["operator"]:
    name, lowest = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", requirement).groups()
    print(f"{name}=={lowest}")
PY
  # The test runner as the dev lock pins it.
  grep -E '^(pytest|pytest-timeout|iniconfig|pluggy|packaging)==' requirements-dev.lock \
    >>"$venv/lowest.txt"
  "$venv/bin/pip" install --quiet -r "$venv/lowest.txt"
  "$venv/bin/pip" install --quiet --no-deps -e .
  touch "$stamp"
fi
echo "lowest allowed versions: $(grep -v '^pytest\|^iniconfig\|^pluggy\|^packaging' "$venv/lowest.txt" | tr '\n' ' ')"
"$venv/bin/pytest" -q -p no:cacheprovider tests/unit

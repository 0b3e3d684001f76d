"""The real Prisma CLI, for the tests that need what `prisma migrate diff` writes.

Pinned by tests/e2e/prisma/package.json and its package-lock.json, installed with `npm ci`
(no install scripts) into ~/.cache/rollback-operator/prisma/<hash of the lock file>, like the
Go binaries of the control plane: a warm run installs nothing. Prisma 6.19 runs its schema
engine as WebAssembly from its npm package (`engine: 'js'` with @prisma/adapter-pg,
tests/e2e/prisma/prisma.config.ts), which connects to a real PostgreSQL even for a diff
between two schema files (no shadow database is created).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).parent / "prisma"
LOCK = SOURCE / "package-lock.json"
INSTALL_TIMEOUT = 300
RUN_TIMEOUT = 120


def cache_dir() -> Path:
    key = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "rollback-operator" / "prisma" / key


def install() -> Path:
    """The CLI's directory, installed once per lock file (a file lock keeps parallel runs from
    installing it twice)."""
    root = cache_dir()
    done = root / ".installed"
    if done.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(SOURCE / name, root / name)
            subprocess.run(
                ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=root,
                check=True,
                timeout=INSTALL_TIMEOUT,
                capture_output=True,
            )
            done.touch()
    return root


def migrate_diff(database_url: str, *, source: str, target: str, workdir: Path) -> str:
    """`prisma migrate diff --script` from `source` to `target`: each a Prisma schema's text,
    or "" for an empty database. Returns the SQL the CLI printed."""
    root = install()
    config = root / "prisma.config.ts"
    wanted = (SOURCE / "prisma.config.ts").read_bytes()
    if not config.exists() or config.read_bytes() != wanted:  # tests may run it side by side
        tmp = root / f".prisma.config.ts.{os.getpid()}"
        tmp.write_bytes(wanted)
        tmp.replace(config)
    workdir.mkdir(parents=True, exist_ok=True)
    args = []
    for side, schema in (("from", source), ("to", target)):
        if not schema:
            args.append(f"--{side}-empty")
            continue
        path = workdir / f"{side}.prisma"
        path.write_text(schema)
        args += [f"--{side}-schema-datamodel", str(path)]
    # The CLI checks at start that a query engine library exists, and would download one;
    # migrate diff never loads it (the schema engine is the WebAssembly one).
    placeholder = workdir / "no-query-engine.so.node"
    placeholder.touch()
    result = subprocess.run(
        [str(root / "node_modules" / ".bin" / "prisma"), "migrate", "diff", *args, "--script"],
        cwd=root,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(workdir),
            "DATABASE_URL": database_url,
            "PRISMA_QUERY_ENGINE_LIBRARY": str(placeholder),
            "PRISMA_HIDE_UPDATE_MESSAGE": "1",
            "CHECKPOINT_DISABLE": "1",
        },
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout

"""The Dockerfile can be built from this repository: every file it copies from the build
context exists and is not excluded by .dockerignore (no engine here to find out by building)."""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _context_sources() -> list[str]:
    sources: list[str] = []
    instructions = (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    for line in instructions:
        words = shlex.split(line, comments=True)
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def _ignored(path: str) -> bool:
    """.dockerignore semantics for the patterns this repository uses: later lines win, `!`
    re-includes, a directory pattern covers what is below it."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    sources = _context_sources()
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [
        line.split()[1]
        for line in (REPO / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users and not users[-1].startswith(("0", "root"))

"""Image references: RevertWorkloads swaps only the tag, so the pods pull the same repository."""

from __future__ import annotations

import pytest

from rollback_operator.images import repository, with_tag

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("backend", "backend"),
        ("backend:v2.1.0", "backend"),
        ("library/backend:v2.1.0", "library/backend"),
        ("registry.local/backend:v2.1.0", "registry.local/backend"),
        ("registry.local:5000/backend:v2.1.0", "registry.local:5000/backend"),
        ("registry.local:5000/backend", "registry.local:5000/backend"),
        ("localhost:5000/team/sub/backend:1.2", "localhost:5000/team/sub/backend"),
        (f"registry.local:5000/team/backend:v2@{DIGEST}", "registry.local:5000/team/backend"),
        (f"registry.local:5000/team/backend@{DIGEST}", "registry.local:5000/team/backend"),
        (f"backend@{DIGEST}", "backend"),
    ],
)
def test_repository_keeps_registry_port_and_path(image: str, expected: str) -> None:
    """A registry port looks like a tag; mistaking one for the other would point the pods at a
    repository that does not exist, with the site already on the maintenance page."""
    assert repository(image) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("backend", "backend:stable-last-known"),
        ("backend:v2.1.0", "backend:stable-last-known"),
        ("registry.local/backend:v2.1.0", "registry.local/backend:stable-last-known"),
        (
            "registry.local:5000/lawyershub/backend:v2.1.0",
            "registry.local:5000/lawyershub/backend:stable-last-known",
        ),
        ("registry.local:5000/backend", "registry.local:5000/backend:stable-last-known"),
        (f"registry.local:5000/a/b/c:v2@{DIGEST}", "registry.local:5000/a/b/c:stable-last-known"),
        (f"backend@{DIGEST}", "backend:stable-last-known"),
    ],
)
def test_with_tag_sets_the_tag_and_drops_any_digest(image: str, expected: str) -> None:
    """A digest pins the bad build: it must go, or the runtime ignores the new tag."""
    assert with_tag(image, "stable-last-known") == expected


def test_with_tag_is_idempotent() -> None:
    """RevertWorkloads compares the current image with the target: re-tagging must be stable."""
    once = with_tag("registry.local:5000/backend:v2", "stable-last-known")
    assert with_tag(once, "stable-last-known") == once

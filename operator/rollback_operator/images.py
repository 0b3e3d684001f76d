"""Image references: swap the tag, keep everything else (registry, port, path); drop a digest."""

from __future__ import annotations


def repository(image: str) -> str:
    """`registry:5000/team/app:1.2@sha256:...` -> `registry:5000/team/app`."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    # A colon before the last slash is a registry port, not a tag.
    return name[:colon] if colon > last_slash else name


def with_tag(image: str, tag: str) -> str:
    return f"{repository(image)}:{tag}"

"""Every unit test starts with no watch of an earlier one still following its objects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollback_operator import watches


@pytest.fixture(autouse=True)
def _no_watch_left() -> Iterator[None]:
    yield
    watches.stop_all()

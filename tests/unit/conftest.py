"""Every unit test starts with no watch of an earlier one still following its objects, and a
step's call waits for a change a fraction of a second, not the operator's seconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rollback_operator import watches


@pytest.fixture(autouse=True)
def _no_watch_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(watches, "CALL_SECONDS", 0.3)
    yield
    watches.stop_all()

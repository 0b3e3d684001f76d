"""The API client's error type."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from rollback_operator.kube import ApiError


def test_an_api_error_passes_through_a_context_manager():
    """contextlib sets the __traceback__ of an exception leaving a generator-based context
    manager: a frozen exception would turn it into a FrozenInstanceError."""

    @contextlib.contextmanager
    def around() -> Iterator[None]:
        yield

    with pytest.raises(ApiError) as raised, around():
        raise ApiError(404, "NotFound", "gone")
    assert raised.value.status == 404 and str(raised.value) == "404 NotFound: gone"

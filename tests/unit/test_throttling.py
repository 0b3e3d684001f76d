"""Reading a server's Retry-After, as the CDN purge and the webhooks both honour it."""

from __future__ import annotations

from datetime import UTC, datetime

from rollback_operator.throttling import retry_after

T0 = datetime(2026, 1, 10, 3, 0, 0, tzinfo=UTC)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after("3", T0) == 3.0
    assert retry_after("Sat, 10 Jan 2026 03:00:05 GMT", T0) == 5.0
    assert retry_after("Sat, 10 Jan 2026 02:00:00 GMT", T0) == 0.0
    assert retry_after("soon", T0) is None
    assert retry_after(None, T0) is None

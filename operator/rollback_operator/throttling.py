"""How long a server asks to be left alone before the next try: `Retry-After` (RFC 9110).

The CDN purge and the webhooks both honour it, within their own deadlines; reading it is the
same for both, so it is written once. What a provider adds of its own (Fastly's rate-limit
reset) stays with that provider.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait, from a `Retry-After` value given as seconds or as an HTTP date; never
    negative (a date in the past means now). None when absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())

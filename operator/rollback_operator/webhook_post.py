"""One POST of a notification to a webhook: short timeouts, two quick retries at most, and an
error that never holds the URL.

Kept apart from what is sent and to whom (`notify.py`) because this is where a notification
meets the network: a webhook that is down, slow or refusing must cost the run a few seconds at
most (`BUDGET`), and the URL, which may itself be the credential (a Slack incoming webhook's
is), must not leak through an error message. Both rules are easier to hold in one small place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rollback_operator import clock
from rollback_operator.redaction import redact, url_secrets
from rollback_operator.throttling import retry_after

CONNECT_TIMEOUT = 2.0  # seconds to open a connection
READ_TIMEOUT = 3.0  # seconds for the receiver to answer
MAX_ATTEMPTS = 3  # one try and two quick retries
BUDGET = 6.0  # seconds one webhook may take, retries and waits included
BACKOFF = 0.5  # first wait between attempts without a Retry-After, doubled each time
ERROR_BODY_CHARS = 200  # of a receiver's error body, quoted in lastError

USER_AGENT = "rollback-operator"


@dataclass(frozen=True)
class Attempted:
    """How one POST went, after its retries. `error` never holds the URL."""

    ok: bool
    attempts: int
    error: str = ""


def post(
    url: str,
    body: dict[str, Any],
    *,
    budget: float = BUDGET,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Attempted:
    """POSTs `body` as JSON; retries throttling (429), server errors (5xx), timeouts and
    connection failures twice at most, honouring Retry-After when it fits in `budget`.

    Any other answer (Slack's 400 invalid_payload, 403 action_prohibited, 404 no_service,
    410 channel_is_archived) is final: asking again would get the same answer.
    """
    deadline = monotonic() + budget
    secrets = url_secrets(url)

    def hide(text: str) -> str:
        return redact(text, *secrets, placeholder="<webhook url>")

    error = ""
    attempt = 0
    with httpx.Client(
        transport=transport, headers={"User-Agent": USER_AGENT}, follow_redirects=False
    ) as client:
        while attempt < MAX_ATTEMPTS:
            attempt += 1
            left = deadline - monotonic()
            timeout = httpx.Timeout(
                max(0.1, min(READ_TIMEOUT, left)), connect=max(0.1, min(CONNECT_TIMEOUT, left))
            )
            wait = BACKOFF * 2 ** (attempt - 1)
            try:
                response = client.post(url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                error = f"no answer within {timeout.read:.1f}s"
            except httpx.TransportError as failure:
                error = f"could not connect: {hide(str(failure) or type(failure).__name__)}"
            else:
                if response.is_success:
                    return Attempted(ok=True, attempts=attempt)
                error = f"HTTP {response.status_code}"
                said = hide(" ".join(response.text.split()))[:ERROR_BODY_CHARS]
                if said:
                    error += f": {said}"
                if response.status_code != 429 and response.status_code < 500:
                    return Attempted(ok=False, attempts=attempt, error=error)
                asked = retry_after(response.headers.get("Retry-After"), clock.now())
                if asked is not None:
                    if asked > deadline - monotonic():
                        error += f" (asked to retry after {asked:g}s, more than the time left)"
                        return Attempted(ok=False, attempts=attempt, error=error)
                    wait = asked
            if attempt < MAX_ATTEMPTS:
                if wait > deadline - monotonic():
                    break
                sleep(wait)
    return Attempted(ok=False, attempts=attempt, error=f"{error} (after {attempt} attempt(s))")

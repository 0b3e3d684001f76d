"""One POST of a notification to a webhook: a total deadline, two quick retries at most, and an
error that never holds the URL.

Kept apart from what is sent and to whom (`notify.py`) because this is where a notification
meets the network: a webhook that is down, slow (even one trickling its answer a byte at a
time) or refusing costs the run `BUDGET` seconds at most, a total deadline on all attempts
together and on each one, and the URL, which may itself be the credential (a Slack incoming
webhook's is), must not leak through an error message. Both rules are easier to hold in one
small place. For the same reason the body is scrubbed here (`redaction.scrub_tree`), on its
way out to a chat channel that many more people read than may read the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rollback_operator import clock
from rollback_operator.deadlines import Deadline, request
from rollback_operator.redaction import redact, scrub, scrub_tree, url_secrets
from rollback_operator.throttling import retry_after

ATTEMPT_SECONDS = 3.0  # one attempt in all: connecting, sending, and the whole answer
MAX_ATTEMPTS = 3  # one try and two quick retries
BUDGET = 6.0  # seconds one webhook may take, retries and waits included: a total deadline
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
    deadline = Deadline(budget, clock=monotonic)
    secrets = url_secrets(url)

    def hide(text: str) -> str:
        return scrub(redact(text, *secrets, placeholder="<webhook url>"))

    body = scrub_tree(body)

    error = ""
    attempt = 0
    headers = {"User-Agent": USER_AGENT}
    while attempt < MAX_ATTEMPTS:
        attempt += 1
        call = deadline.within(ATTEMPT_SECONDS)
        wait = BACKOFF * 2 ** (attempt - 1)
        try:
            response = request(
                "POST", url, deadline=call, transport=transport, headers=headers, json=body
            )
        except httpx.TimeoutException:
            error = f"no answer within {call.shown}"
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
                if asked > deadline.left():
                    error += f" (asked to retry after {asked:g}s, more than the time left)"
                    return Attempted(ok=False, attempts=attempt, error=error)
                wait = asked
        if attempt < MAX_ATTEMPTS:
            if wait >= deadline.left():
                break
            sleep(wait)
    return Attempted(ok=False, attempts=attempt, error=f"{error} (after {attempt} attempt(s))")

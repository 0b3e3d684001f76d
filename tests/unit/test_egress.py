"""The rules of where the operator may connect and which images its Jobs may run (egress.py),
and Preflight's part that applies them to a whole request (steps/limits.py)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from rollback_operator import egress
from rollback_operator.admin_policy import AdminPolicy, effective
from rollback_operator.deadlines import Deadline, connect, resolve_addresses
from rollback_operator.egress import Destination, address_refusal, host_refusal, refusal
from rollback_operator.model import RollbackSpec
from rollback_operator.steps import limits
from rollback_operator.steps.base import StepContext

NO_LIMITS = AdminPolicy(approvals={})


def hosts(*patterns: str) -> AdminPolicy:
    return AdminPolicy(approvals={}, allowed_hosts=patterns)


def images(*patterns: str) -> AdminPolicy:
    return AdminPolicy(approvals={}, allowed_images=patterns)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("[::ffff:a9fe:a9fe]", "a cloud metadata address"),
        ("169.254.0.1", "a link-local address"),
        ("169.254.255.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fe80::1%eth0", "a link-local address"),
        ("febf::1", "a link-local address"),
        ("10.0.0.1", None),
        ("127.0.0.1", None),
        ("169.255.0.1", None),
        ("fec0::1", None),
        ("not-an-address", None),
    ],
)
def test_link_local_and_metadata_addresses_are_refused(address: str, why: str | None) -> None:
    assert address_refusal(address) == why


@pytest.mark.parametrize(
    "host",
    ["metadata.google.internal", "METADATA.google.internal.", "metadata", "instance-data"],
)
def test_metadata_names_are_refused_before_any_lookup(host: str) -> None:
    assert host_refusal(host) == "a cloud metadata name"


@pytest.mark.parametrize(
    "url", ["http://example.com\\@169.254.169.254/", "http://169.254.169.254#@example.com/"]
)
def test_the_url_is_parsed_as_the_http_client_parses_it(url: str) -> None:
    """Tricks that make a parser other than the client's see another host: the host checked
    is the one the client would call."""
    why = refusal(Destination.of_url("spec.cdn.url", url), NO_LIMITS)
    assert why == (
        "spec.cdn.url: 169.254.169.254 is a cloud metadata address, which the operator never "
        "contacts"
    )


def test_a_credential_needs_https_except_to_loopback() -> None:
    token = "the CDN token (Secret cdn key token)"
    plain = Destination.of_url("spec.cdn.apiBase", "http://cdn.example.com/v4", token)
    assert refusal(plain, NO_LIMITS) == (
        "spec.cdn.apiBase: http://cdn.example.com/v4 is plain http, and the call carries the "
        "CDN token (Secret cdn key token): use an https:// URL"
    )
    assert refusal(Destination.of_url("f", "https://cdn.example.com/v4", token), NO_LIMITS) is None
    for local in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert refusal(Destination.of_url("f", local, token), NO_LIMITS) is None
    # No credential, no https needed.
    assert refusal(Destination.of_url("f", "http://cdn.example.com/v4"), NO_LIMITS) is None


def test_user_info_in_a_url_is_a_credential_never_shown() -> None:
    url = "http://admin:hunter2@prometheus.example.com:9090"
    destination = Destination.of_url("spec.monitoring.prometheus.url", url)
    why = refusal(destination, NO_LIMITS)
    assert why is not None and "the user and password in its URL" in why
    assert "hunter2" not in why and "admin" not in why


def test_hosts_outside_the_allowlist_are_refused_and_an_empty_list_allows_all() -> None:
    allowed = hosts("*.svc.cluster.local", "api.cloudflare.com")
    inside = Destination("f", "redis.lawyershub.svc.cluster.local")
    assert refusal(inside, allowed) is None
    assert refusal(Destination("f", "API.Cloudflare.com."), allowed) is None
    assert refusal(Destination("f", "10.0.0.7", shown="10.0.0.7:6379"), allowed) == (
        "f: host 10.0.0.7 is not in the admins' allowedHosts (*.svc.cluster.local, "
        "api.cloudflare.com); ask a cluster admin to add it to the RollbackPolicy"
    )
    assert refusal(Destination("f", "10.0.0.7"), NO_LIMITS) is None


def test_both_levels_must_allow_a_host() -> None:
    both = effective(hosts("*.example.com"), hosts("*.team.example.com"))
    assert refusal(Destination("f", "db.team.example.com"), both) is None
    why = refusal(Destination("f", "db.other.example.com"), both)
    assert why is not None and "*.example.com and *.team.example.com" in why


def test_the_allowlist_does_not_lift_the_metadata_refusal() -> None:
    everything = hosts("*")
    assert "metadata" in (refusal(Destination("f", "169.254.169.254"), everything) or "")


def test_a_name_resolving_to_a_refused_address_is_refused() -> None:
    def resolver(host: str) -> list[str]:
        return {"sneaky.example.com": ["10.0.0.1", "169.254.169.254"]}.get(host, ["10.0.0.2"])

    why = refusal(Destination("spec.notify[ops].url", "sneaky.example.com"), NO_LIMITS, resolver)
    assert why == (
        "spec.notify[ops].url: sneaky.example.com resolves to 169.254.169.254, a cloud metadata "
        "address, which the operator never contacts"
    )
    assert refusal(Destination("f", "fine.example.com"), NO_LIMITS, resolver) is None


def test_numeric_host_forms_resolve_to_what_they_mean() -> None:
    """inet_aton's forms (hex, a 32-bit number) are resolved, then refused by address."""
    assert resolve_addresses("0xa9fea9fe", 2.0) == ["169.254.169.254"]
    assert resolve_addresses("2852039166", 2.0) == ["169.254.169.254"]
    why = refusal(Destination("f", "0xa9fea9fe"), NO_LIMITS, lambda h: resolve_addresses(h, 2.0))
    assert why is not None and "resolves to 169.254.169.254" in why


def test_connect_never_reaches_a_refused_address() -> None:
    """The last line of defence, on the address actually used: no socket is even opened."""
    with pytest.raises(ConnectionRefusedError, match="a cloud metadata address"):
        connect("0xa9fea9fe", 80, Deadline(2.0))
    with pytest.raises(ConnectionRefusedError, match="a link-local address"):
        connect("169.254.1.1", 80, Deadline(2.0))


def test_connect_still_reaches_an_ordinary_address() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    try:
        with connect("127.0.0.1", server.getsockname()[1], Deadline(2.0)):
            pass
    finally:
        server.close()


@pytest.mark.parametrize(
    ("image", "patterns", "allowed"),
    [
        ("postgres:16", (), True),
        ("postgres:16", ("postgres:16",), True),
        ("postgres:17", ("postgres:16",), False),
        ("registry.example.com/db/psql:1", ("registry.example.com/db/*",), True),
        ("registry.example.com.evil.io/db/psql:1", ("registry.example.com/db/*",), False),
        ("attacker.example/psql", ("registry.example.com/*", "postgres:*"), False),
    ],
)
def test_images_are_matched_against_the_admins_patterns(
    image: str, patterns: tuple[str, ...], allowed: bool
) -> None:
    why = egress.image_refusal("spec.database.restore.image", image, images(*patterns))
    assert (why is None) == allowed
    if why is not None:
        assert why.startswith(f"spec.database.restore.image: image {image} is not in")


# --- a whole request (steps/limits.py)


class SecretsOnly:
    """The Kube reads Preflight's limits make: Secrets and RollbackPolicy objects."""

    def __init__(self, secrets: dict[tuple[str, str], str], policy: dict[str, Any] | None) -> None:
        self.secrets, self.policy = secrets, policy

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        return self.secrets.get((name, key))

    def get(self, path: str) -> dict[str, Any] | None:
        assert "/rollbackpolicies/" in path
        own = path.split("/namespaces/")[1].startswith("app/")
        return {"spec": self.policy} if own and self.policy is not None else None


def _context(spec: dict[str, Any], kube: Any) -> Any:
    base = {
        "reason": "r",
        "trigger": "Manual",
        "traffic": {"ingresses": ["web"], "maintenanceBackend": {"service": "m", "port": 80}},
        "workloads": [{"deployment": "backend"}],
    }
    now = datetime(2026, 1, 10, tzinfo=UTC)
    return StepContext(
        kube=kube,
        namespace="app",
        request="r",
        spec=RollbackSpec.parse({**base, **spec}),
        ledger=None,  # type: ignore[arg-type]
        step_started_at=now,
        now=lambda: now,
    )


def test_every_address_and_image_of_a_request_is_held_to_the_limits() -> None:
    spec = {
        "cdn": {
            "provider": "webhook",
            "url": "http://purge.example.com/",
            "credentials": {"secretRef": {"name": "cdn", "key": "token"}},
        },
        "notify": [
            {"name": "slack", "urlSecretRef": {"name": "hook", "key": "url"}},
            {"name": "plain", "url": "https://hooks.example.com/x"},
        ],
        "monitoring": {"prometheus": {"url": "http://169.254.1.2:9090"}},
        "verification": {
            "checks": [
                {"name": "redis", "tcp": {"host": "redis.other-team", "port": 6379}},
                {"name": "smoke", "job": {"image": "attacker.example/x", "command": ["true"]}},
            ]
        },
        "database": {
            "connection": {"secretRef": {"name": "db", "key": "url"}},
            "restore": {"backup": {"claimName": "b", "file": "f.sql"}},
        },
    }
    secret_url = "http://hooks.slack.example/services/T/B/very-secret-path"
    kube = SecretsOnly(
        {("hook", "url"): secret_url},
        {"allowedHosts": ["*.example.com"], "allowedImages": ["postgres:*"]},
    )
    found = limits.refusals(_context(spec, kube))
    text = "\n".join(found)
    assert "very-secret-path" not in text
    assert found == [
        "spec.cdn.url: http://purge.example.com/ is plain http, and the call carries the CDN "
        "token (Secret cdn key token): use an https:// URL",
        "spec.notify[slack].urlSecretRef: the URL in Secret hook key url is plain http, and the "
        "call carries its URL (Secret hook key url): use an https:// URL",
        "spec.monitoring.prometheus.url: 169.254.1.2 is a link-local address, which the operator "
        "never contacts",
        "spec.verification.checks[redis].tcp.host: host redis.other-team is not in the admins' "
        "allowedHosts (*.example.com); ask a cluster admin to add it to the RollbackPolicy",
        "spec.verification.checks[smoke].job.image: image attacker.example/x is not in the "
        "admins' allowedImages (postgres:*); use an allowed image, or ask a cluster admin to add "
        "it to the RollbackPolicy",
    ]


def test_a_request_within_the_limits_has_nothing_refused() -> None:
    spec = {
        "cdn": {
            "provider": "cloudflare",
            "zoneId": "z",
            "credentials": {"secretRef": {"name": "cdn", "key": "token"}},
        },
        "verification": {"checks": [{"name": "api", "http": {"url": "http://127.0.0.1:8080/"}}]},
    }
    kube = SecretsOnly({}, {"allowedHosts": ["api.cloudflare.com", "127.0.0.1"]})
    assert limits.refusals(_context(spec, kube)) == []

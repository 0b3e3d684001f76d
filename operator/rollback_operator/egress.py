"""Where the operator may connect, and which images its Jobs may run (safety rule 9: no
confused deputy).

The operator's pod reaches what a requester may not: the cloud's metadata endpoint (which hands
out the node's credentials), other teams' services. A RollbackRequest names addresses (the CDN
API, webhooks, Prometheus, tcp and http checks) and images (database Jobs, job checks), so each
is held here to two rules before anything is sent or started:

- refused always: link-local addresses (169.254.0.0/16, fe80::/10) and the clouds' metadata
  addresses and names, whether written in the spec or what a name resolves to; and plain http
  for a call that carries a credential (a CDN token, a webhook URL kept in a Secret, a user and
  password in a Prometheus URL), which anyone on the path could read (except to the pod's
  own loopback, which crosses no network);
- the admins' allowlists (RollbackPolicy `allowedHosts`, `allowedImages`, matched by
  `AdminPolicy`): glob patterns; an empty list adds no restriction beyond the refusals above.

Pure: resolving a name is handed in (`Resolver`), so that the rules are unit-tested without a
network. `deadlines.connect` applies `address_refusal` again to every address it connects to,
so a name that resolves elsewhere later (DNS rebinding) is still refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx

from rollback_operator.admin_policy import AdminPolicy
from rollback_operator.redaction import display_url

# The clouds' instance metadata services, which hand out the node's credentials: AWS (and its
# IPv6 endpoint), GCP, Azure, OpenStack, DigitalOcean and Oracle at 169.254.169.254, AWS ECS's
# task metadata at 169.254.170.2, Alibaba Cloud at 100.100.100.200 (not link-local).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))

Resolver = Callable[[str], Sequence[str]]
"""The addresses a host name resolves to (empty when it does not resolve)."""


def normal_host(host: str) -> str:
    """A host as compared: lower case, no trailing dot, no IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(normal_host(text).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:169.254.169.254 is 169.254.169.254
    return address


def address_refusal(address: str) -> str | None:
    """Why the operator never connects to this address, or None: a metadata address, or a
    link-local one."""
    parsed = _address(address)
    if parsed is None:
        return None
    if parsed in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if any(parsed in network for network in LINK_LOCAL):
        return "a link-local address"
    return None


def is_loopback(host: str) -> bool:
    """Whether `host` is the operator's own pod (localhost, 127.0.0.0/8, ::1), as written: a
    credential sent there over plain http crosses no network (a sidecar, a local proxy)."""
    name = normal_host(host)
    address = _address(name)
    return name == "localhost" or (address is not None and address.is_loopback)


def host_refusal(host: str) -> str | None:
    """Why the operator never contacts this host as written (before resolving it), or None."""
    name = normal_host(host)
    if name in METADATA_NAMES:
        return "a cloud metadata name"
    return address_refusal(name)


@dataclass(frozen=True)
class Destination:
    """One place a request makes the operator contact: `field` names it in messages;
    `credential` says what secret the call carries, if any ("the CDN token")."""

    field: str
    host: str
    scheme: str = ""  # http or https; empty for a tcp check
    shown: str = ""  # the URL or host:port, as messages may show it (no credential)
    credential: str = ""

    @classmethod
    def of_url(cls, field: str, url: str, credential: str = "") -> Destination:
        """A URL's destination, parsed as the HTTP client parses it (so that the host checked
        is the host called), with user info counted as a credential."""
        try:
            parsed = httpx.URL(url.strip())
        except (httpx.InvalidURL, TypeError):
            return cls(field, "", "", "<an invalid URL>", credential)
        if parsed.userinfo and not credential:
            credential = "the user and password in its URL"
        return cls(field, parsed.host, parsed.scheme, display_url(url.strip()), credential)


def refusal(
    destination: Destination, policy: AdminPolicy, resolve: Resolver | None = None
) -> str | None:
    """Why the operator must not contact `destination` for a request, or None; the message
    names the field and the host, never a credential. `resolve` (when given) lets a name that
    resolves to a refused address be refused too; a name that does not resolve is left to the
    capability's own check, which reports it unreachable."""
    field, host = destination.field, destination.host
    if not host:
        return f"{field}: {destination.shown or 'the address'} has no host"
    why = host_refusal(host)
    if why is not None:
        return f"{field}: {host} is {why}, which the operator never contacts"
    if destination.credential and destination.scheme != "https" and not is_loopback(host):
        return (
            f"{field}: {destination.shown} is plain {destination.scheme or 'tcp'}, and the call "
            f"carries {destination.credential}: use an https:// URL"
        )
    if not policy.allows_host(host):
        return (
            f"{field}: host {host} is not in the admins' allowedHosts "
            f"({_patterns(policy.allowed_hosts_layers)}); ask a cluster admin to add it to the "
            "RollbackPolicy"
        )
    if resolve is not None and _address(host) is None:
        for address in resolve(host):
            why = address_refusal(address)
            if why is not None:
                return (
                    f"{field}: {host} resolves to {address}, {why}, which the operator never "
                    "contacts"
                )
    return None


def image_refusal(field: str, image: str, policy: AdminPolicy) -> str | None:
    """Why a Job of the request may not run `image` (matched as the request writes it), or
    None."""
    if policy.allows_image(image):
        return None
    return (
        f"{field}: image {image} is not in the admins' allowedImages "
        f"({_patterns(policy.allowed_images_layers)}); use an allowed image, or ask a cluster "
        "admin to add it to the RollbackPolicy"
    )


def _patterns(layers: Sequence[Sequence[str]] | None) -> str:
    """The allowlists in force, as messages show them (each level's, when both have one)."""
    return " and ".join(", ".join(layer) for layer in layers or ())

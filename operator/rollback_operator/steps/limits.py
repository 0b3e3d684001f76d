"""Preflight's first part: the request held to the admins' limits (safety rule 9, no confused
deputy), before the operator contacts anything the request names or starts any Job.

The admission policy rollback-requester-rights has already refused a request naming a Secret
its creator may not read, or starting Jobs its creator may not start. What is left is what
the operator's own pod would reach: every address the spec names (the CDN API, each notify
webhook, Prometheus, each http and tcp check) is held to `egress.refusal` (no link-local or
metadata address, also after resolving; https for a call with a credential; the admins'
allowedHosts), and every image a Job would run (the database Jobs, each job check) to the
admins' allowedImages. The admins' settings are the RollbackPolicy objects
(`admin_policy_reader.read_policy`).
"""

from __future__ import annotations

from dataclasses import replace

from rollback_operator import egress
from rollback_operator.admin_policy import AdminPolicy
from rollback_operator.admin_policy_reader import read_policy
from rollback_operator.cdn import WEBHOOK, CdnSpec
from rollback_operator.database.spec import DatabaseSpec
from rollback_operator.deadlines import resolve_addresses
from rollback_operator.kube import Kube
from rollback_operator.monitoring import MonitoringSpec
from rollback_operator.notify import NotifySpec, Webhook
from rollback_operator.steps.base import StepContext
from rollback_operator.verification import HttpProbe, JobProbe, TcpProbe, VerificationSpec

RESOLVE_SECONDS = 3.0  # per name: a resolver that hangs does not hold Preflight up longer


def destinations(ctx: StepContext) -> list[egress.Destination]:
    """Every place the request makes the operator contact, with what each call carries. A
    webhook URL kept in a Secret is read to learn its host; it is never shown."""
    spec, found = ctx.spec, []
    cdn = CdnSpec.of(spec)
    if cdn is not None:
        field = "spec.cdn.url" if cdn.provider == WEBHOOK else "spec.cdn.apiBase"
        token = f"the CDN token ({cdn.credentials})" if cdn.credentials else ""
        found.append(egress.Destination.of_url(field, cdn.base, token))
    for webhook in (NotifySpec.of(spec) or NotifySpec()).webhooks:
        url = webhook.url
        if webhook.url_secret is not None:
            ref = webhook.url_secret
            url = ctx.kube.secret_value(ctx.namespace, ref.name, ref.key)
        if url is not None:  # a missing Secret key: delivery reports it; nothing to contact
            found.append(webhook_destination(webhook, url))
    monitoring = MonitoringSpec.of(spec)
    if monitoring is not None:
        found.append(
            egress.Destination.of_url("spec.monitoring.prometheus.url", monitoring.prometheus_url)
        )
    for check in (VerificationSpec.of(spec) or VerificationSpec()).checks:
        field = f"spec.verification.checks[{check.name}]"
        probe = check.probe
        if isinstance(probe, HttpProbe):
            found.append(egress.Destination.of_url(f"{field}.http.url", probe.url))
        elif isinstance(probe, TcpProbe):
            found.append(egress.Destination(f"{field}.tcp.host", probe.host, shown=probe.target))
    return found


def webhook_destination(webhook: Webhook, url: str) -> egress.Destination:
    """A notify webhook's destination; a URL kept in a Secret is the credential itself, so
    it is never shown, not even in part."""
    field = f"spec.notify[{webhook.name}]"
    ref = webhook.url_secret
    if ref is None:
        return egress.Destination.of_url(f"{field}.url", url)
    secret = egress.Destination.of_url(f"{field}.urlSecretRef", url, f"its URL ({ref})")
    return replace(secret, shown=f"the URL in {ref}")


def webhook_refusal(kube: Kube, namespace: str, webhook: Webhook, url: str) -> str | None:
    """Why a notification must not be sent to `url`, checked at each delivery: the first ones
    go out while Preflight runs, and the Secret holding a URL may change later."""
    destination = webhook_destination(webhook, url)
    return egress.refusal(destination, read_policy(kube, namespace), _resolve)


def images(ctx: StepContext) -> list[tuple[str, str]]:
    """(field, image) for every image a Job of the request would run."""
    found: list[tuple[str, str]] = []
    database = DatabaseSpec.of(ctx.spec)
    if database is not None and database.migrate_down is not None:
        migrate = database.migrate_down
        found.append(("spec.database.migrateDown.image", migrate.image))
        if migrate.source_image is not None:
            found.append(("spec.database.migrateDown.source.image", migrate.source_image))
    if database is not None and database.restore is not None:
        found.append(("spec.database.restore.image", database.restore.image))
    for check in (VerificationSpec.of(ctx.spec) or VerificationSpec()).checks:
        if isinstance(check.probe, JobProbe):
            found.append((f"spec.verification.checks[{check.name}].job.image", check.probe.image))
    return found


def refusals(ctx: StepContext, policy: AdminPolicy | None = None) -> list[str]:
    """Every address and image of the request that the operator must not use, one message
    each (naming the field, never a credential); empty when the request keeps to the limits."""
    policy = read_policy(ctx.kube, ctx.namespace) if policy is None else policy
    problems = [
        why
        for destination in destinations(ctx)
        if (why := egress.refusal(destination, policy, _resolve)) is not None
    ]
    problems += [
        why for field, image in images(ctx) if (why := egress.image_refusal(field, image, policy))
    ]
    return problems


def _resolve(host: str) -> list[str]:
    return resolve_addresses(host, RESOLVE_SECONDS)

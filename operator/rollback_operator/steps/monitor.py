"""Monitor (runbook §2.5): once traffic is back, watch the error rate and the latency in
Prometheus for `duration`, against the §1 thresholds (more than 5 %, more than 5 s).

The step never sleeps: each call evaluates the queries when an evaluation is due (one interval
after the last, whose time is in status.monitoring) and returns a Wait until the next one. The
watch's clock is the step's recorded start and its tally is status.monitoring, both in the
request's status, so an operator killed mid-watch resumes with the elapsed time and the counts
where they were.

Time without an evaluation is not watched (`monitoring_watch`): a gap of more than a few
intervals (the operator was down, or not leading) is recorded in status.monitoring.gaps and
the watch is extended by it, so that `duration` is really watched; gaps of more than the
duration in all fail the run as "not watched", saying which minutes.

On a breach the step fails the run (the runner posts the Warning Event); with
`onBreach: Maintenance` it first puts the site back on the maintenance page, from the
original backends in status.saved.ingresses (and the HTTPRoute rules' in
status.saved.httpRoutes). The breach and `maintenanceOn` are written
durably before the first Ingress is touched: a crash half-way is finished on restart, and the
MaintenanceActive condition is never behind the site.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from rollback_operator import monitoring, monitoring_watch
from rollback_operator.clock import parse
from rollback_operator.model import RollbackSpec, StepName, Targets
from rollback_operator.monitoring import MonitoringSpec
from rollback_operator.monitoring_watch import Watch
from rollback_operator.prometheus import Prometheus, QueryFailed, query_all
from rollback_operator.redaction import without_credentials
from rollback_operator.routes import back_to_maintenance, patch_rules
from rollback_operator.steps.base import Done, Fail, Outcome, StepContext, Wait
from rollback_operator.traffic import Location, backend_at, describe, patch_backends

SECTION = "monitoring"
# Between evaluations the step still wakes this often, so that an abort is seen promptly;
# a wake-up that evaluates nothing writes nothing.
MAX_WAIT_SECONDS = 5.0


def preflight_problems(ctx: StepContext) -> list[str]:
    """For Preflight (read-only): the watch's settings fit together, Prometheus answers, and
    it accepts both queries. A request whose watch could not run is refused before the site is
    touched; the message says how to go on without the watch. A dry run sends Prometheus
    nothing (`MonitorPreflight.inspect` says so in the ledger): a request that is only a plan
    makes the operator contact no address it names."""
    spec = MonitoringSpec.of(ctx.spec)
    if spec is None:
        return []
    problems = monitoring.configuration_problems(spec)
    if ctx.spec.dry_run:
        return problems
    prometheus = Prometheus(spec.prometheus_url)
    rules = spec.rules(ctx.namespace)
    answers = query_all(prometheus, {rule.name: rule.query for rule in rules})
    for rule in rules:
        result = answers[rule.name]
        if not isinstance(result, QueryFailed):
            continue
        if result.invalid_query:
            problems.append(f"monitoring.{rule.name}.query is refused: {result.detail}")
            continue
        problems.append(
            f"monitoring: {result.detail}; fix monitoring.prometheus.url, or leave "
            "spec.monitoring out to roll back without the watch"
        )
        break  # the same trouble for the other query
    return problems


class MonitorPreflight:
    """Monitor's part of Preflight: the queries tried (`preflight_problems`), except on a dry
    run, whose ledger says what was not checked."""

    def problems(self, ctx: StepContext) -> list[str]:
        return preflight_problems(ctx)

    def inspect(self, ctx: StepContext) -> Wait | Fail | str | None:
        spec = MonitoringSpec.of(ctx.spec)
        if spec is None or not ctx.spec.dry_run:
            return None
        return (
            f"monitoring: Prometheus at {without_credentials(spec.prometheus_url)} was not "
            "queried (a dry run contacts nothing): whether it answers and accepts the queries "
            "is checked when the request runs"
        )


class Monitor:
    name = StepName.MONITOR
    records_before_acting = False
    preflight = MonitorPreflight()

    def skip_reason(self, spec: RollbackSpec, targets: Targets | None) -> str | None:
        return None if MonitoringSpec.of(spec) is not None else "no spec.monitoring"

    def plan(self, ctx: StepContext) -> str:
        spec = _spec(ctx)
        rules = "; ".join(
            f"{monitoring.describe_rule(r.name)} above "
            f"{monitoring.show_value(r.name, r.threshold)} ({r.query})"
            for r in spec.rules(ctx.namespace)
        )
        then = (
            "switch the maintenance page back on and fail"
            if spec.switches_maintenance_on
            else "fail, leaving traffic on the application"
        )
        return (
            f"would watch Prometheus at {without_credentials(spec.prometheus_url)} for "
            f"{monitoring.show_duration(spec.duration_seconds)}, every "
            f"{monitoring.show_duration(spec.interval_seconds)}: {rules}; on a breach "
            f"({spec.for_count} consecutive evaluations over a threshold) {then}"
        )

    def run(self, ctx: StepContext) -> Outcome:
        spec = _spec(ctx)
        watch = Watch.load(
            ctx.ledger.section(SECTION), spec.rules(ctx.namespace), spec.duration_seconds
        )
        if watch.breach is not None:  # decided before a restart: finish what it implies
            return self._breached(ctx, spec, watch)

        start = ctx.step_started_at
        # The watch ends once `duration` was watched: extended by every gap (see
        # monitoring_watch: time without an evaluation is not watched).
        end = start + timedelta(seconds=spec.duration_seconds + watch.unwatched_seconds)
        last = parse(watch.last_evaluated_at) if watch.last_evaluated_at else None
        if last is not None and last >= end:  # the last evaluation was made; only Done was lost
            return self._concluded(ctx, watch)
        # The first evaluation one interval after traffic returned, each next one an interval
        # after the last (after a restart too), and the last one at the end of the watch.
        due = min((last or start) + timedelta(seconds=spec.interval_seconds), end)
        now = ctx.now()
        if now < due:
            if watch.evaluations == 0 and ctx.ledger.section(SECTION) is None:
                ctx.ledger.put_section(SECTION, watch.to_dict())  # the watch shows from its start
            return Wait(
                monitoring_watch.progress_message(watch),
                retry_after=min(MAX_WAIT_SECONDS, (due - now).total_seconds()),
            )

        prometheus = Prometheus(spec.prometheus_url)
        results = query_all(prometheus, {r.name: r.query for r in spec.rules(ctx.namespace)})
        now = ctx.now()
        watch = monitoring_watch.record(
            watch, results, now, (now - start).total_seconds(), interval=spec.interval_seconds
        )

        found = monitoring_watch.verdict(watch, spec.for_count)
        if found is not None:
            kind, rule = found
            if kind == "breach" and rule is not None:
                watch.breach = monitoring_watch.breach_message(rule, watch)
                watch.maintenance_on = spec.switches_maintenance_on
                # Durable before any Ingress changes: see the module's docstring.
                ctx.ledger.put_section(SECTION, watch.to_dict(), durable=watch.maintenance_on)
                return self._breached(ctx, spec, watch)
            ctx.ledger.put_section(SECTION, watch.to_dict())
            return Fail(monitoring_watch.blind_message(watch, spec.prometheus_url))

        ctx.ledger.put_section(SECTION, watch.to_dict())
        if monitoring_watch.unwatched_over_cap(watch):
            return Fail(monitoring_watch.not_watched_message(watch, start))
        end = start + timedelta(seconds=spec.duration_seconds + watch.unwatched_seconds)
        if now >= end:
            return self._concluded(ctx, watch)
        due = min(now + timedelta(seconds=spec.interval_seconds), end)
        return Wait(
            monitoring_watch.progress_message(watch),
            retry_after=min(MAX_WAIT_SECONDS, max(0.0, (due - ctx.now()).total_seconds())),
        )

    def _concluded(self, ctx: StepContext, watch: Watch) -> Outcome:
        succeeded, message, warnings = monitoring_watch.conclusion(watch, ctx.step_started_at)
        if succeeded:
            return Done(message, warnings=warnings, warning_reason="MonitoringWarning")
        return Fail(message)

    def _breached(self, ctx: StepContext, spec: MonitoringSpec, watch: Watch) -> Outcome:
        assert watch.breach is not None
        if not spec.switches_maintenance_on:
            return Fail(
                f"{watch.breach}. Traffic stays on the application (onBreach: Fail): decide "
                "whether to take it off (maintenance page) and roll back further"
            )
        switched, notes = switch_to_maintenance(ctx)
        message = (
            f"{watch.breach}. The maintenance page is back on (Ingress {', '.join(switched)})"
            if switched
            else f"{watch.breach}. No Ingress had been switched by this request"
        )
        if notes:
            message += "; left as is: " + "; ".join(notes)
        return Fail(
            f"{message}. Fix the application, then restore traffic from "
            "status.saved.ingresses (or with a new RollbackRequest)"
        )


def switch_to_maintenance(ctx: StepContext) -> tuple[list[str], list[str]]:
    """Points every backend this request had switched and restored back at the maintenance
    page, from status.saved.ingresses (idempotent: a backend already there is left alone).

    A backend that someone pointed elsewhere after traffic returned is left as is and
    reported, as DisableMaintenance does: their change is newer than the record. Returns the
    Ingresses on the maintenance page and those notes.
    """
    maintenance = ctx.spec.maintenance_backend.as_ingress_backend()
    switched: list[str] = []
    notes: list[str] = []
    for name in ctx.targets.ingresses:
        saved = ctx.ledger.original("ingresses", name)
        if saved is None:
            continue  # never switched by this request
        ingress = ctx.kube.ingress(ctx.namespace, name)
        if ingress is None:
            notes.append(f"Ingress {name} no longer exists")
            continue
        changes: list[tuple[Location, dict[str, Any]]] = []
        for entry in saved["backends"]:
            current = backend_at(ingress, entry["location"])
            if current == maintenance:
                continue
            if current is None:
                notes.append(f"Ingress {name}: a rule or path moved, not switched")
            elif current != entry["backend"]:
                notes.append(
                    f"Ingress {name} now points to {describe(current)} "
                    f"(was {describe(entry['backend'])}), not switched"
                )
            else:
                changes.append((entry["location"], maintenance))
        patch_backends(ctx.kube, ctx.namespace, name, ingress, changes)
        switched.append(name)
    for name in ctx.targets.http_routes:
        saved = ctx.ledger.original("httpRoutes", name)
        if saved is None:
            continue  # never switched by this request
        route = ctx.kube.http_route(ctx.namespace, name)
        if route is None:
            notes.append(f"HTTPRoute {name} no longer exists")
            continue
        plan = back_to_maintenance(route, saved)
        notes += [f"HTTPRoute {name} {note}" for note in plan.theirs]
        notes += [f"HTTPRoute {name}: {moved} moved, not switched" for moved in plan.moved]
        patch_rules(ctx.kube, ctx.namespace, name, route, plan.changes)
        switched.append(f"HTTPRoute {name}")
    return switched, notes


def _spec(ctx: StepContext) -> MonitoringSpec:
    spec = MonitoringSpec.of(ctx.spec)
    if spec is None:  # the engine skips the step without spec.monitoring
        raise ValueError("Monitor run without spec.monitoring")
    return spec

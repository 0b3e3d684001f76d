"""Report (runbook §4): the post-mortem, written to a ConfigMap named after the request and
referenced from status.report, for `kubectl rollback report` and the team's review.

The ConfigMap also keeps the record that this request's spec ran (runonce.py), which outlives
the request: re-created by a GitOps sync, the request does not run again."""

from __future__ import annotations

from rollback_operator import postmortem, runonce
from rollback_operator.model import RERUN_ANNOTATION, Phase, StepName
from rollback_operator.steps.base import BaseStep, Done, Outcome, StepContext
from rollback_operator.steps.jobs import REQUEST_LABEL


class Report(BaseStep):
    name = StepName.REPORT
    records_before_acting = True  # the post-mortem is written again whole on a re-run

    def plan(self, ctx: StepContext) -> str:
        return f"would write the post-mortem to ConfigMap {postmortem.configmap_name(ctx.request)}"

    def run(self, ctx: StepContext) -> Outcome:
        name = postmortem.configmap_name(ctx.request)
        request = ctx.ledger.request()
        now = ctx.now()
        # As the step, the run succeeded (Report is its last step); after a failure or an
        # abort, the runner writes the report with the terminal phase already recorded.
        phase = Phase(request["status"].get("phase", Phase.RUNNING))
        ending = phase if phase.terminal else Phase.SUCCEEDED
        rerun = (request["metadata"].get("annotations") or {}).get(RERUN_ANNOTATION)
        record_key = runonce.key(request["spec"], rerun)
        existing = ctx.seen.take("configmaps", name)  # as read at the run's start ({}: none)
        if existing is None:  # a run resumed by a restarted operator
            existing = ctx.kube.configmap(ctx.namespace, name)
        ctx.kube.apply_configmap(
            ctx.namespace,
            name,
            {postmortem.KEY: postmortem.render(request, now)},
            {REQUEST_LABEL: ctx.request},
            runonce.stamped(existing, record_key, ctx.request_uid, ending, now),
        )
        ctx.ledger.set_report({"configMap": name, "key": postmortem.KEY})
        return Done(f"post-mortem in ConfigMap {name} (key {postmortem.KEY})")

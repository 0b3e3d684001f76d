"""Report (runbook §4): the post-mortem, written to a ConfigMap named after the request and
referenced from status.report, for `kubectl rollback report` and the team's review."""

from __future__ import annotations

from rollback_operator import postmortem
from rollback_operator.model import StepName
from rollback_operator.steps.base import BaseStep, Done, Outcome, StepContext
from rollback_operator.steps.jobs import REQUEST_LABEL


class Report(BaseStep):
    name = StepName.REPORT

    def plan(self, ctx: StepContext) -> str:
        return f"would write the post-mortem to ConfigMap {postmortem.configmap_name(ctx.request)}"

    def run(self, ctx: StepContext) -> Outcome:
        name = postmortem.configmap_name(ctx.request)
        ctx.kube.apply_configmap(
            ctx.namespace,
            name,
            {postmortem.KEY: postmortem.render(ctx.ledger.request(), ctx.now())},
            {REQUEST_LABEL: ctx.request},
        )
        ctx.ledger.set_report({"configMap": name, "key": postmortem.KEY})
        return Done(f"post-mortem in ConfigMap {name} (key {postmortem.KEY})")

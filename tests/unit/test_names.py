"""Names derived from a request's name: each fits its kind's limit for the longest name the CRD
accepts, and the CRD accepts no longer name than that.

A request's name becomes the label value `rollback.lawyershub.io/request` (at most 63
characters) on its Jobs, their pods and its post-mortem ConfigMap; before the CRD refused
longer names, Report got a 422 after traffic was back, and a job check failed Verify with the
site on maintenance.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from rollback_operator import postmortem
from rollback_operator.database.preflight import INSPECT_PURPOSE
from rollback_operator.model import MAX_REQUEST_NAME, StepName
from rollback_operator.steps import migrate_database_down, restore_database
from rollback_operator.steps.jobs import REQUEST_LABEL, JobTemplate, job_manifest, job_name
from rollback_operator.verification import Check, JobProbe
from tests.e2e.support import REPO_ROOT

UID = "0b6f7a52-6a0e-4c5e-9a43-51f1f7b0c001"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load((REPO_ROOT / "crds" / "rollbackrequests.yaml").read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _longest_check_name() -> int:
    spec = _crd_schema()["properties"]["spec"]["properties"]["verification"]
    check = spec["properties"]["checks"]["items"]["properties"]["name"]
    return int(check["maxLength"])


def _purposes() -> list[str]:
    """Every purpose the operator names a Job after: the database's three, and a job check's
    with the longest check name the CRD allows."""
    check = Check("c" * _longest_check_name(), JobProbe("app:1", ("smoke",), (), (), 60.0))
    return [
        INSPECT_PURPOSE,
        restore_database.PURPOSE,
        migrate_database_down.PURPOSE,
        check.purpose,
    ]


# Names the CRD accepts at the limit: plain, with dots (a DNS subdomain), ending in a digit.
LONGEST = ["g" * MAX_REQUEST_NAME, ("golive.2026-01-10." * 4)[: MAX_REQUEST_NAME - 1] + "9"]


@pytest.mark.parametrize("request_name", LONGEST, ids=["plain", "dotted"])
def test_every_name_derived_from_the_longest_request_name_fits(request_name: str) -> None:
    assert len(request_name) == MAX_REQUEST_NAME and DNS_SUBDOMAIN.match(request_name)
    configmap = postmortem.configmap_name(request_name)
    assert len(configmap) <= 253 and DNS_SUBDOMAIN.match(configmap), configmap
    event = f"{request_name}.{'f' * 12}"  # kube.post_event's names
    assert len(event) <= 253 and DNS_SUBDOMAIN.match(event)
    names = set()
    for purpose in _purposes():
        name = job_name(request_name, UID, purpose)
        # A Job's name is a DNS subdomain, and the job-name label value of its pods: <= 63.
        assert len(name) <= 63 and DNS_SUBDOMAIN.match(name) and LABEL_VALUE.match(name), name
        names.add(name)
        template = JobTemplate(purpose=purpose, image="app:1", command=("true",))
        manifest = job_manifest("lawyershub", request_name, UID, StepName.VERIFY, template)
        labels = manifest["spec"]["template"]["metadata"]["labels"]
        assert labels == manifest["metadata"]["labels"]
        assert labels[REQUEST_LABEL] == request_name
        for key, value in labels.items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    assert len(names) == len(_purposes()), "two Jobs of one request share a name"


def test_the_crd_refuses_a_longer_name_on_create_with_a_readable_message() -> None:
    rules = _crd_schema().get("x-kubernetes-validations") or []
    (rule,) = [r for r in rules if "self.metadata.name" in r["rule"]]
    assert rule["rule"] == (f"oldSelf.hasValue() || size(self.metadata.name) <= {MAX_REQUEST_NAME}")
    assert rule["optionalOldSelf"] is True  # a request created before the rule stays writable
    assert rule["fieldPath"] == ".metadata"
    assert rule["message"].startswith(
        f"name too long: a RollbackRequest's name may have at most {MAX_REQUEST_NAME} characters"
    )
    assert REQUEST_LABEL in rule["message"]

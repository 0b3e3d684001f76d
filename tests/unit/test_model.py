"""The spec is read once into typed values; durations follow Go's syntax as the CRD accepts it."""

from __future__ import annotations

import pytest

from rollback_operator.model import BackendRef, RollbackSpec, Targets, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("2h0m5s", 7205)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "5m junk", "m5"])
def test_parse_duration_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_parse_fills_the_defaults_the_api_server_would() -> None:
    spec = RollbackSpec.parse(
        {
            "reason": "error rate",
            "trigger": "ErrorRate",
            "traffic": {
                "ingresses": ["site"],
                "maintenanceBackend": {"service": "maint", "port": "http"},
            },
            "workloads": [
                {"deployment": "backend", "containers": ["api"]},
                {"deployment": "frontend"},
            ],
        }
    )
    assert spec.target_tag == "stable-last-known"
    assert spec.dry_run is False
    assert spec.rollout_timeout_seconds == 600
    assert spec.hpas is None
    assert spec.deployments == ("backend", "frontend")
    assert spec.workloads[0].containers == ("api",)
    assert spec.workloads[1].containers is None
    assert Targets.of(spec).claim_keys() == [
        ("Ingress", "site"),
        ("Deployment", "backend"),
        ("Deployment", "frontend"),
    ]


def test_backend_keeps_a_port_name_or_number_as_written() -> None:
    assert BackendRef("maint", 80).as_ingress_backend() == {
        "service": {"name": "maint", "port": {"number": 80}}
    }
    assert BackendRef("maint", "http").as_ingress_backend() == {
        "service": {"name": "maint", "port": {"name": "http"}}
    }

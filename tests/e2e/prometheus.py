"""The Prometheus fixtures of the monitoring tests (the server and the traffic target are
standins/prometheus.py).

Test modules import the fixtures they use:
`from tests.e2e.prometheus import prometheus_server, traffic_target`, and call
`traffic_target.traffic(namespace, ...)` for their own namespace.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from standins.prometheus import PrometheusServer, TrafficTarget


@pytest.fixture(scope="module")
def traffic_target() -> Iterator[TrafficTarget]:
    target = TrafficTarget()
    try:
        yield target
    finally:
        target.close()


@pytest.fixture(scope="module")
def prometheus_server(traffic_target: TrafficTarget) -> Iterator[PrometheusServer]:
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        server = PrometheusServer([traffic_target.address], Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()

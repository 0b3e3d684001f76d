"""A real Prometheus for the monitoring tests and the demo, scraping an application they control.

Debian's `prometheus` package brings the server (`/usr/bin/prometheus`) beside `promtool`.
The tests start it themselves: its own configuration and storage in a temporary directory,
listening on a free loopback port, scraping every second a small HTTP target served from the
test process. The target exports what an instrumented web application exports,
`http_requests_total{namespace, status}` and the histogram `http_request_duration_seconds`,
fed by a background thread that plays steady synthetic traffic for a namespace at the error
ratio and latency the test sets (and may change while the operator watches).

The tests' fixtures are in tests/e2e/prometheus.py.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from standins.local import UnavailableError, free_port, stop_process, wait_until

INSTALL_HINT = "install Debian's prometheus package (scripts/install-system-deps.sh)"
SCRAPE_INTERVAL = "1s"
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Traffic:
    """Steady synthetic requests for one namespace: `rate` per second, a share of them
    answered 500 (`error_ratio`), each taking `latency` seconds. Counted in whole requests, as
    an application would; the error share is exact over time (the remainder carries over)."""

    TICK = 0.05

    def __init__(
        self,
        requests: Counter,
        durations: Histogram,
        namespace: str,
        *,
        rate: float,
        error_ratio: float,
        latency: float,
    ) -> None:
        self.requests, self.durations, self.namespace = requests, durations, namespace
        self.rate, self.error_ratio, self.latency = rate, error_ratio, latency
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._owed_requests = 0.0
        self._owed_errors = 0.0
        self._thread = threading.Thread(target=self._play, daemon=True)
        self._thread.start()

    def set(self, *, error_ratio: float | None = None, latency: float | None = None) -> None:
        with self._lock:
            if error_ratio is not None:
                self.error_ratio = error_ratio
            if latency is not None:
                self.latency = latency

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _play(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            with self._lock:
                ratio, latency = self.error_ratio, self.latency
            self._owed_requests += self.rate * (now - last)
            last = now
            count = int(self._owed_requests)
            self._owed_requests -= count
            self._owed_errors += count * ratio
            errors = int(self._owed_errors)
            self._owed_errors -= errors
            if errors:
                self.requests.labels(namespace=self.namespace, status="500").inc(errors)
            if count - errors:
                self.requests.labels(namespace=self.namespace, status="200").inc(count - errors)
            for _ in range(count):
                self.durations.labels(namespace=self.namespace).observe(latency)


class TrafficTarget:
    """The scrape target: an HTTP server exporting the metrics of every namespace's traffic."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests served, by namespace and status code.",
            ["namespace", "status"],
            registry=self.registry,
        )
        self.durations = Histogram(
            "http_request_duration_seconds",
            "Time taken to serve an HTTP request.",
            ["namespace"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.port = free_port()
        self.server, self._thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )
        self._traffic: list[Traffic] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def traffic(
        self, namespace: str, *, rate: float = 200, error_ratio: float = 0.0, latency: float = 0.1
    ) -> Traffic:
        played = Traffic(
            self.requests,
            self.durations,
            namespace,
            rate=rate,
            error_ratio=error_ratio,
            latency=latency,
        )
        self._traffic.append(played)
        return played

    def close(self) -> None:
        for played in self._traffic:
            played.stop()
        self.server.shutdown()
        self.server.server_close()


class PrometheusServer:
    """`/usr/bin/prometheus` as a child process, scraping `targets` every second."""

    def __init__(self, targets: list[str], directory: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise UnavailableError(f"prometheus not found on PATH: {INSTALL_HINT}")
        self.binary, self.directory, self.targets = binary, directory, targets
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        (directory / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": SCRAPE_INTERVAL,
                        "evaluation_interval": SCRAPE_INTERVAL,
                    },
                    "scrape_configs": [
                        {"job_name": "app", "static_configs": [{"targets": self.targets}]}
                    ],
                }
            )
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, timeout=30, what=f"Prometheus ready on {self.url}")
        wait_until(
            lambda: self.value('min(up{job="app"})') == 1.0,
            timeout=30,
            what="Prometheus scraping the traffic target",
        )

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expression: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5)
        answer.raise_for_status()
        result: list[dict[str, Any]] = answer.json()["data"]["result"]
        return result

    def value(self, expression: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        try:
            result = self.query(expression)
        except httpx.HTTPError:
            return None
        return float(result[0]["value"][1]) if result else None

    def wait_for_data(self, namespace: str) -> None:
        """Until the default queries of the Monitor step can measure `namespace` (a rate needs
        two scrapes)."""
        wait_until(
            lambda: self.value(f'sum(rate(http_requests_total{{namespace="{namespace}"}}[2m]))'),
            timeout=30,
            what=f"request rates of {namespace} in Prometheus",
        )

    def stop(self) -> None:
        stop_process(self.process)

    def logs(self) -> str:
        path = self.directory / "prometheus.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

"""The processes a benchmark measures: the operator it starts (its memory, sampled), and the
local control plane's components (their CPU time)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from contextlib import suppress
from pathlib import Path

from bench.api import JSON, REPO_ROOT, Api
from bench.measure import beyond_lease, operator_code, scrape

PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


class OperatorProcess:
    """`python -m rollback_operator` for the given namespaces, as the bench identity.

    Each benchmark starts its own, so memory and request counts are not inherited from an
    earlier benchmark. It watches only the benchmark's namespaces (`-n`, repeated), never the
    whole cluster, so it cannot pick up requests that others create on a shared cluster.
    """

    def __init__(
        self,
        kubeconfig: Path,
        namespaces: list[str],
        log: Path,
        pod_name: str | None = None,
        liveness: str = "",
    ) -> None:
        self.kubeconfig, self.namespaces, self.log = kubeconfig, namespaces, log
        self.pod_name = pod_name  # names it as the holder of the leader Lease
        self.liveness = liveness  # its health endpoint's URL, served only when given
        self.process: subprocess.Popen[bytes] | None = None
        self.code: JSON = {}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.code = operator_code()
        args = [str(PYTHON), "-m", "rollback_operator", f"--liveness={self.liveness}"]
        args.append("--metrics=")
        for ns in self.namespaces:
            args += ["-n", ns]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        if self.pod_name:
            env["POD_NAME"] = self.pod_name
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_kib(self, field_name: str) -> int:
        """A VmRSS / VmHWM line of /proc/<pid>/status, in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise KeyError(field_name)

    def wait_idle(self, api: Api, quiet: float = 2.0, timeout: float = 120) -> float:
        """Until the operator has sent no request for `quiet` seconds (the leader Lease's
        renewals aside: they never stop); returns the time taken."""
        started = time.monotonic()
        last = beyond_lease(scrape(api).flows)
        last_change = time.monotonic()
        while time.monotonic() - last_change < quiet:
            if not self.alive():
                raise RuntimeError(f"the operator exited; see {self.log}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the operator did not go idle in {timeout:g}s")
            time.sleep(0.5)
            now = beyond_lease(scrape(api).flows)
            if now != last:
                last, last_change = now, time.monotonic()
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL, as a node failure would do."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (Kopf stops gracefully), then SIGKILL if it lingers: this process only."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_pids() -> dict[str, int]:
    """The local control plane's processes, as its scripts recorded them (read only)."""
    found: dict[str, int] = {}
    for pidfile in sorted((REPO_ROOT / ".cluster" / "pids").glob("*")):
        with suppress(OSError, ValueError):
            found[pidfile.name] = int(pidfile.read_text().strip())
    return found


def cpu_usage(pids: dict[str, int]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, pid in pids.items():
        with suppress(OSError, IndexError, ValueError):
            out[name] = cpu_seconds(pid)
    return out


class MemorySampler:
    """Samples the operator's VmRSS in a thread: the peak, and when it happened."""

    def __init__(self, operator: OperatorProcess, interval: float = 0.05) -> None:
        self.operator, self.interval = operator, interval
        self.peak_kib = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with suppress(OSError, KeyError):
                rss = self.operator.memory_kib("VmRSS")
                self.peak_kib = max(self.peak_kib, rss)
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

"""The local cluster's job runner: the containers of Job pods run as real processes here.

    python -m cluster.job_runner --kubeconfig .cluster/kubeconfig --state-dir .cluster/job-runner

from the repository's root (cluster/up.sh starts it so). It needs root.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from cluster.job_runner.api import Api
from cluster.job_runner.sandbox import SANDBOX_TOOLS, HostLayout, sandbox_problem, tool
from cluster.job_runner.watch import JOB_NAME_LABEL, Runner

log = logging.getLogger("job-runner")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.job_runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True, type=Path, help="pod files and logs")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=2.0,
        help="seconds a process gets between SIGTERM and SIGKILL when the runner stops",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if os.geteuid() != 0:
        log.error("the job runner needs root: it uses mount namespaces, chroot and setpriv")
        return 1
    try:
        for name in SANDBOX_TOOLS:
            tool(name)
    except RuntimeError as error:
        log.error("%s", error)
        return 1
    os.umask(0o022)
    state_dir: Path = args.state_dir.resolve()
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    (state_dir / "pods").mkdir(mode=0o700, exist_ok=True)
    if problem := sandbox_problem(state_dir / "pods"):
        log.error("containers cannot be given their own filesystem view here: %s", problem)
        return 1
    runner = Runner(Api(args.kubeconfig), state_dir, HostLayout.of_host(), args.shutdown_grace)
    runner.ready_file.unlink(missing_ok=True)

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    threading.Thread(target=runner.serve, args=(stopping,), name="watch", daemon=True).start()
    log.info("watching pods labelled %s as %s", JOB_NAME_LABEL, runner.me)
    while not stopping.wait(1):
        pass
    log.info("stopping")
    runner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

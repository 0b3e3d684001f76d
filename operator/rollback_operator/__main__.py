"""`python -m rollback_operator` / `rollback-operator`: run the operator."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import sys
from urllib.parse import urlparse

from rollback_operator import __version__

# The operator's own dependencies are the `operator` extra: the distribution installed without
# it (for kubectl-rollback alone) must say so rather than fail with a traceback.
OPERATOR_EXTRA = ("kopf", "httpx", "httpcore", "prometheus_client")
try:
    import kopf
    import prometheus_client
    from aiohttp import web

    import rollback_operator.handlers  # noqa: F401  (registers the handlers with Kopf)
    from rollback_operator import history, leadership
    from rollback_operator.kube import ApiError, Kube
    from rollback_operator.redaction import install_log_scrubbing
except ModuleNotFoundError as missing:
    if (missing.name or "").split(".")[0] not in OPERATOR_EXTRA:
        raise
    _MISSING: str | None = missing.name
else:
    _MISSING = None

LOG_FORMATS = ("text", "json")
# Where a pod finds its own namespace (the ServiceAccount's mount).
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rollback-operator",
        description="Runs RollbackRequests: the production rollback runbook, step by step.",
    )
    scope = parser.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (default: %(default)s); empty to disable",
    )
    parser.add_argument(
        "--metrics",
        default="0.0.0.0:9090",
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: %(default)s); "
        "empty to disable",
    )
    parser.add_argument(
        "--leader-election-namespace",
        metavar="NS",
        help="the namespace of the leader Lease (default: $POD_NAMESPACE, the pod's own "
        "namespace, else the first --namespace, else `default`)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default): one readable line a record; json: one JSON object a line, "
        "for log pipelines",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def configure_logging(log_format: str, verbose: bool) -> None:
    """Kopf's handler on the root logger, so the operator's own loggers, Kopf's and the
    libraries' all write in the one format chosen; every record scrubbed as it is made
    (`redaction.install_log_scrubbing`), since logs are shipped to places many people read."""
    install_log_scrubbing()
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )


def lease_namespace(args: argparse.Namespace) -> str:
    if args.leader_election_namespace:
        return str(args.leader_election_namespace)
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(POD_NAMESPACE_FILE):
        with open(POD_NAMESPACE_FILE) as file:
            return file.read().strip()
    return str(args.namespaces[0]) if args.namespaces else "default"


async def standby_health(liveness: str) -> web.AppRunner | None:
    """The liveness endpoint while this instance waits to lead (Kopf serves it after): a
    standby is alive, and its pod must not be restarted for waiting."""
    if not liveness:
        return None
    url = urlparse(liveness)
    app = web.Application()

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app.router.add_get(url.path or "/", alive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port).start()
    return runner


async def label_history(args: argparse.Namespace) -> None:
    """Finished requests not yet labelled, labelled before Kopf lists them (history.py); the
    Lease is kept meanwhile. On failure Kopf labels them, one by one (handlers.mark_finished)."""
    log = logging.getLogger("rollback_operator")
    kube = Kube.from_environment(pool_size=history.PARALLEL)
    try:
        labelled = await asyncio.to_thread(history.label_history, kube, args.namespaces)
    except ApiError as error:
        log.warning("could not label the finished requests before starting: %s", error)
        return
    if labelled:
        log.info("labelled %d finished request(s) finished, before starting", labelled)


async def run(args: argparse.Namespace) -> None:
    """Waits for the leader Lease, then runs Kopf until it stops or the Lease is lost."""
    kube = Kube.from_environment(pool_size=2)
    lead = leadership.Leadership(kube, lease_namespace(args), leadership.identity())
    health = await standby_health(args.liveness)
    await leadership.acquire(lead)

    def on_lost() -> None:
        # Another instance may be leading already: exit at once, without finishing any work
        # or waiting for a call that hangs (a restart makes this pod a standby; every step
        # resumes from the ledger).
        logging.getLogger("rollback_operator").error("lost the leader Lease: exiting")
        logging.shutdown()
        os._exit(1)

    keeper = asyncio.create_task(leadership.keep(lead, on_lost))
    try:
        await label_history(args)
        if health is not None:
            await health.cleanup()
        await kopf.operator(
            standalone=True,
            clusterwide=args.all_namespaces,
            namespaces=args.namespaces or (),
            liveness_endpoint=args.liveness or None,
        )
    finally:
        keeper.cancel()
        await asyncio.to_thread(lead.release)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def fewer_malloc_arenas(arenas: int = 2) -> bool:
    """Caps glibc's malloc arenas, as MALLOC_ARENA_MAX does, however the operator is started.

    glibc gives each thread that contends for malloc an arena of its own, up to eight per
    core; with a hundred runs in flight (their steps' worker threads, their watches) freed
    memory stays spread over a dozen arenas and the resident set keeps the high-water mark
    of each. Two arenas keep it compact, at no measurable cost in speed here: the GIL
    serialises the Python work anyway. Must run before any thread starts. False where the C
    library is not glibc (nothing to tune)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> None:
    fewer_malloc_arenas()
    args = parse_args(argv)
    if _MISSING is not None:
        sys.exit(
            f"rollback-operator: {_MISSING} is not installed: the operator needs the "
            "`operator` extra: pip install 'rollback-operator[operator]' "
            "(kubectl-rollback alone does not)"
        )
    configure_logging(args.log_format, args.verbose)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # a line per probe otherwise
    # httpx logs every request with its full URL at INFO, and a URL may be a credential (a
    # Slack webhook); the CDN, Prometheus, checks and notifications all go through httpx.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if args.metrics:
        host, _, port = args.metrics.rpartition(":")
        prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

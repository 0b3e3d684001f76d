"""examples/rollback.yaml made to run on one machine: every production address in the request
swapped for the local stand-in's (`transform`), saying what it swapped, and the monitoring
watch cut short. The example itself keeps reading like production. An address with no
stand-in is refused, not passed through."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from standins.local import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "rollback.yaml"
CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"

# The watch is 30 minutes in production; a demo cannot wait that long.
DEMO_WATCH = {"duration": "30s", "interval": "5s"}


@dataclass(frozen=True)
class Local:
    """Where the stand-ins listen: production `host:port` -> loopback `host:port` (every
    stand-in speaks plain HTTP), and the Cloudflare API base."""

    addresses: dict[str, str]
    cdn_api_base: str

    def to_dict(self) -> dict[str, Any]:
        return {"addresses": self.addresses, "cdnApiBase": self.cdn_api_base}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Local:
        return cls(dict(raw["addresses"]), str(raw["cdnApiBase"]))


@dataclass(frozen=True)
class Swap:
    field: str
    production: str
    local: str


_URL = re.compile(r"https?://[^\s\"'/]+")


def _swap_url(url: str, local: Local, where: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = local.addresses.get(f"{parts.hostname}:{port}")
    if found is None:
        raise ValueError(f"{where}: no local stand-in for {parts.hostname}:{port} ({url})")
    return urlunsplit(("http", found, parts.path, parts.query, parts.fragment))


def _swap_urls_in(text: str, local: Local, where: str) -> str:
    """Every http(s) origin inside a free text (a Job's arguments, an env value)."""
    return _URL.sub(lambda m: _swap_url(m.group(0), local, where), text)


def transform(
    request: dict[str, Any],
    local: Local,
    *,
    namespace: str | None = None,
    watch: dict[str, str] | None = None,
) -> tuple[dict[str, Any], list[Swap]]:
    """The request with every production address swapped for its stand-in's, the watch
    shortened (DEMO_WATCH unless `watch` says otherwise), and in `namespace` if given.

    Returns the new request and the list of swaps, in the order of the spec. Raises
    ValueError for an address no stand-in serves: an example that changed must be noticed."""
    out = copy.deepcopy(request)
    spec = out["spec"]
    swaps: list[Swap] = []

    def swap(path: str, old: Any, new: Any) -> Any:
        if old != new:
            swaps.append(Swap(path, str(old), str(new)))
        return new

    if namespace is not None:
        out["metadata"]["namespace"] = swap(
            "metadata.namespace", out["metadata"].get("namespace", ""), namespace
        )
    cdn = spec.get("cdn")
    if cdn is not None:
        if cdn.get("provider") != "cloudflare":
            raise ValueError("spec.cdn: the stand-in speaks Cloudflare's API only")
        old = cdn.get("apiBase", f"{CLOUDFLARE_API} (the default)")
        cdn["apiBase"] = swap("spec.cdn.apiBase", old, local.cdn_api_base)
    for check in (spec.get("verification") or {}).get("checks") or []:
        where = f"spec.verification.checks[{check['name']}]"
        if "http" in check:
            url = check["http"]["url"]
            check["http"]["url"] = swap(f"{where}.http.url", url, _swap_url(url, local, where))
        if "tcp" in check:
            tcp = check["tcp"]
            production = f"{tcp['host']}:{tcp['port']}"
            found = local.addresses.get(production)
            if found is None:
                raise ValueError(f"{where}: no local stand-in for {production}")
            swap(f"{where}.tcp", production, found)
            host, _, port = found.rpartition(":")
            tcp["host"], tcp["port"] = host, int(port)
        if "job" in check:
            job = check["job"]
            for key in [k for k in ("command", "args") if k in job]:
                job[key] = [
                    swap(f"{where}.job.{key}[{i}]", text, _swap_urls_in(text, local, where))
                    for i, text in enumerate(job[key])
                ]
            for env in job.get("env") or []:
                if "value" in env:
                    env["value"] = swap(
                        f"{where}.job.env[{env['name']}]",
                        env["value"],
                        _swap_urls_in(env["value"], local, where),
                    )
    monitoring = spec.get("monitoring")
    if monitoring is not None:
        url = monitoring["prometheus"]["url"]
        monitoring["prometheus"]["url"] = swap(
            "spec.monitoring.prometheus.url", url, _swap_url(url, local, "spec.monitoring")
        )
        for key, short in (watch or DEMO_WATCH).items():
            monitoring[key] = swap(f"spec.monitoring.{key}", monitoring.get(key, "-"), short)
    for hook in spec.get("notify") or []:
        if "url" in hook:
            where = f"spec.notify[{hook['name']}].url"
            hook["url"] = swap(where, hook["url"], _swap_url(hook["url"], local, where))
    return out, swaps


class _Dumper(yaml.SafeDumper):
    """Quotes the strings that YAML 1.1 parsers, kubectl's among them, read as booleans or
    null (a tcp check's `expect: N` is the letter N, not false)."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    ambiguous = text.lower() in {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"' if ambiguous else None)


_Dumper.add_representer(str, _represent_str)


def dump(request: dict[str, Any]) -> str:
    """The request as YAML that kubectl reads back exactly."""
    return yaml.dump(request, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_example(path: Path = EXAMPLE) -> dict[str, Any]:
    request: dict[str, Any] = yaml.safe_load(path.read_text())
    return request

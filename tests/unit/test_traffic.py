"""Ingress backends: found, located again on a later read, replaced, and described for humans.

EnableMaintenance saves each backend with its location and DisableMaintenance puts it back at
that location, so a location must still identify the same rule and path on a later read.
"""

from __future__ import annotations

import copy
from typing import Any

from rollback_operator.traffic import backend_at, backend_locations, describe, with_backends

APP = {"service": {"name": "frontend", "port": {"name": "http"}}}
API = {"service": {"name": "backend", "port": {"number": 8080}}}
DEFAULT = {"service": {"name": "fallback", "port": {"number": 80}}}
MAINTENANCE = {"service": {"name": "maintenance-page", "port": {"number": 80}}}
BUCKET = {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}}


def ingress() -> dict[str, Any]:
    return {
        "metadata": {"name": "site", "resourceVersion": "1"},
        "spec": {
            "ingressClassName": "nginx",
            "defaultBackend": copy.deepcopy(DEFAULT),
            "tls": [{"hosts": ["lawyershub.example"], "secretName": "tls"}],
            "rules": [
                {
                    "host": "lawyershub.example",
                    "http": {
                        "paths": [
                            {"path": "/api", "pathType": "Prefix", "backend": copy.deepcopy(API)},
                            {"path": "/", "pathType": "Prefix", "backend": copy.deepcopy(APP)},
                        ]
                    },
                },
                {"host": "static.example"},  # a rule without http: no backend
                {"http": {"paths": [{"pathType": "Prefix", "backend": copy.deepcopy(BUCKET)}]}},
            ],
        },
    }


def test_backend_locations_lists_default_then_every_path() -> None:
    """Every backend must be switched, or part of the site keeps serving the bad version."""
    found = backend_locations(ingress())
    assert found == [
        ({"default": True}, DEFAULT),
        ({"rule": 0, "path": 0, "host": "lawyershub.example", "pathValue": "/api"}, API),
        ({"rule": 0, "path": 1, "host": "lawyershub.example", "pathValue": "/"}, APP),
        ({"rule": 2, "path": 0, "host": "", "pathValue": ""}, BUCKET),
    ]


def test_backend_locations_of_an_ingress_without_backends_is_empty() -> None:
    """Preflight refuses such an Ingress: there is nothing to put on the maintenance page."""
    assert backend_locations({"spec": {"rules": [{"host": "a.example"}]}}) == []
    assert backend_locations({}) == []


def test_backend_at_finds_each_saved_location_again() -> None:
    """The saved location is how DisableMaintenance finds where to restore each backend."""
    obj = ingress()
    for location, backend in backend_locations(obj):
        assert backend_at(obj, location) == backend


def test_backend_at_refuses_a_location_whose_rule_or_path_moved() -> None:
    """A rule or path that moved is not the one saved: restoring there would misroute traffic."""
    obj = ingress()
    locations = [loc for loc, _ in backend_locations(obj)]
    api_location = locations[1]
    moved = copy.deepcopy(obj)
    moved["spec"]["rules"][0]["host"] = "other.example"
    assert backend_at(moved, api_location) is None
    renamed = copy.deepcopy(obj)
    renamed["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/v2"
    assert backend_at(renamed, api_location) is None
    shorter = copy.deepcopy(obj)
    del shorter["spec"]["rules"][0]["http"]["paths"][1]
    assert backend_at(shorter, locations[2]) is None
    fewer_rules = copy.deepcopy(obj)
    fewer_rules["spec"]["rules"] = fewer_rules["spec"]["rules"][:1]
    assert backend_at(fewer_rules, locations[3]) is None
    no_default = copy.deepcopy(obj)
    del no_default["spec"]["defaultBackend"]
    assert backend_at(no_default, {"default": True}) is None


def test_with_backends_replaces_only_the_given_locations() -> None:
    """Only the backends are written: TLS, the class and path types stay as they are."""
    obj = ingress()
    before = copy.deepcopy(obj)
    api_location = backend_locations(obj)[1][0]
    spec = with_backends(obj, [({"default": True}, MAINTENANCE), (api_location, MAINTENANCE)])
    assert set(spec) == {"defaultBackend", "rules"}
    assert spec["defaultBackend"] == MAINTENANCE
    paths = spec["rules"][0]["http"]["paths"]
    assert paths[0] == {"path": "/api", "pathType": "Prefix", "backend": MAINTENANCE}
    assert paths[1]["backend"] == APP
    assert spec["rules"][1:] == before["spec"]["rules"][1:]
    assert obj == before, "the Ingress read must not be changed in place"


def test_with_backends_copies_the_backend_it_writes() -> None:
    """The saved record must not alias the patch body: changing one must not change the other."""
    obj = ingress()
    replacement = copy.deepcopy(MAINTENANCE)
    spec = with_backends(obj, [({"default": True}, replacement)])
    replacement["service"]["name"] = "changed"
    assert spec["defaultBackend"] == MAINTENANCE


def test_with_backends_without_default_backend_writes_only_rules() -> None:
    """A defaultBackend must not appear on an Ingress that had none."""
    obj = ingress()
    del obj["spec"]["defaultBackend"]
    location = backend_locations(obj)[0][0]
    assert set(with_backends(obj, [(location, MAINTENANCE)])) == {"rules"}


def test_describe_names_service_and_port_or_resource() -> None:
    """Drift messages name backends the way an SRE reads them in `kubectl describe ingress`."""
    assert describe(API) == "backend:8080"
    assert describe(APP) == "frontend:http"
    assert describe(BUCKET) == "StorageBucket/static"
    assert describe(None) == "nothing"
    assert describe({}) == "nothing"

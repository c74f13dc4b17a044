"""Kubernetes workloads run hardened pods, and every namespace the stack deploys them into has a
NetworkPolicy.

A workload is a Deployment, DaemonSet, StatefulSet, Job, CronJob or bare Pod; its pod spec sits at
`spec.template.spec` (`spec.jobTemplate.spec.template.spec` for a CronJob, `spec` for a Pod). Inputs
are the Pulumi Kubernetes provider's, camelCase as in the manifests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from pulumi_policy import Severity
from pydantic import Field

from policy.analyzer_view import display, items_of, lookup, peek
from policy.rules.common import Resource, Rule, RuleConfig, violation

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": ("spec", "template", "spec"),
    "kubernetes:apps/v1:DaemonSet": ("spec", "template", "spec"),
    "kubernetes:apps/v1:StatefulSet": ("spec", "template", "spec"),
    "kubernetes:batch/v1:Job": ("spec", "template", "spec"),
    "kubernetes:batch/v1:CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "kubernetes:core/v1:Pod": ("spec",),
}
NAMESPACE_TYPE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY_TYPE = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
CONFINED_SECCOMP_PROFILES = ("RuntimeDefault", "Localhost")
CONTAINER_LISTS = ("initContainers", "containers")


class PodSecurityConfig(RuleConfig):
    # None of the platform's own workloads talks to the Kubernetes API: the model server serves HTTP,
    # the device plugin speaks to the kubelet's socket and the GPU metrics agent reads NVML and IMDS.
    api_workloads: list[str] = Field(
        [],
        description=(
            "Workloads (Kubernetes metadata.name) that call the Kubernetes API and so may mount a "
            "service-account token."
        ),
    )


def _containers(pod_spec: Any) -> Iterator[tuple[str, Any]]:
    """(property path within the pod spec, container) for every init and app container."""
    for kind in CONTAINER_LISTS:
        for index, container in enumerate(items_of(lookup(pod_spec, kind))):
            yield f"{kind}[{index}]", container


def check_pod_security(resource: Resource, config: PodSecurityConfig) -> Iterator[str]:
    path = POD_SPEC_PATHS.get(resource.type)
    if path is None:
        return
    pod_spec = lookup(resource.props, *path, default={})
    spec = ".".join(path)
    workload = peek(resource.props, "metadata", "name", default=resource.name)
    automount = lookup(pod_spec, "automountServiceAccountToken")
    if automount is not False and workload not in config.api_workloads:
        yield violation(
            resource,
            f"{spec}.automountServiceAccountToken",
            display(automount) + (" (defaults to true)" if automount is None else ""),
            f"set it false; a workload that calls the Kubernetes API is listed by name ({workload!r}) "
            "in apiWorkloads",
        )
    pod_seccomp = lookup(pod_spec, "securityContext", "seccompProfile", "type")
    unconfined_by_default = []
    for where, container in _containers(pod_spec):
        prop = f"{spec}.{where}.securityContext"
        own_seccomp = lookup(container, "securityContext", "seccompProfile", "type")
        if own_seccomp is None and pod_seccomp not in CONFINED_SECCOMP_PROFILES:
            unconfined_by_default.append(where)
        elif own_seccomp is not None and own_seccomp not in CONFINED_SECCOMP_PROFILES:
            yield violation(
                resource,
                f"{prop}.seccompProfile.type",
                display(own_seccomp),
                "use RuntimeDefault (or Localhost)",
            )
        capabilities = lookup(container, "securityContext", "capabilities", "drop")
        dropped = [str(capability) for capability in items_of(capabilities)]
        if "ALL" not in dropped:
            yield violation(
                resource,
                f"{prop}.capabilities.drop",
                display(dropped) if dropped else "not set",
                'drop every capability: include "ALL" (add back only what the container needs)',
            )
        escalation = lookup(container, "securityContext", "allowPrivilegeEscalation")
        if escalation is not False:
            yield violation(
                resource,
                f"{prop}.allowPrivilegeEscalation",
                display(escalation) + (" (defaults to true)" if escalation is None else ""),
                "set allowPrivilegeEscalation: false",
            )
    if unconfined_by_default:
        yield violation(
            resource,
            f"{spec}.securityContext.seccompProfile.type",
            f"{display(pod_seccomp)} (for {', '.join(unconfined_by_default)})",
            "set seccompProfile.type RuntimeDefault (or Localhost) on the pod or on every container",
        )


def _namespace_of(resource: Resource, namespaces: Sequence[Resource]) -> Resource | None:
    """The stack's namespace the resource is in: by name, or by the dependency of an unknown one."""
    wanted = peek(resource.props, "metadata", "namespace")
    for namespace in namespaces:
        if isinstance(wanted, str):
            if wanted == peek(namespace.props, "metadata", "name"):
                return namespace
        elif namespace.urn in resource.property_dependencies.get("metadata", frozenset()):
            return namespace
    return None


def check_namespace_network_policies(
    resources: Sequence[Resource], _config: None
) -> Iterator[tuple[str | None, str]]:
    namespaces = [r for r in resources if r.type == NAMESPACE_TYPE]
    covered = {
        found.urn
        for policy in resources
        if policy.type == NETWORK_POLICY_TYPE and (found := _namespace_of(policy, namespaces)) is not None
    }
    workloads_by_namespace: dict[str, list[str]] = {}
    for workload in resources:
        if workload.type in POD_SPEC_PATHS and (found := _namespace_of(workload, namespaces)) is not None:
            workloads_by_namespace.setdefault(found.urn, []).append(workload.name)
    for namespace in namespaces:
        workloads = workloads_by_namespace.get(namespace.urn)
        if workloads and namespace.urn not in covered:
            yield (
                namespace.urn,
                violation(
                    namespace,
                    "network policy",
                    f"not configured (workloads: {', '.join(workloads)})",
                    "add a kubernetes NetworkPolicy in it: deny by default, then admit the traffic its "
                    "workloads serve",
                ),
            )


POD_SECURITY_RULE = Rule(
    name="kubernetes-pod-security",
    description=(
        "Kubernetes workloads mount no service-account token unless allowlisted, run under a confined "
        "seccomp profile, drop all capabilities and forbid privilege escalation."
    ),
    severity=Severity.HIGH,
    check=check_pod_security,
    config_model=PodSecurityConfig,
)

NETWORK_POLICY_RULE = Rule(
    name="kubernetes-namespace-network-policy",
    description="Every namespace the stack creates and deploys workloads into has a NetworkPolicy.",
    severity=Severity.HIGH,
    check=check_namespace_network_policies,
    stack_level=True,
)

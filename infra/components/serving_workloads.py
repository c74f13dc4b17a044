"""ServingWorkloads: the Kubernetes side of serving, deployed through the cluster's own kubeconfig.

Every workload carries the `team` and `project` labels (pods included), which is what per-workload
cost allocation (split cost allocation data, Kubecost) groups by.

Hardening: the serving namespace enforces the `restricted` Pod Security Standard and denies all
traffic but the model server's own (a default-deny NetworkPolicy plus allows); no pod mounts a
Kubernetes API token, because none calls the API. The GPU node agents need host paths and the
host network, which no level short of `privileged` admits, so they get a namespace of their own
rather than loosening the serving namespace. NetworkPolicies here are plain `networking.k8s.io/v1`:
on EKS the VPC CNI enforces them once its network-policy agent is enabled (`enableNetworkPolicy`
in the vpc-cni add-on configuration); without an enforcing agent they are accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.components.serving_cluster import GPU_NODE_LABEL, GPU_TAINT
from infra.config import ServingConfig
from mlp.gpu_metrics import cloudwatch_agent_config_json
from mlp.tags import WORKLOAD_LABELS

MODEL_SERVER = "model-server"
DEVICE_PLUGIN_APP = "nvidia-device-plugin"
GPU_METRICS_APP = "cloudwatch-agent-gpu"
# Where the GPU node agents run: their host access needs the `privileged` Pod Security level.
NODE_AGENTS_NAMESPACE = "gpu-node-agents"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
NAME_LABEL = "app.kubernetes.io/name"
PSA_LABEL = "pod-security.kubernetes.io"
MODEL_SERVER_UID = 10001
HTTPS_PORT = 443
DNS_PORT = 53
# Egress rules every workload namespace's policies share: cluster DNS, and HTTPS anywhere (AWS APIs
# answer on public or endpoint addresses that no fixed CIDR names).
DNS_EGRESS: dict[str, Any] = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"protocol": "UDP", "port": DNS_PORT}, {"protocol": "TCP", "port": DNS_PORT}],
}
HTTPS_EGRESS: dict[str, Any] = {
    "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
    "ports": [{"protocol": "TCP", "port": HTTPS_PORT}],
}
# Scratch space under read-only root filesystems.
SCRATCH_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}
SCRATCH_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def container_security(*, read_only_root: bool = True) -> dict:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


@dataclass(frozen=True)
class ServingWorkloadsArgs:
    # Namespace, model server, DaemonSet images and the Kubernetes version the PSA labels pin.
    config: ServingConfig
    gpu_nodes: bool
    # The model server's sources (load balancer targets, in-cluster clients: pod IPs are VPC IPs
    # under the VPC CNI) and the feature store it reads live in this CIDR.
    vpc_cidr: pulumi.Input[str]
    feature_store_port: int
    # The environment's tags; the workload labels are taken from them.
    tags: Mapping[str, str]


def pod_security_labels(level: str, version: str) -> dict[str, str]:
    """Pod Security admission at `level` for enforce, audit and warn, pinned to the cluster's version.

    Pinning the version keeps a control-plane upgrade from changing what is admitted; the
    version follows `serving.kubernetesVersion`, so it moves with the cluster.
    """
    return {
        f"{PSA_LABEL}/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn")
        for suffix, value in (("", level), ("-version", version))
    }


def _selector(app: str) -> dict[str, dict[str, str]]:
    return {"matchLabels": {NAME_LABEL: app}}


class ServingWorkloads(pulumi.ComponentResource):
    """Namespaces, model server (Deployment, Service, HPA, PDB, NetworkPolicies) and the GPU node agents.

    Outputs: `namespace`, `service_name`.
    """

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServingWorkloadsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:ServingWorkloads", name, None, opts)
        self._name = name
        self._labels = {key: args.tags[key] for key in WORKLOAD_LABELS}
        self._psa_version = f"v{args.config.kubernetes_version}"
        child = pulumi.ResourceOptions(parent=self)
        server = args.config.model_server
        gpu = server.gpu and args.gpu_nodes
        app_labels = {NAME_LABEL: MODEL_SERVER, **self._labels}

        namespace = self._namespace("ns", args.config.namespace, "restricted")
        namespace_name = namespace.metadata["name"]
        metadata = {"name": MODEL_SERVER, "namespace": namespace_name, "labels": app_labels}
        service_account = self._service_account(MODEL_SERVER, namespace_name, app_labels)

        resources: dict[str, dict[str, str]] = {
            "requests": {"cpu": server.cpu, "memory": server.memory},
            "limits": {"memory": server.memory},
        }
        if gpu:
            resources["requests"][GPU_RESOURCE] = "1"
            resources["limits"][GPU_RESOURCE] = "1"
        probe = {"path": server.health_path, "port": "http"}
        pod_spec = {
            "serviceAccountName": service_account.metadata["name"],
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": MODEL_SERVER_UID,
                "runAsGroup": MODEL_SERVER_UID,
                "fsGroup": MODEL_SERVER_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": MODEL_SERVER,
                    "image": server.image,
                    **({"command": list(server.command)} if server.command else {}),
                    "ports": [{"name": "http", "containerPort": server.port, "protocol": "TCP"}],
                    "resources": resources,
                    "readinessProbe": {"httpGet": probe, "periodSeconds": 5, "failureThreshold": 3},
                    "livenessProbe": {"httpGet": probe, "initialDelaySeconds": 15, "periodSeconds": 10},
                    "securityContext": container_security(),
                    "volumeMounts": [SCRATCH_MOUNT],
                }
            ],
            "volumes": [SCRATCH_VOLUME],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": _selector(MODEL_SERVER),
                }
            ],
        }
        if gpu:
            pod_spec["nodeSelector"] = {GPU_NODE_LABEL: "true"}
            pod_spec["tolerations"] = [GPU_TOLERATION]

        deployment = k8s.apps.v1.Deployment(
            f"{name}-model-server",
            metadata=metadata,
            spec={
                "replicas": server.min_replicas,
                "selector": _selector(MODEL_SERVER),
                "template": {"metadata": {"labels": app_labels}, "spec": pod_spec},
            },
            # The HPA owns the replica count after the first deploy.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["spec.replicas"]),
        )
        service = k8s.core.v1.Service(
            f"{name}-model-server",
            metadata=metadata,
            spec={
                "type": "ClusterIP",
                "selector": {NAME_LABEL: MODEL_SERVER},
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=child,
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-model-server",
            metadata=metadata,
            spec={
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment.metadata["name"],
                },
                "minReplicas": server.min_replicas,
                "maxReplicas": server.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": server.target_cpu_utilization_pct,
                            },
                        },
                    }
                ],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-model-server",
            metadata=metadata,
            spec={"maxUnavailable": 1, "selector": _selector(MODEL_SERVER)},
            opts=child,
        )
        self._default_deny("ns", namespace_name)
        self._model_server_network_policy(metadata, server.port, args.vpc_cidr, args.feature_store_port)
        if args.gpu_nodes:
            agents = self._namespace("node-agents-ns", NODE_AGENTS_NAMESPACE, "privileged")
            agents_name = agents.metadata["name"]
            # The device plugin needs no network (it talks to the kubelet over a Unix socket) and the
            # CloudWatch agent runs in the host's network namespace, which NetworkPolicies do not
            # reach: deny everything for any other pod that ends up here.
            self._default_deny("node-agents-ns", agents_name)
            self._device_plugin(agents_name, args.config.device_plugin_image)
            self._gpu_metrics(agents_name, args.config.cloudwatch_agent_image)

        self.namespace = namespace_name
        self.service_name = service.metadata["name"]
        self.register_outputs({"namespace": self.namespace, "service_name": self.service_name})

    def _namespace(self, suffix: str, name: str, pod_security_level: str) -> k8s.core.v1.Namespace:
        return k8s.core.v1.Namespace(
            f"{self._name}-{suffix}",
            metadata={
                "name": name,
                "labels": {**self._labels, **pod_security_labels(pod_security_level, self._psa_version)},
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _service_account(
        self, app: str, namespace: pulumi.Input[str], labels: Mapping[str, str]
    ) -> k8s.core.v1.ServiceAccount:
        """A workload's own identity, without an API token: none of these workloads calls the API."""
        return k8s.core.v1.ServiceAccount(
            f"{self._name}-{app}",
            metadata={"name": app, "namespace": namespace, "labels": dict(labels)},
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _default_deny(self, suffix: str, namespace: pulumi.Input[str]) -> None:
        """No ingress or egress for any pod of `namespace` unless another policy allows it."""
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-{suffix}-default-deny",
            metadata={"name": "default-deny", "namespace": namespace, "labels": self._labels},
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _model_server_network_policy(
        self, metadata: Mapping, port: int, vpc_cidr: pulumi.Input[str], feature_store_port: int
    ) -> None:
        from_vpc = [{"ipBlock": {"cidr": vpc_cidr}}]
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-model-server",
            metadata=dict(metadata),
            spec={
                "podSelector": _selector(MODEL_SERVER),
                "policyTypes": ["Ingress", "Egress"],
                # Load balancer targets, in-cluster clients and the kubelet's probes all come from the VPC.
                "ingress": [{"from": from_vpc, "ports": [{"protocol": "TCP", "port": port}]}],
                "egress": [
                    DNS_EGRESS,
                    {"to": from_vpc, "ports": [{"protocol": "TCP", "port": feature_store_port}]},
                    # S3 answers on public addresses (reached through the gateway endpoint) that no
                    # fixed CIDR names, and STS for IRSA may be an interface endpoint in the VPC or
                    # public: HTTPS goes anywhere, everything else stays denied.
                    HTTPS_EGRESS,
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _gpu_node_daemonset(
        self,
        app: str,
        namespace: pulumi.Input[str],
        container: dict,
        volume: dict,
        *,
        host_network: bool = False,
        read_only_root: bool = True,
    ) -> k8s.apps.v1.DaemonSet:
        """A node agent on every GPU node (selected and tolerated), as root, with one container and volume.

        Root because both agents need it: the device plugin creates its socket in the kubelet's
        root-owned device-plugins directory, and the CloudWatch agent's shared config
        (`run_as_user: root`, as on the training fleets) makes it run as root. All capabilities are
        still dropped, so root here cannot override file permissions or touch the host beyond its mount.
        """
        app_labels = {NAME_LABEL: app, **self._labels}
        service_account = self._service_account(app, namespace, app_labels)
        return k8s.apps.v1.DaemonSet(
            f"{self._name}-{app}",
            metadata={"name": app, "namespace": namespace, "labels": app_labels},
            spec={
                "selector": _selector(app),
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": app_labels},
                    "spec": {
                        "serviceAccountName": service_account.metadata["name"],
                        "automountServiceAccountToken": False,
                        "priorityClassName": "system-node-critical",
                        "hostNetwork": host_network,
                        "nodeSelector": {GPU_NODE_LABEL: "true"},
                        "tolerations": [GPU_TOLERATION],
                        "securityContext": {
                            "runAsNonRoot": False,
                            "runAsUser": 0,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [
                            {
                                "name": app,
                                "securityContext": container_security(read_only_root=read_only_root),
                                **container,
                                "volumeMounts": [*container["volumeMounts"], SCRATCH_MOUNT],
                            }
                        ],
                        "volumes": [volume, SCRATCH_VOLUME],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _device_plugin(self, namespace: pulumi.Input[str], image: str) -> None:
        # Mounts only the kubelet's device-plugins directory: it registers over the kubelet's socket
        # there and never calls the Kubernetes API.
        self._gpu_node_daemonset(
            DEVICE_PLUGIN_APP,
            namespace,
            {
                "image": image,
                "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "200m", "memory": "128Mi"},
                },
                "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
            },
            {
                "name": "device-plugin",
                "hostPath": {"path": "/var/lib/kubelet/device-plugins", "type": "Directory"},
            },
        )

    def _gpu_metrics(self, namespace: pulumi.Input[str], image: str) -> None:
        """The CloudWatch agent on GPU nodes, publishing the same GPU metrics as the training fleets.

        Without it the idle-GPU scan could only judge serving GPU nodes on CPU, and a busy inference
        GPU behind an idle CPU would look idle. The node role already carries CloudWatchAgentServerPolicy.
        Its config collects `nvidia_gpu` only (no Container Insights, no Kubernetes metadata), so it
        needs no Kubernetes API access.
        """
        config = k8s.core.v1.ConfigMap(
            f"{self._name}-{GPU_METRICS_APP}",
            metadata={"name": GPU_METRICS_APP, "namespace": namespace, "labels": self._labels},
            data={"cwagentconfig.json": cloudwatch_agent_config_json()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._gpu_node_daemonset(
            GPU_METRICS_APP,
            namespace,
            {
                "image": image,
                # The NVIDIA container runtime mounts nvidia-smi for these; the agent's nvidia_gpu plugin calls it.
                "env": [
                    {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                    {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
                    {"name": "RUN_IN_CONTAINER", "value": "True"},
                ],
                "resources": {
                    "requests": {"cpu": "50m", "memory": "128Mi"},
                    "limits": {"cpu": "200m", "memory": "256Mi"},
                },
                "volumeMounts": [{"name": "config", "mountPath": "/etc/cwagentconfig", "readOnly": True}],
            },
            {"name": "config", "configMap": {"name": config.metadata["name"]}},
            # The host's network namespace: the agent resolves ${aws:InstanceId} from the node's IMDS.
            host_network=True,
            # At start the agent translates its JSON config into files under
            # /opt/aws/amazon-cloudwatch-agent/etc, beside files the image ships there.
            read_only_root=False,
        )

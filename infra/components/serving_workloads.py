"""ServingWorkloads: the Kubernetes side of serving, deployed through the cluster's own kubeconfig.

Every workload carries the `team` and `project` labels (pods included), which is what per-workload
cost allocation (split cost allocation data, Kubecost) groups by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.serving_cluster import GPU_NODE_LABEL, GPU_TAINT
from infra.config import ModelServerConfig
from mlp.gpu_metrics import cloudwatch_agent_config_json
from mlp.tags import WORKLOAD_LABELS

MODEL_SERVER = "model-server"
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
CLOUDWATCH_AGENT_IMAGE = "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:1.300052.0b1024"
GPU_METRICS_APP = "cloudwatch-agent-gpu"
SYSTEM_NAMESPACE = "kube-system"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class ServingWorkloadsArgs:
    namespace: str
    model_server: ModelServerConfig
    gpu_nodes: bool
    # The environment's tags; the workload labels are taken from them.
    tags: Mapping[str, str]


class ServingWorkloads(pulumi.ComponentResource):
    """Namespace, model server (Deployment, Service, HPA, PDB) and the NVIDIA device plugin.

    Outputs: `namespace`, `service_name`.
    """

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServingWorkloadsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("ml-platform:infra:ServingWorkloads", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        labels = {key: args.tags[key] for key in WORKLOAD_LABELS}
        server = args.model_server
        gpu = server.gpu and args.gpu_nodes
        app_labels = {"app.kubernetes.io/name": MODEL_SERVER, **labels}

        namespace = k8s.core.v1.Namespace(
            f"{name}-ns", metadata={"name": args.namespace, "labels": labels}, opts=child
        )
        metadata = {"name": MODEL_SERVER, "namespace": namespace.metadata["name"], "labels": app_labels}

        resources: dict[str, dict[str, str]] = {
            "requests": {"cpu": server.cpu, "memory": server.memory},
            "limits": {"memory": server.memory},
        }
        if gpu:
            resources["requests"][GPU_RESOURCE] = "1"
            resources["limits"][GPU_RESOURCE] = "1"
        probe = {"path": server.health_path, "port": "http"}
        pod_spec = {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": MODEL_SERVER,
                    "image": server.image,
                    **({"command": list(server.command)} if server.command else {}),
                    "ports": [{"name": "http", "containerPort": server.port}],
                    "resources": resources,
                    "readinessProbe": {"httpGet": probe, "periodSeconds": 5, "failureThreshold": 3},
                    "livenessProbe": {"httpGet": probe, "initialDelaySeconds": 15, "periodSeconds": 10},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": MODEL_SERVER}},
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
                "selector": {"matchLabels": {"app.kubernetes.io/name": MODEL_SERVER}},
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
                "selector": {"app.kubernetes.io/name": MODEL_SERVER},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
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
            spec={"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": MODEL_SERVER}}},
            opts=child,
        )
        if args.gpu_nodes:
            self._device_plugin(name, labels)
            self._gpu_metrics(name, labels)

        self.namespace = namespace.metadata["name"]
        self.service_name = service.metadata["name"]
        self.register_outputs({"namespace": self.namespace, "service_name": self.service_name})

    def _gpu_node_daemonset(
        self,
        name: str,
        app: str,
        labels: Mapping[str, str],
        container: dict,
        volume: dict,
        *,
        host_network: bool = False,
    ) -> k8s.apps.v1.DaemonSet:
        """A system DaemonSet on every GPU node (selected and tolerated), with one container and volume."""
        app_labels = {"app.kubernetes.io/name": app, **labels}
        return k8s.apps.v1.DaemonSet(
            f"{name}-{app}",
            metadata={"name": app, "namespace": SYSTEM_NAMESPACE, "labels": app_labels},
            spec={
                "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
                "updateStrategy": {"type": "RollingUpdate"},
                "template": {
                    "metadata": {"labels": app_labels},
                    "spec": {
                        "priorityClassName": "system-node-critical",
                        "hostNetwork": host_network,
                        "nodeSelector": {GPU_NODE_LABEL: "true"},
                        "tolerations": [GPU_TOLERATION],
                        "containers": [
                            {
                                "name": app,
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                **container,
                            }
                        ],
                        "volumes": [volume],
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _device_plugin(self, name: str, labels: Mapping[str, str]) -> None:
        self._gpu_node_daemonset(
            name,
            "nvidia-device-plugin",
            labels,
            {
                "image": DEVICE_PLUGIN_IMAGE,
                "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
            },
            {"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}},
        )

    def _gpu_metrics(self, name: str, labels: Mapping[str, str]) -> None:
        """The CloudWatch agent on GPU nodes, publishing the same GPU metrics as the training fleets.

        Without it the idle-GPU scan could only judge serving GPU nodes on CPU, and a busy inference
        GPU behind an idle CPU would look idle. The node role already carries CloudWatchAgentServerPolicy.
        """
        config = k8s.core.v1.ConfigMap(
            f"{name}-{GPU_METRICS_APP}",
            metadata={"name": GPU_METRICS_APP, "namespace": SYSTEM_NAMESPACE, "labels": dict(labels)},
            data={"cwagentconfig.json": cloudwatch_agent_config_json()},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._gpu_node_daemonset(
            name,
            GPU_METRICS_APP,
            labels,
            {
                "image": CLOUDWATCH_AGENT_IMAGE,
                # The NVIDIA container runtime mounts nvidia-smi for these; the agent's nvidia_gpu plugin calls it.
                "env": [
                    {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                    {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "utility"},
                    {"name": "RUN_IN_CONTAINER", "value": "True"},
                ],
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "volumeMounts": [{"name": "config", "mountPath": "/etc/cwagentconfig", "readOnly": True}],
            },
            {"name": "config", "configMap": {"name": config.metadata["name"]}},
            # The host's network namespace: the agent resolves ${aws:InstanceId} from the node's IMDS.
            host_network=True,
        )

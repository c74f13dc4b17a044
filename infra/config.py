"""Stack configuration: read once into pydantic models, from `Pulumi.<stack>.yaml` or the Pulumi runtime.

Both paths (the real `pulumi up/preview` and the offline `mlp plan`) validate with the same models,
so a bad value fails the same way everywhere: one line naming the full key (for example
`ml-platform:featureStore.nodeType`) and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlp import pricing
from mlp.errors import ConfigError
from mlp.tags import DEFAULT_MANDATORY_TAGS, ENVIRONMENT, MANAGED_BY, MANAGED_BY_VALUE, invalid_tag

PROJECT = "ml-platform"
NAMESPACE = f"{PROJECT}:"
PROD = "prod"
# Stacks named so are training runs, one per run: the reaper's to destroy, never an environment's.
TRAINING_STACK_PREFIX = "train-"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _known_gpu_type(value: str) -> str:
    if not pricing.is_gpu_instance_type(value) or value not in pricing.EC2:
        allowed = ", ".join(sorted(t for t in pricing.EC2 if pricing.is_gpu_instance_type(t)))
        raise ValueError(f"{value!r} is not a priced GPU instance type; allowed: {allowed}")
    return value


def _known_instance_type(value: str) -> str:
    if value not in pricing.EC2:
        raise ValueError(
            f"{value!r} has no list price in mlp.pricing; allowed: {', '.join(sorted(pricing.EC2))}"
        )
    return value


def _known_cache_node_type(value: str) -> str:
    if value not in pricing.ELASTICACHE_HOURLY:
        raise ValueError(
            f"{value!r} is not allowed; use one of: {', '.join(sorted(pricing.ELASTICACHE_HOURLY))}"
        )
    return value


GpuInstanceType = Annotated[str, AfterValidator(_known_gpu_type)]
InstanceType = Annotated[str, AfterValidator(_known_instance_type)]
CacheNodeType = Annotated[str, AfterValidator(_known_cache_node_type)]
ResourceId = Annotated[str, Field(pattern=r"^[a-z]+-[0-9a-f]{8,17}$")]


class NetworkConfig(_Model):
    """A new VPC (`vpcCidr`) or an existing one (`existingVpcId` + `existingPrivateSubnetIds`)."""

    vpc_cidr: str | None = "10.40.0.0/16"
    availability_zones: int = Field(2, ge=2, le=6)
    nat_gateways: Literal["none", "single", "perAz"] = "single"
    # Interface endpoints keep AWS API traffic (ECR pulls, STS for IRSA, logs) off the NAT gateway.
    interface_endpoints: tuple[str, ...] = ("ecr.api", "ecr.dkr", "sts", "logs")
    existing_vpc_id: ResourceId | None = None
    existing_private_subnet_ids: tuple[ResourceId, ...] = ()

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            network = ipaddress.ip_network(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR block like 10.40.0.0/16") from None
        if not 16 <= network.prefixlen <= 20:
            raise ValueError(f"{value!r} must be a /16 to /20 so each AZ gets public and private subnets")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> NetworkConfig:
        if self.existing_vpc_id and len(self.existing_private_subnet_ids) < 2:
            raise ValueError(
                "existingVpcId needs existingPrivateSubnetIds with at least 2 subnets in different AZs"
            )
        if self.existing_private_subnet_ids and not self.existing_vpc_id:
            raise ValueError("existingPrivateSubnetIds needs existingVpcId")
        return self

    @property
    def creates_vpc(self) -> bool:
        return self.existing_vpc_id is None


class CheckpointConfig(_Model):
    noncurrent_version_expiration_days: int = Field(30, ge=1, le=3650)
    abort_incomplete_upload_days: int = Field(3, ge=1, le=365)
    transition_runs_after_days: int | None = Field(None, ge=30)
    transition_storage_class: Literal["STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR"] = "GLACIER_IR"


class FeatureStoreConfig(_Model):
    node_type: CacheNodeType = "cache.t4g.small"
    num_nodes: int = Field(1, ge=1, le=6)
    engine_version: str = Field("7.1", pattern=r"^[67]\.\d+$")
    snapshot_retention_days: int = Field(0, ge=0, le=35)
    port: int = Field(6379, ge=1024, le=65535)


class NodeGroupConfig(_Model):
    instance_types: tuple[InstanceType, ...] = Field(("m6i.large",), min_length=1)
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: int = Field(1, ge=0)
    desired_size: int = Field(2, ge=0)
    max_size: int = Field(4, ge=1)
    disk_size_gb: int = Field(50, ge=20, le=2000)

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroupConfig:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError("sizes must satisfy minSize <= desiredSize <= maxSize")
        return self


class GpuNodeGroupConfig(NodeGroupConfig):
    enabled: bool = False
    instance_types: tuple[GpuInstanceType, ...] = Field(("g5.xlarge", "g6.xlarge"), min_length=1)
    min_size: int = Field(0, ge=0)
    desired_size: int = Field(1, ge=0)
    max_size: int = Field(2, ge=1)
    disk_size_gb: int = Field(100, ge=20, le=2000)


class ModelServerConfig(_Model):
    image: str = Field("public.ecr.aws/docker/library/python:3.12-slim", min_length=3)
    # Empty: the image's own entrypoint (e.g. Triton, vLLM); set it for a stand-in server.
    command: tuple[str, ...] = ()
    health_path: str = Field("/", pattern=r"^/")
    port: int = Field(8080, ge=1, le=65535)
    gpu: bool = False
    min_replicas: int = Field(2, ge=1)
    max_replicas: int = Field(6, ge=1)
    target_cpu_utilization_pct: int = Field(70, ge=10, le=95)
    cpu: str = "500m"
    memory: str = "1Gi"

    @model_validator(mode="after")
    def _replicas(self) -> ModelServerConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class ServingConfig(_Model):
    kubernetes_version: str = Field("1.31", pattern=r"^1\.\d{2}$")
    endpoint_public_access: bool = False
    public_access_cidrs: tuple[str, ...] = ()
    cpu_node_group: NodeGroupConfig = NodeGroupConfig()
    gpu_node_group: GpuNodeGroupConfig = GpuNodeGroupConfig()
    model_server: ModelServerConfig = ModelServerConfig()
    namespace: str = Field("serving", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class TrainingConfig(_Model):
    allowed_instance_types: tuple[GpuInstanceType, ...] = Field(
        ("g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge", "g4dn.xlarge"), min_length=3
    )
    max_gpus_per_run: int = Field(8, ge=1, le=512)
    max_run_hours: float = Field(24, gt=0, le=24 * 14)
    per_run_budget_usd: float = Field(500, gt=0)
    ami_ssm_parameter: str = Field(
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id",
        pattern=r"^/aws/service/",
    )
    root_volume_gb: int = Field(200, ge=50, le=16000)
    # Only with this set may the reaper destroy prod training stacks.
    reap_prod: bool = False


class BudgetsConfig(_Model):
    environment_monthly_usd: float = Field(5000, gt=0)
    team_monthly_usd: dict[str, float] = Field(default_factory=dict)
    alert_thresholds_pct: tuple[int, ...] = Field((80, 100), min_length=1)
    alert_emails: tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")], ...] = Field(
        min_length=1
    )
    anomaly_threshold_usd: float = Field(100, gt=0)
    # When true, policy rule "stack-monthly-budget" is mandatory instead of advisory.
    enforce_plan_budget: bool = False
    # Cost-allocation tags are account-wide: when dev and prod share an account, only one stack may own them.
    activate_cost_allocation_tags: bool = True

    @field_validator("alert_thresholds_pct")
    @classmethod
    def _thresholds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= pct <= 1000 for pct in value):
            raise ValueError("thresholds are percentages between 1 and 1000")
        return value


_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-\d$")


class StackConfig(_Model):
    """Everything `Pulumi.<stack>.yaml` says, validated. Field names are the camelCase config keys."""

    stack: str
    region: str
    environment: str = Field(pattern=r"^[a-z][a-z0-9-]{1,15}$")
    tags: dict[str, str]
    mandatory_tags: tuple[str, ...] = DEFAULT_MANDATORY_TAGS
    network: NetworkConfig = NetworkConfig()
    checkpoints: CheckpointConfig = CheckpointConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    serving: ServingConfig = ServingConfig()
    training: TrainingConfig = TrainingConfig()
    budgets: BudgetsConfig

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError(f"{value!r} is not an AWS region like us-east-1")
        return value

    @field_validator("tags")
    @classmethod
    def _tag_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            problem = invalid_tag(key, str(tag_value))
            if problem:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _environment_rules(self) -> StackConfig:
        missing = [key for key in self.mandatory_tags if not self.resource_tags.get(key, "").strip()]
        if missing:
            raise _KeyedError(
                "tags",
                f"missing value for mandatory tag(s) {', '.join(missing)}; set them under ml-platform:tags",
            )
        if self.is_prod:
            if self.feature_store.num_nodes < 2:
                raise _KeyedError(
                    "featureStore.numNodes", "prod needs at least 2 nodes for multi-AZ failover"
                )
            if self.serving.endpoint_public_access:
                raise _KeyedError(
                    "serving.endpointPublicAccess", "the prod API endpoint must be private; set false"
                )
            if self.serving.gpu_node_group.enabled and self.serving.gpu_node_group.capacity_type == "SPOT":
                raise _KeyedError("serving.gpuNodeGroup.capacityType", "prod serving nodes must be ON_DEMAND")
        return self

    @property
    def is_prod(self) -> bool:
        return self.environment == PROD

    @cached_property
    def resource_tags(self) -> dict[str, str]:
        """The mandatory tags every resource of this environment carries."""
        return {**self.tags, ENVIRONMENT: self.environment, MANAGED_BY: MANAGED_BY_VALUE}


class _KeyedError(ValueError):
    """A cross-field rule broken: carries the config key it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _full_key(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if not isinstance(part, int)]
    if not parts:
        return f"{PROJECT}:<root>"
    return NAMESPACE + ".".join(parts)


def _config_error(exc: ValidationError) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _KeyedError):
        return ConfigError(f"{NAMESPACE}{cause.key}: {cause.message}")
    location = error["loc"]
    if error["type"] == "missing":
        return ConfigError(f"{_full_key(location)}: missing; add it to the stack's Pulumi.<stack>.yaml")
    if error["type"] == "extra_forbidden":
        return ConfigError(f"{_full_key(location)}: unknown key; check its spelling against Pulumi.dev.yaml")
    message = str(cause) if cause is not None else error["msg"]
    return ConfigError(f"{_full_key(location)}: {message}")


def parse_stack_config(stack: str, raw: Mapping[str, Any]) -> StackConfig:
    """Validate a stack's config map (keys as in Pulumi.<stack>.yaml, e.g. `ml-platform:tags`)."""
    values: dict[str, Any] = {"stack": stack}
    region = raw.get("aws:region")
    if region is None:
        raise ConfigError("aws:region: missing; set it with `pulumi config set aws:region us-east-1`")
    values["region"] = region
    for key, value in raw.items():
        if key.startswith(NAMESPACE):
            values[key[len(NAMESPACE) :]] = value
        elif not key.startswith(("aws:", "kubernetes:", "pulumi:")):
            raise ConfigError(f"{key}: unknown namespace; project keys start with {NAMESPACE}")
    values.setdefault("environment", stack)
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc) from None


def find_project_dir(start: Path | None = None) -> Path:
    """The directory holding Pulumi.yaml: the given one, the current one, or a parent."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "Pulumi.yaml").is_file():
            return candidate
    raise ConfigError(
        f"no Pulumi.yaml in {here} or its parents; run from the project directory or pass --project-dir"
    )


def environment_stacks(project_dir: Path | None = None) -> frozenset[str]:
    """The environment stacks of the project: one per `Pulumi.<name>.yaml`, never a training run."""
    try:
        directory = find_project_dir(project_dir)
    except ConfigError:
        return frozenset()
    return frozenset(path.name[len("Pulumi.") : -len(".yaml")] for path in directory.glob("Pulumi.*.yaml"))


def read_stack_file(stack: str, project_dir: Path | None = None) -> dict[str, Any]:
    """The raw `config:` map of Pulumi.<stack>.yaml."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack):
        raise ConfigError(f"--stack {stack!r}: stack names are letters, digits, '-', '_' and '.'")
    if stack.startswith(TRAINING_STACK_PREFIX):
        raise ConfigError(
            f"--stack {stack!r}: names starting with {TRAINING_STACK_PREFIX!r} are reserved for training runs "
            f"(the reaper may destroy them); rename Pulumi.{stack}.yaml"
        )
    directory = find_project_dir(project_dir)
    path = directory / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        existing = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in directory.glob("Pulumi.*.yaml"))
        raise ConfigError(
            f"--stack {stack!r}: no {path.name} in {directory}; existing stacks: {', '.join(existing)}"
        )
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path.name}: not valid YAML ({exc.__class__.__name__}); fix the file's syntax"
        ) from None
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path.name}: `config:` must be a map of keys to values")
    return config


def load_stack_config(stack: str, project_dir: Path | None = None) -> StackConfig:
    """Read and validate `Pulumi.<stack>.yaml`."""
    return parse_stack_config(stack, read_stack_file(stack, project_dir))


def load_runtime_config() -> StackConfig:
    """Read the config the Pulumi engine hands the program (real CLI or mocks), validated the same way."""
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    raw: dict[str, Any] = {}
    for key, value in {**get_config_env(), **CONFIG.get()}.items():
        # The engine holds objects as JSON text; plain strings (regions, names) stay as they are.
        is_json = isinstance(value, str) and value[:1] in ("{", "[")
        raw[key] = json.loads(value) if is_json else value
    return parse_stack_config(pulumi.get_stack(), raw)


def runtime_config_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """A stack file's config map in the string form the Pulumi runtime holds (objects JSON-encoded)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}

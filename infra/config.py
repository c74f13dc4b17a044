"""Stack configuration: read once into pydantic models, from `Pulumi.<stack>.yaml` or the Pulumi runtime.

Both paths (the real `pulumi up/preview` and the offline `mlp plan`) validate with the same models,
so a bad value fails the same way everywhere: one line naming the full key (for example
`ml-platform:featureStore.nodeType`, or `aws:region`) and what is allowed.

The stack file itself is read by a restricted YAML loader: at most `MAX_STACK_FILE_BYTES`, UTF-8,
nesting at most `MAX_NESTING` deep, no anchors or aliases, only string keys and JSON-like values.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mlp import pricing
from mlp.errors import ConfigError
from mlp.tags import (
    DEFAULT_MANDATORY_TAGS,
    ENVIRONMENT,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    WORKLOAD_LABELS,
    invalid_tag,
)

PROJECT = "ml-platform"
NAMESPACE = f"{PROJECT}:"
PROD = "prod"
# Stacks named so are training runs, one per run: the reaper's to destroy, never an environment's.
TRAINING_STACK_PREFIX = "train-"
# Pulumi's own limit on stack names; also keeps `Pulumi.<stack>.yaml` under every file-name limit.
_STACK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")

# A real stack file is a few KiB; the cap bounds what a hostile or corrupted file can cost to read.
MAX_STACK_FILE_BYTES = 1 << 20
# The shipped stacks nest 5 deep (root, config, serving, modelServer, command).
MAX_NESTING = 50
# Interface endpoints the platform's workloads use, as in `com.amazonaws.<region>.<name>`: image pulls,
# IRSA/Pod Identity, logs and metrics, node bootstrap and autoscaling, SSM access, KMS, queues, events.
# S3 is left out on purpose: the network always creates the S3 gateway endpoint.
INTERFACE_ENDPOINT_SERVICES = frozenset(
    {
        "autoscaling",
        "ec2",
        "ec2messages",
        "ecr.api",
        "ecr.dkr",
        "eks",
        "eks-auth",
        "elasticloadbalancing",
        "events",
        "kms",
        "logs",
        "monitoring",
        "secretsmanager",
        "sqs",
        "ssm",
        "ssmmessages",
        "sts",
        "xray",
    }
)
# EKS quota: public endpoint access CIDR ranges per cluster.
MAX_PUBLIC_ACCESS_CIDRS = 40
# AWS allows 50 tags per resource; the platform adds up to 7 of its own (environment, managed-by,
# Name and the four training tags).
MAX_TAGS = 43
# AWS Budgets: 5 notifications per budget (one is the forecast alert), 10 e-mail subscribers each.
MAX_ALERT_THRESHOLDS = 4
MAX_ALERT_EMAILS = 10

# Bools are ints in Python and YAML reads `yes` as true: strict numbers and booleans refuse both slips.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]


def _shown(value: object, limit: int = 60) -> str:
    """A value as it appears in a message: repr, one line, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_shown(key: str) -> str:
    """A config key as written when it is plain text, else quoted so a newline or space shows."""
    return key if key.isprintable() and " " not in key and len(key) <= 100 else _shown(key)


def _matching(pattern: str, allowed: str) -> AfterValidator:
    """A string rule with its own words: `allowed` reads after the value, e.g. "must be ..."."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{_shown(value)} {allowed}")
        return value

    return AfterValidator(check)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # Budgets, hours and thresholds must be real amounts: YAML's .inf and .nan are not.
        allow_inf_nan=False,
    )


def _known_gpu_type(value: str) -> str:
    if not pricing.is_gpu_instance_type(value) or value not in pricing.EC2:
        allowed = ", ".join(sorted(t for t in pricing.EC2 if pricing.is_gpu_instance_type(t)))
        raise ValueError(f"{_shown(value)} is not a priced GPU instance type; allowed: {allowed}")
    return value


def _known_instance_type(value: str) -> str:
    if value not in pricing.EC2:
        raise ValueError(
            f"{_shown(value)} has no list price in mlp.pricing; allowed: {', '.join(sorted(pricing.EC2))}"
        )
    return value


def _known_cache_node_type(value: str) -> str:
    if value not in pricing.ELASTICACHE_HOURLY:
        raise ValueError(
            f"{_shown(value)} is not allowed; use one of: {', '.join(sorted(pricing.ELASTICACHE_HOURLY))}"
        )
    return value


def _ipv4_cidr(value: str) -> ipaddress.IPv4Network:
    """`value` as an IPv4 network in a.b.c.d/n form, or a ValueError saying what is wrong."""
    if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}", value):
        hint = " (AWS takes IPv4 here)" if ":" in value else ""
        raise ValueError(f"{_shown(value)} is not an IPv4 CIDR block like 10.40.0.0/16{hint}")
    try:
        return ipaddress.IPv4Network(value)
    except ValueError:
        pass
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(f"{_shown(value)} is not an IPv4 CIDR block like 10.40.0.0/16") from None
    raise ValueError(f"{_shown(value)} has host bits set; use {network}")


def _public_access_cidr(value: str) -> str:
    if _ipv4_cidr(value).prefixlen == 0:
        raise ValueError(
            f"{_shown(value)} opens the API endpoint to the whole internet; list your offices' or VPN's CIDRs"
        )
    return value


def _ecr_repository(value: str) -> str:
    """A private ECR repository, by ARN or by name in the stack's own account and region."""
    arn = re.fullmatch(r"arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/(.+)", value)
    name = arn.group(1) if arn else value
    if not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", name) or len(name) > 256:
        raise ValueError(
            f"{_shown(value)} is not an ECR repository: give a name like team/trainer or an ARN like "
            "arn:aws:ecr:us-east-1:123456789012:repository/team/trainer"
        )
    return value


def _interface_endpoint(value: str) -> str:
    if value == "s3":
        raise ValueError("'s3' is not needed: the network always creates the S3 gateway endpoint")
    if value not in INTERFACE_ENDPOINT_SERVICES:
        raise ValueError(
            f"{_shown(value)} is not an interface endpoint service the platform uses; allowed: "
            f"{', '.join(sorted(INTERFACE_ENDPOINT_SERVICES))}"
        )
    return value


# Kubernetes resource quantities (k8s.io/apimachinery resource.Quantity): a non-negative fixed-point
# number with a binary-SI (Ki..Ei), decimal-SI (n, u, m, k, M..E) or decimal-exponent (e3) suffix.
_QUANTITY = re.compile(
    r"\+?(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[eE][-+]?[0-9]+|[KMGTPE]i|[numkMGTPE])?"
)
_QUANTITY_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    **{f"{prefix}i": Decimal(1024**power) for power, prefix in enumerate("KMGTPE", start=1)},
}
# Kubernetes keeps quantities as 64-bit integers (milli-units for CPU, bytes for memory).
_INT64_MAX = Decimal(2**63 - 1)
_MEBIBYTE = Decimal(2**20)


def _quantity(value: str, example: str) -> Decimal:
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{_shown(value)} is not a Kubernetes quantity; write it like {example} "
            "(digits, then one suffix: m, k, M, G, Ki, Mi, Gi, Ti or an exponent like e3)"
        )
    suffix = match["suffix"] or ""
    try:
        if suffix[:1] in ("e", "E") and len(suffix) > 1:
            exponent = int(suffix[1:])
            if abs(exponent) > 30:
                raise ValueError(f"{_shown(value)} is out of range for a Kubernetes quantity")
            return Decimal(match["number"]).scaleb(exponent)
        return Decimal(match["number"]) * _QUANTITY_SCALE[suffix]
    except InvalidOperation:
        raise ValueError(f"{_shown(value)} is out of range for a Kubernetes quantity") from None


def _cpu_quantity(value: str) -> str:
    cores = _quantity(value, "500m or 2")
    millicores = cores * 1000
    if millicores <= 0 or millicores != millicores.to_integral_value():
        raise ValueError(
            f"{_shown(value)} must be a positive whole number of millicores (at least 1m; Kubernetes allows "
            "no finer CPU precision and the autoscaler needs a CPU request)"
        )
    if millicores > _INT64_MAX:
        raise ValueError(f"{_shown(value)} is out of range for a Kubernetes quantity")
    return value


def _memory_quantity(value: str) -> str:
    size = _quantity(value, "512Mi or 4Gi")
    if size != size.to_integral_value() or size < _MEBIBYTE:
        raise ValueError(
            f"{_shown(value)} must be a whole number of bytes, at least 1Mi, like 512Mi or 4Gi "
            "(a lowercase m means thousandths: 400m is 0.4 bytes)"
        )
    if size > _INT64_MAX:
        raise ValueError(f"{_shown(value)} is out of range for a Kubernetes quantity")
    return value


def _distinct(value: tuple[Any, ...]) -> tuple[Any, ...]:
    repeated = sorted({_shown(item) for item in value if value.count(item) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once; list each once")
    return value


_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_WORDS = (
    "must be 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit "
    "(it is also a Kubernetes label value)"
)


GpuInstanceType = Annotated[str, AfterValidator(_known_gpu_type)]
InstanceType = Annotated[str, AfterValidator(_known_instance_type)]
CacheNodeType = Annotated[str, AfterValidator(_known_cache_node_type)]
VpcId = Annotated[
    str, _matching(r"vpc-[0-9a-f]{8,17}", "must be a VPC id like vpc-0abc1234 (vpc- and 8-17 hex digits)")
]
SubnetId = Annotated[
    str,
    _matching(
        r"subnet-[0-9a-f]{8,17}", "must be a subnet id like subnet-0aaa1111 (subnet- and 8-17 hex digits)"
    ),
]
Ipv4Cidr = Annotated[str, AfterValidator(_public_access_cidr)]
EcrRepository = Annotated[str, AfterValidator(_ecr_repository)]
AthenaName = Annotated[
    str, _matching(r"[a-zA-Z0-9_.-]{1,128}", "must be an Athena/Glue name (1-128 letters, digits and _.-)")
]
ImageReference = Annotated[
    str,
    _matching(
        r"[^\s\x00-\x1f\x7f]{3,4096}",
        "must be a container image reference like public.ecr.aws/docker/library/python:3.12-slim or "
        "repository@sha256:<digest> (3-4096 characters, no spaces or control characters)",
    ),
]
# CloudWatch Logs takes only these retention periods.
LogRetentionDays = Literal[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653
]
EndpointService = Annotated[str, AfterValidator(_interface_endpoint)]
TeamName = Annotated[str, _matching(_LABEL_VALUE, "is not a team name: a team " + _LABEL_WORDS)]
Email = Annotated[
    str,
    Field(max_length=254),
    _matching(
        r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+",
        "is not an e-mail address: write one like finops@example.com (a name, one @, a domain with a dot, "
        "no spaces)",
    ),
]
UsdAmount = Annotated[float, Strict(), Field(gt=0)]


class NetworkConfig(_Model):
    """A new VPC (`vpcCidr`) or an existing one (`existingVpcId` + `existingPrivateSubnetIds`)."""

    vpc_cidr: str | None = "10.40.0.0/16"
    availability_zones: Int = Field(2, ge=2, le=6)
    nat_gateways: Literal["none", "single", "perAz"] = "single"
    # Interface endpoints keep AWS API traffic (ECR pulls, STS for IRSA, logs) off the NAT gateway.
    interface_endpoints: Annotated[tuple[EndpointService, ...], AfterValidator(_distinct)] = (
        "ecr.api",
        "ecr.dkr",
        "sts",
        "logs",
    )
    # VPC flow logs (all traffic) go to a KMS-encrypted log group kept this long.
    flow_log_retention_days: LogRetentionDays = 90
    existing_vpc_id: VpcId | None = None
    existing_private_subnet_ids: Annotated[tuple[SubnetId, ...], AfterValidator(_distinct)] = ()

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return value
        network = _ipv4_cidr(value)
        # AWS takes /16 to /28 for a VPC; each AZ's public and private subnet is a /n+4, so /20 at most.
        if not 16 <= network.prefixlen <= 20:
            raise ValueError(
                f"{_shown(value)} must be a /16 to /20 so each AZ gets public and private subnets"
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> NetworkConfig:
        if self.existing_vpc_id and len(self.existing_private_subnet_ids) < 2:
            raise ValueError(
                "existingVpcId needs existingPrivateSubnetIds with at least 2 subnets in different AZs"
            )
        if self.existing_private_subnet_ids and not self.existing_vpc_id:
            raise ValueError("existingPrivateSubnetIds needs existingVpcId")
        if self.existing_vpc_id is None and self.vpc_cidr is None:
            raise _KeyedError(
                "network.vpcCidr", "a new VPC needs a CIDR block like 10.40.0.0/16 (or set existingVpcId)"
            )
        return self

    @property
    def creates_vpc(self) -> bool:
        return self.existing_vpc_id is None


class CheckpointConfig(_Model):
    noncurrent_version_expiration_days: Int = Field(30, ge=1, le=3650)
    abort_incomplete_upload_days: Int = Field(3, ge=1, le=365)
    transition_runs_after_days: Int | None = Field(None, ge=30, le=36500)
    transition_storage_class: Literal["STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR"] = "GLACIER_IR"


class FeatureStoreConfig(_Model):
    node_type: CacheNodeType = "cache.t4g.small"
    num_nodes: Int = Field(1, ge=1, le=6)
    engine_version: Annotated[
        str, _matching(r"[67]\.[0-9]{1,2}", 'must be a Redis/Valkey engine version like "7.1" (6.x or 7.x)')
    ] = "7.1"
    snapshot_retention_days: Int = Field(0, ge=0, le=35)
    port: Int = Field(6379, ge=1024, le=65535)


class NodeGroupConfig(_Model):
    instance_types: tuple[InstanceType, ...] = Field(("m6i.large",), min_length=1)
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    min_size: Int = Field(1, ge=0, le=1000)
    desired_size: Int = Field(2, ge=0, le=1000)
    max_size: Int = Field(4, ge=1, le=1000)
    disk_size_gb: Int = Field(50, ge=20, le=2000)

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroupConfig:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError("sizes must satisfy minSize <= desiredSize <= maxSize")
        return self


class GpuNodeGroupConfig(NodeGroupConfig):
    enabled: Bool = False
    instance_types: tuple[GpuInstanceType, ...] = Field(("g5.xlarge", "g6.xlarge"), min_length=1)
    min_size: Int = Field(0, ge=0, le=1000)
    desired_size: Int = Field(1, ge=0, le=1000)
    max_size: Int = Field(2, ge=1, le=1000)
    disk_size_gb: Int = Field(100, ge=20, le=2000)


class ModelServerConfig(_Model):
    image: ImageReference = "public.ecr.aws/docker/library/python:3.12-slim"
    # Empty: the image's own entrypoint (e.g. Triton, vLLM); set it for a stand-in server.
    command: tuple[str, ...] = ()
    health_path: Annotated[
        str,
        _matching(r"/[!-~]{0,1023}", "must be a URL path starting with '/', without spaces, like /healthz"),
    ] = "/"
    port: Int = Field(8080, ge=1, le=65535)
    gpu: Bool = False
    min_replicas: Int = Field(2, ge=1, le=1000)
    max_replicas: Int = Field(6, ge=1, le=1000)
    target_cpu_utilization_pct: Int = Field(70, ge=10, le=95)
    cpu: Annotated[str, AfterValidator(_cpu_quantity)] = "500m"
    memory: Annotated[str, AfterValidator(_memory_quantity)] = "1Gi"

    @model_validator(mode="after")
    def _replicas(self) -> ModelServerConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        return self


class ServingConfig(_Model):
    kubernetes_version: Annotated[
        str, _matching(r"1\.[0-9]{2}", 'must be an EKS Kubernetes version like "1.31", quoted')
    ] = "1.31"
    endpoint_public_access: Bool = False
    public_access_cidrs: tuple[Ipv4Cidr, ...] = Field((), max_length=MAX_PUBLIC_ACCESS_CIDRS)
    cpu_node_group: NodeGroupConfig = NodeGroupConfig()
    gpu_node_group: GpuNodeGroupConfig = GpuNodeGroupConfig()
    model_server: ModelServerConfig = ModelServerConfig()
    # The node DaemonSets' images; pin them by digest (repository@sha256:...) to make rollouts exact.
    device_plugin_image: ImageReference = "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"
    cloudwatch_agent_image: ImageReference = (
        "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:1.300052.0b1024"
    )
    namespace: Annotated[
        str,
        _matching(
            r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
            "must be a Kubernetes namespace: 1-63 lowercase letters, digits and '-', starting and ending "
            "with a letter or digit",
        ),
    ] = "serving"


class TrainingConfig(_Model):
    allowed_instance_types: tuple[GpuInstanceType, ...] = Field(
        ("g5.xlarge", "g5.2xlarge", "g6.xlarge", "g6.2xlarge", "g4dn.xlarge"), min_length=3
    )
    max_gpus_per_run: Int = Field(8, ge=1, le=512)
    max_run_hours: Float = Field(24, gt=0, le=24 * 14)
    per_run_budget_usd: UsdAmount = 500
    ami_ssm_parameter: Annotated[
        str,
        _matching(
            r"/aws/service/[A-Za-z0-9_./-]{1,1000}",
            "must be a public SSM parameter path under /aws/service/ (letters, digits and _.-/)",
        ),
    ] = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
    root_volume_gb: Int = Field(200, ge=50, le=16000)
    # Session Manager shell access to run instances: only the ssmmessages/UpdateInstanceInformation it needs.
    session_manager: Bool = False
    # Private ECR repositories trainer images come from (names in the stack's account and region, or ARNs).
    image_repositories: Annotated[tuple[EcrRepository, ...], AfterValidator(_distinct)] = Field(
        (), max_length=50
    )
    # Only with this set may the reaper destroy prod training stacks.
    reap_prod: Bool = False


class BudgetsConfig(_Model):
    environment_monthly_usd: UsdAmount = 5000
    team_monthly_usd: dict[TeamName, UsdAmount] = Field(default_factory=dict)
    alert_thresholds_pct: tuple[Int, ...] = Field((80, 100), min_length=1, max_length=MAX_ALERT_THRESHOLDS)
    alert_emails: Annotated[tuple[Email, ...], AfterValidator(_distinct)] = Field(
        min_length=1, max_length=MAX_ALERT_EMAILS
    )
    anomaly_threshold_usd: UsdAmount = 100
    # When true, policy rule "stack-monthly-budget" is mandatory instead of advisory.
    enforce_plan_budget: Bool = False
    # Cost-allocation tags are account-wide: when dev and prod share an account, only one stack may own them.
    activate_cost_allocation_tags: Bool = True

    @field_validator("alert_thresholds_pct")
    @classmethod
    def _thresholds(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= pct <= 1000 for pct in value):
            raise ValueError("thresholds are percentages between 1 and 1000")
        # AWS Budgets refuses two notifications of the same threshold.
        return _distinct(value)


class CostExportConfig(_Model):
    """The FOCUS 1.2 export of AWS Data Exports, with its Glue table and Athena workgroup (payer account)."""

    enabled: Bool = False
    # Data Exports names: letters, digits, '-' and '_'; the name is also the export's folder under `prefix`.
    export_name: Annotated[
        str,
        _matching(
            r"[A-Za-z0-9_-]{1,128}",
            "must be a Data Exports name: 1-128 letters, digits, '-' and '_', like mlp-focus-1-2",
        ),
    ] = "mlp-focus-1-2"
    prefix: Annotated[
        str,
        _matching(
            r"(?=.{1,512}$)[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*",
            "must be an S3 prefix like focus or billing/focus: 1-512 letters, digits, '.', '_' and '-' "
            "in '/'-separated parts, no leading, trailing or doubled '/'",
        ),
    ] = "focus"
    # GiB one Athena query may scan before Athena cancels it; a month of daily FOCUS rows is far less.
    bytes_scanned_cutoff_gb: Int = Field(10, ge=1, le=102400)
    noncurrent_version_expiration_days: Int = Field(30, ge=1, le=3650)


# Commercial, GovCloud and ISO partitions: us-east-1, us-gov-west-1, us-iso-east-1, ap-southeast-5.
_REGION = re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}")
_ENVIRONMENT = re.compile(r"[a-z][a-z0-9-]{1,15}")


# A digest reference: registry/repository@sha256:<64 hex>, no tag.
_IMAGE_DIGEST = r"[a-z0-9]+([._:/-][a-z0-9]+)*@sha256:[0-9a-f]{64}"
# Five whitespace-separated fields of digits, names and the cron operators; the cluster checks the rest.
_CRON_FIELD = r"[0-9A-Za-z*/,?-]+"
_S3_URI = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[!-~]*)?"


def _cron(value: str) -> str:
    fields = value.split()
    if len(fields) != 5 or not all(re.fullmatch(_CRON_FIELD, field) for field in fields):
        raise ValueError(
            f"{_shown(value)} is not a cron schedule: 5 fields (minute hour day-of-month month "
            "day-of-week) like '0 2 * * *'"
        )
    return value


CronSchedule = Annotated[str, AfterValidator(_cron)]
AwsRegion = Annotated[str, _matching(_REGION.pattern, "is not an AWS region like us-east-1")]
S3Uri = Annotated[str, _matching(_S3_URI, "must be an S3 URI like s3://bucket/prefix")]
IamPrincipalArn = Annotated[
    str,
    _matching(
        r"arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[\w+=,.@/-]{1,512}|user/[\w+=,.@/-]{1,512})",
        "is not an IAM principal ARN like arn:aws:iam::123456789012:role/finance-analyst "
        "(an account root, role or user)",
    ),
]


class FinOpsConfig(_Model):
    """The nightly report and hourly reaper as CronJobs on the serving cluster, with their AWS roles."""

    enabled: Bool = False
    namespace: Annotated[
        str,
        _matching(
            r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
            "must be a Kubernetes namespace: 1-63 lowercase letters, digits and '-', starting and ending "
            "with a letter or digit",
        ),
    ] = "finops"
    # By digest only: the jobs run exactly the image CI built and scanned, never whatever a tag points to now.
    image: (
        Annotated[
            str,
            _matching(
                _IMAGE_DIGEST,
                "must be the built image by digest, repository@sha256:<64 hex digits> (no tag): the jobs "
                "run exactly that image",
            ),
        ]
        | None
    ) = None
    report_schedule: CronSchedule = "0 2 * * *"
    reap_schedule: CronSchedule = "17 * * * *"
    # None: every region enabled for the account, as the commands default to.
    regions: Annotated[tuple[AwsRegion, ...], AfterValidator(_distinct)] | Literal["all"] | None = None
    # The role name the member accounts' FinOpsAccess stacks create (`--org-role`).
    accounts_role: (
        Annotated[
            str, _matching(r"[\w+=,.@-]{1,64}", "must be an IAM role name (1-64 letters, digits, +=,.@_-)")
        ]
        | None
    ) = None
    external_id: (
        Annotated[
            str,
            _matching(
                r"[\w+=,.@:/-]{2,1224}", "must be 2-1224 letters, digits and +=,.@:/-_ (an STS external id)"
            ),
        ]
        | None
    ) = None
    cost_source: Literal["cost-explorer", "focus"] = "cost-explorer"
    focus_uri: S3Uri | None = None
    # The FOCUS export read by Athena (past one machine) instead of DuckDB in the job's pod: the
    # CostExport component's workgroup and Glue database (and table, default the export's name).
    athena_workgroup: AthenaName | None = None
    athena_database: AthenaName | None = None
    athena_table: AthenaName | None = None
    slack_webhook_secret_arn: (
        Annotated[
            str,
            _matching(
                r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[\w/+=.@-]{1,512}",
                "is not a Secrets Manager secret ARN like "
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:finops/slack-AbCdEf",
            ),
        ]
        | None
    ) = None
    report_retention_days: Int = Field(400, ge=1, le=3650)
    finance_role_trusted_arns: Annotated[tuple[IamPrincipalArn, ...], AfterValidator(_distinct)] = Field(
        (), max_length=20
    )
    # The Pulumi state the reaper reads and destroys training stacks in (s3://bucket/prefix).
    state_backend_url: S3Uri | None = None

    @model_validator(mode="after")
    def _complete(self) -> FinOpsConfig:
        if self.cost_source == "focus" and self.focus_uri is None:
            raise _KeyedError("finops.focusUri", "costSource focus reads the FOCUS export: set its s3:// URI")
        if self.cost_source == "cost-explorer" and self.focus_uri is not None:
            raise _KeyedError("finops.focusUri", "is read only with costSource: focus; set that or remove it")
        if self.external_id is not None and self.accounts_role is None:
            raise _KeyedError("finops.externalId", "is sent when assuming accountsRole; set accountsRole too")
        if (self.athena_database or self.athena_table) and not self.athena_workgroup:
            raise _KeyedError(
                "finops.athenaWorkgroup", "the Athena engine needs its workgroup; set it or remove the others"
            )
        if self.athena_workgroup and not (self.cost_source == "focus" and self.athena_database):
            raise _KeyedError(
                "finops.athenaDatabase",
                "Athena reads the FOCUS export's Glue database: set it, with costSource: focus and focusUri",
            )
        if self.enabled:
            required = {
                "image": self.image,
                "stateBackendUrl": self.state_backend_url,
                "financeRoleTrustedArns": self.finance_role_trusted_arns,
            }
            for key, value in required.items():
                if not value:
                    raise _KeyedError(
                        f"finops.{key}", "missing; the jobs need it when finops.enabled is true"
                    )
        return self


class StackConfig(_Model):
    """Everything `Pulumi.<stack>.yaml` says, validated. Field names are the camelCase config keys."""

    stack: str
    region: str
    environment: str
    tags: dict[str, str] = Field(max_length=MAX_TAGS)
    mandatory_tags: tuple[str, ...] = DEFAULT_MANDATORY_TAGS
    network: NetworkConfig = NetworkConfig()
    checkpoints: CheckpointConfig = CheckpointConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    serving: ServingConfig = ServingConfig()
    training: TrainingConfig = TrainingConfig()
    budgets: BudgetsConfig
    cost_export: CostExportConfig = CostExportConfig()
    finops: FinOpsConfig = FinOpsConfig()

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not an AWS region like us-east-1")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if not _ENVIRONMENT.fullmatch(value):
            raise ValueError(
                f"{_shown(value)} must be 2-16 lowercase letters, digits and '-', starting with a letter "
                "(it defaults to the stack name; set ml-platform:environment to choose another)"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tag_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag_value in value.items():
            problem = invalid_tag(key, tag_value)
            if problem:
                raise ValueError(problem)
        # team and project also label every Kubernetes workload, for per-workload cost allocation.
        for key in WORKLOAD_LABELS:
            label = value.get(key)
            if label is None or not label.strip():
                raise ValueError(f"missing value for tag {key!r}; it labels the serving workloads")
            if not re.fullmatch(_LABEL_VALUE, label):
                raise ValueError(f"tag {key!r} value {_shown(label)} {_LABEL_WORDS}")
        return value

    @field_validator("mandatory_tags")
    @classmethod
    def _mandatory_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            problem = invalid_tag(key, "")
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
        if self.serving.endpoint_public_access and not self.serving.public_access_cidrs:
            # AWS reads an empty list as 0.0.0.0/0.
            raise _KeyedError(
                "serving.publicAccessCidrs",
                "a public API endpoint needs the CIDRs allowed to reach it (an empty list opens it to "
                "the whole internet); list them or set endpointPublicAccess: false",
            )
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


# Keys StackConfig fills itself: `stack` from the stack's name, `region` from aws:region.
_DERIVED_FIELDS = {"stack", "region"}
_SCALAR_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a map"
    if isinstance(value, list | tuple):
        return "a list"
    return _SCALAR_KINDS.get(type(value), f"a {type(value).__name__}")


def _model_at(location: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model a (camelCase) location points into, for listing the keys valid there."""
    model: type[BaseModel] = StackConfig
    for part in location:
        if isinstance(part, int):
            continue
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)),
            None,
        )
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _valid_keys(model: type[BaseModel]) -> list[str]:
    return sorted(
        field.alias or name
        for name, field in model.model_fields.items()
        if not (model is StackConfig and name in _DERIVED_FIELDS)
    )


def _full_key(location: tuple[Any, ...]) -> str:
    parts = [_key_shown(str(part)) for part in location if not isinstance(part, int)]
    if parts == ["region"]:
        return "aws:region"
    if not parts:
        return f"{PROJECT}:<root>"
    return NAMESPACE + ".".join(parts)


def _unknown_key(location: tuple[Any, ...]) -> str:
    key = _full_key(location)
    model = _model_at(location[:-1])
    if model is None:
        return f"{key}: unknown key"
    valid = _valid_keys(model)
    close = difflib.get_close_matches(str(location[-1]), valid, n=1)
    suggestion = f"did you mean {close[0]}? " if close else ""
    where = f"{NAMESPACE}<key>" if len(location) == 1 else "here"
    return f"{key}: unknown key; {suggestion}valid keys {where}: {', '.join(valid)}"


def _type_message(error_type: str, value: object) -> str | None:
    """Words for a value of the wrong YAML type, with the fix when the slip is a common one."""
    kind = _kind(value)
    if error_type == "string_type":
        if isinstance(value, bool | int | float):
            return (
                f'must be a string, got {kind}; quote it ("{value}"): YAML reads an unquoted '
                f"{_shown(value)} as {kind}"
            )
        return f"must be a string, got {kind}"
    if error_type in ("int_type", "float_type"):
        wanted = "a whole number" if error_type == "int_type" else "a number"
        if isinstance(value, str):
            return f"must be {wanted}, got the string {_shown(value)}; write it without quotes"
        return f"must be {wanted}, got {kind}"
    if error_type == "bool_type":
        return f"must be true or false, got {kind} {_shown(value)}"
    if error_type in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a map of keys to values, got {kind}"
    if error_type in ("tuple_type", "list_type"):
        return f"must be a list like [a, b], got {kind}"
    if error_type == "finite_number":
        return f"must be a finite number, got {_shown(value)}"
    return None


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _config_error(exc: ValidationError, stack: str) -> ConfigError:
    error = exc.errors(include_url=False)[0]
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _KeyedError):
        return ConfigError(_one_line(f"{NAMESPACE}{cause.key}: {cause.message}"))
    location = tuple(error["loc"])
    if error["type"] == "missing":
        return ConfigError(f"{_full_key(location)}: missing; add it to Pulumi.{stack}.yaml")
    if error["type"] == "extra_forbidden":
        return ConfigError(_one_line(_unknown_key(location)))
    if cause is not None:
        message = str(cause)
    else:
        message = _type_message(error["type"], error.get("input")) or error["msg"]
    return ConfigError(_one_line(f"{_full_key(location)}: {message}"))


def parse_stack_config(stack: str, raw: Mapping[str, Any]) -> StackConfig:
    """Validate a stack's config map (keys as in Pulumi.<stack>.yaml, e.g. `ml-platform:tags`)."""
    values: dict[str, Any] = {"stack": stack}
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(
                f"{_shown(key)}: config keys must be strings like {NAMESPACE}tags; quote the key"
            )
    region = raw.get("aws:region")
    if region is None:
        raise ConfigError("aws:region: missing; set it with `pulumi config set aws:region us-east-1`")
    values["region"] = region
    for key, value in raw.items():
        if key.startswith(NAMESPACE):
            name = key[len(NAMESPACE) :]
            if name in _DERIVED_FIELDS:
                where = "aws:region" if name == "region" else "the stack's name"
                raise ConfigError(f"{key}: unknown key; {name} comes from {where}")
            values[name] = value
        elif not key.startswith(("aws:", "kubernetes:", "pulumi:")):
            raise ConfigError(f"{_key_shown(key)}: unknown namespace; project keys start with {NAMESPACE}")
    values.setdefault("environment", stack)
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc, stack) from None


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


_STR_TAG = "tag:yaml.org,2002:str"
# What Pulumi config holds: strings, numbers, booleans, null, lists and maps. Timestamps, sets,
# binary and language tags have no config meaning (and would not survive JSON for the engine).
_ALLOWED_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")
)


class _StackFileError(yaml.MarkedYAMLError):
    """A stack file refused by a rule of the loader, at the place it breaks it."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _StackFileLoader(yaml.SafeLoader):
    """SafeLoader bounded for untrusted stack files.

    Depth is counted while composing, so a deeply nested document stops at `MAX_NESTING` instead of
    recursing; anchors and aliases are refused outright, which makes alias bombs impossible.
    """

    # Unquoted dates stay strings (as Pulumi reads them); `<<` is a plain key, not a merge.
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _ALLOWED_TAGS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _StackFileError(
                "anchors and aliases (&name, *name) are not allowed in a stack file; write the values out",
                event.start_mark,
            )
        if isinstance(event, yaml.CollectionStartEvent):
            if self._depth >= MAX_NESTING:
                raise _StackFileError(
                    f"nested more than {MAX_NESTING} levels deep; a stack file needs only a few",
                    event.start_mark,
                )
            self._depth += 1
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
        else:
            node = super().compose_node(parent, index)
        if node.tag not in _ALLOWED_TAGS:
            raise _StackFileError(
                f"the tag {node.tag.removeprefix('tag:yaml.org,2002:')} is not allowed; stack files hold "
                "strings, numbers, booleans, lists and maps",
                node.start_mark,
            )
        if isinstance(node, yaml.MappingNode):
            self._check_keys(node)
        return node

    @staticmethod
    def _check_keys(node: yaml.MappingNode) -> None:
        seen: set[str] = set()
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag != _STR_TAG:
                shown = key.value if isinstance(key, yaml.ScalarNode) else "a list or map"
                raise _StackFileError(
                    f"the key {_shown(shown)} is not a string; keys are names: quote it", key.start_mark
                )
            if key.value in seen:
                raise _StackFileError(
                    f"the key {_shown(key.value)} appears twice in the same map; keep one", key.start_mark
                )
            seen.add(key.value)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            # e.g. an integer longer than Python converts (4300 digits); a YAML error keeps it one line.
            reason = "too long a number" if "digits" in str(exc) else str(exc)
            raise _StackFileError(
                f"cannot read the value {_shown(node.value)} ({reason})", node.start_mark
            ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        return f"a control character ({exc.character!r}) at character {exc.position + 1}; remove it"
    if isinstance(exc, yaml.MarkedYAMLError):
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return f"{where}{what}"
    return exc.__class__.__name__


def _parse_stack_document(name: str, data: bytes) -> Any:
    if len(data) > MAX_STACK_FILE_BYTES:
        raise ConfigError(
            f"{name}: larger than {MAX_STACK_FILE_BYTES // (1 << 20)} MiB; a stack file holds a few KiB of config"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{name}: not UTF-8 (byte {exc.start + 1} is {data[exc.start : exc.start + 1]!r}); save it as UTF-8"
        ) from None
    loader: _StackFileLoader | None = None
    try:
        # The reader refuses control characters as soon as it is built, so that is inside the try too.
        loader = _StackFileLoader(text)
        return loader.get_single_data()
    except _StackFileError as exc:
        raise ConfigError(_one_line(f"{name}: {_yaml_problem(exc)}")) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            _one_line(f"{name}: not valid YAML: {_yaml_problem(exc)}; fix the file's syntax")
        ) from None
    except (ValueError, OverflowError):
        # The scanner converts directive numbers (`%YAML 1.1`) itself, outside any node.
        raise ConfigError(f"{name}: not valid YAML: a number too long to read; shorten it") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_stack_file(
    stack: str, project_dir: Path | None = None, *, option: str = "--stack"
) -> dict[str, Any]:
    """The raw `config:` map of Pulumi.<stack>.yaml; `option` is the flag that named the stack."""
    if not _STACK_NAME.fullmatch(stack):
        raise ConfigError(
            f"{option} {_shown(stack)}: stack names are 1-100 letters, digits, '-', '_' and '.'"
        )
    if stack.startswith(TRAINING_STACK_PREFIX):
        raise ConfigError(
            f"{option} {stack!r}: names starting with {TRAINING_STACK_PREFIX!r} are reserved for training runs "
            f"(the reaper may destroy them); rename Pulumi.{stack}.yaml"
        )
    directory = find_project_dir(project_dir)
    path = directory / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        existing = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in directory.glob("Pulumi.*.yaml"))
        raise ConfigError(
            f"{option} {stack!r}: no {path.name} in {directory}; existing stacks: {', '.join(existing) or 'none'}"
        )
    try:
        with path.open("rb") as handle:
            # One byte over the cap is enough to know the file is too large.
            data = handle.read(MAX_STACK_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path.name}: cannot read it ({exc.strerror or exc})") from None
    document = _parse_stack_document(path.name, data)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path.name}: the file must be a map with a `config:` key, not {_kind(document)}")
    config = document.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path.name}: `config:` must be a map of keys to values, not {_kind(config)}")
    return config


def load_stack_config(stack: str, project_dir: Path | None = None, *, option: str = "--stack") -> StackConfig:
    """Read and validate `Pulumi.<stack>.yaml`."""
    return parse_stack_config(stack, read_stack_file(stack, project_dir, option=option))


def load_runtime_config() -> StackConfig:
    """Read the config the Pulumi engine hands the program (real CLI or mocks), validated the same way."""
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    raw: dict[str, Any] = {}
    for key, value in {**get_config_env(), **CONFIG.get()}.items():
        raw[key] = _decode_runtime_value(value)
    return parse_stack_config(pulumi.get_stack(), raw)


def _decode_runtime_value(value: Any) -> Any:
    # The engine holds objects as JSON text; plain strings (regions, names) stay as they are, even one
    # that merely starts with a bracket.
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            return value
    return value


def runtime_config_values(raw: Mapping[str, Any]) -> dict[str, str]:
    """A stack file's config map in the string form the Pulumi runtime holds (objects JSON-encoded)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}

"""FinOpsJobs: the nightly cost report and the hourly reaper, as CronJobs on the serving cluster.

Each job has its own IRSA role. The report's is read-only but for its reports prefix; the reaper's
may delete only what the training runs create, and only resources tagged `ephemeral=true` and
`managed-by=pulumi` wherever AWS evaluates resource tags on the action. Where it does not (S3
objects of the state backend), or where a tag alone is too weak a bound (IAM, whose tags anyone
with iam:TagRole may set), the resource ARN bounds the action instead: `ARN_BOUNDED_ACTIONS` lists
each with its bound and why.

The IAM actions come from one table, `INVENTORY_ACCESS`: what each kind of the inventory registry
(`finops/inventory/*.py`) calls to enumerate, prove dependents and delete, mapped to IAM actions.
`FinOpsAccess` (infra/components/finops_access.py) grants the same tables in member accounts.

Each job publishes `JobSucceeded` (namespace `METRIC_NAMESPACE`, dimension `Job`) at the end of a
good run; an alarm per job fires when a schedule's worth of runs has gone by without one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from finops.delivery import SLACK_WEBHOOK_SECRET_ENV
from infra.buckets import retained_bucket
from infra.components.cost_export import ATHENA_RESULTS_PREFIX
from infra.components.serving_workloads import (
    DNS_EGRESS,
    HTTPS_EGRESS,
    NAME_LABEL,
    container_security,
    pod_security_labels,
)
from infra.config import PROJECT, TRAINING_STACK_PREFIX, FinOpsConfig
from infra.iam import RUN_ROLE_PATH, irsa_assume_role_policy
from infra.kms import ViaServiceUse, account_scope
from infra.training.checkpoints import RUNS_PREFIX
from mlp.tags import EPHEMERAL, EPHEMERAL_VALUE, MANAGED_BY, MANAGED_BY_VALUE, WORKLOAD_LABELS

REPORT = "finops-report"
REAPER = "finops-reaper"
METRIC_NAMESPACE = "ml-platform/finops"
METRIC_NAME = "JobSucceeded"
REPORTS_PREFIX = "reports/"
# The job overwrites these each night; earlier nights are their noncurrent versions.
LATEST_REPORTS_PREFIX = f"{REPORTS_PREFIX}latest/"
JOB_UID = 10001
SCRATCH = "/scratch"
# The reaper's per-stack lock objects beside the state (finops.locks.LOCK_DIR_NAME).
LOCK_DIR_NAME = ".ml-platform-locks"
ABORT_INCOMPLETE_UPLOAD_DAYS = 7

# Resource ARN patterns, in any region and account: the same tables serve the member accounts.
ANY = "*"
EC2_INSTANCE = "arn:aws:ec2:*:*:instance/*"
EC2_VOLUME = "arn:aws:ec2:*:*:volume/*"
EC2_LAUNCH_TEMPLATE = "arn:aws:ec2:*:*:launch-template/*"
EC2_NETWORK_INTERFACE = "arn:aws:ec2:*:*:network-interface/*"
AUTOSCALING_GROUP = "arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/*"
RUN_ROLE = f"arn:aws:iam::*:role{RUN_ROLE_PATH}*"
RUN_INSTANCE_PROFILE = f"arn:aws:iam::*:instance-profile{RUN_ROLE_PATH}*"
ANY_ROLE = "arn:aws:iam::*:role/*"
ANY_INSTANCE_PROFILE = "arn:aws:iam::*:instance-profile/*"
SQS_QUEUE = "arn:aws:sqs:*:*:*"
EVENTS_RULE = "arn:aws:events:*:*:rule/*"
EKS_CLUSTER = "arn:aws:eks:*:*:cluster/*"
EKS_NODEGROUP = "arn:aws:eks:*:*:nodegroup/*"
ELASTICACHE_ANY = "arn:aws:elasticache:*:*:*"
ANY_BUCKET = "arn:aws:s3:::*"


@dataclass(frozen=True)
class Access:
    """One IAM action on the resources (ARN pattern) the inventory's call for it acts on."""

    action: str
    resource: str = ANY


@dataclass(frozen=True)
class KindAccess:
    """The IAM side of one inventory kind: its enumerate and dependents calls, and its delete calls."""

    reads: tuple[Access, ...]
    deletes: tuple[Access, ...] = ()


# Every kind of `finops.inventory.REGISTRY`, from the boto3 calls of its module (tests check both).
INVENTORY_ACCESS: dict[str, KindAccess] = {
    "ec2:instance": KindAccess(
        reads=(
            Access("ec2:DescribeInstances"),
            Access("ec2:DescribeVolumes"),
            Access("ec2:DescribeNetworkInterfaces"),
            Access("autoscaling:DescribeAutoScalingInstances"),
            Access("autoscaling:DescribeAutoScalingGroups"),
        ),
        deletes=(
            # Keeps another run's volume or interface from going with the instance.
            Access("ec2:ModifyInstanceAttribute", EC2_INSTANCE),
            Access("ec2:ModifyNetworkInterfaceAttribute", EC2_NETWORK_INTERFACE),
            Access("ec2:TerminateInstances", EC2_INSTANCE),
        ),
    ),
    "ec2:volume": KindAccess(
        reads=(Access("ec2:DescribeVolumes"), Access("ec2:DescribeInstances")),
        deletes=(Access("ec2:DeleteVolume", EC2_VOLUME),),
    ),
    "ec2:snapshot": KindAccess(reads=(Access("ec2:DescribeSnapshots"),)),
    "ec2:launch-template": KindAccess(
        reads=(
            Access("ec2:DescribeLaunchTemplates"),
            Access("ec2:DescribeInstances"),
            Access("autoscaling:DescribeAutoScalingGroups"),
        ),
        deletes=(Access("ec2:DeleteLaunchTemplate", EC2_LAUNCH_TEMPLATE),),
    ),
    "ec2:network-interface": KindAccess(
        reads=(Access("ec2:DescribeNetworkInterfaces"), Access("ec2:DescribeInstances")),
        deletes=(Access("ec2:DeleteNetworkInterface", EC2_NETWORK_INTERFACE),),
    ),
    "autoscaling:autoScalingGroup": KindAccess(
        reads=(Access("autoscaling:DescribeAutoScalingGroups"), Access("ec2:DescribeInstances")),
        deletes=(
            Access("autoscaling:UpdateAutoScalingGroup", AUTOSCALING_GROUP),
            Access("autoscaling:DeleteAutoScalingGroup", AUTOSCALING_GROUP),
        ),
    ),
    "iam:role": KindAccess(
        reads=(
            Access("iam:ListRoles"),
            Access("iam:ListRoleTags", ANY_ROLE),
            Access("iam:ListInstanceProfilesForRole", ANY_ROLE),
            Access("iam:ListRolePolicies", ANY_ROLE),
            Access("iam:ListAttachedRolePolicies", ANY_ROLE),
            Access("iam:GetInstanceProfile", ANY_INSTANCE_PROFILE),
        ),
        deletes=(
            Access("iam:DeleteRolePolicy", RUN_ROLE),
            Access("iam:DetachRolePolicy", RUN_ROLE),
            Access("iam:DeleteRole", RUN_ROLE),
        ),
    ),
    "iam:instance-profile": KindAccess(
        reads=(
            Access("iam:ListInstanceProfiles"),
            Access("iam:GetInstanceProfile", ANY_INSTANCE_PROFILE),
            Access("iam:ListRoleTags", ANY_ROLE),
            Access("ec2:DescribeIamInstanceProfileAssociations"),
            Access("ec2:DescribeInstances"),
        ),
        deletes=(
            Access("iam:RemoveRoleFromInstanceProfile", RUN_INSTANCE_PROFILE),
            Access("iam:DeleteInstanceProfile", RUN_INSTANCE_PROFILE),
        ),
    ),
    "sqs:queue": KindAccess(
        reads=(Access("sqs:ListQueues"), Access("sqs:ListQueueTags", SQS_QUEUE)),
        deletes=(Access("sqs:DeleteQueue", SQS_QUEUE),),
    ),
    "events:rule": KindAccess(
        reads=(
            Access("events:ListRules"),
            Access("events:ListTagsForResource", EVENTS_RULE),
            Access("events:ListTargetsByRule", EVENTS_RULE),
        ),
        deletes=(Access("events:RemoveTargets", EVENTS_RULE), Access("events:DeleteRule", EVENTS_RULE)),
    ),
    "eks:cluster": KindAccess(reads=(Access("eks:ListClusters"), Access("eks:DescribeCluster", EKS_CLUSTER))),
    "eks:nodegroup": KindAccess(
        reads=(
            Access("eks:ListClusters"),
            Access("eks:ListNodegroups", EKS_CLUSTER),
            Access("eks:DescribeNodegroup", EKS_NODEGROUP),
        )
    ),
    "elasticache:replicationgroup": KindAccess(
        reads=(
            Access("elasticache:DescribeReplicationGroups", ELASTICACHE_ANY),
            Access("elasticache:ListTagsForResource", ELASTICACHE_ANY),
            Access("tag:GetResources"),
        )
    ),
    "elasticache:cluster": KindAccess(
        reads=(
            Access("elasticache:DescribeCacheClusters", ELASTICACHE_ANY),
            Access("elasticache:ListTagsForResource", ELASTICACHE_ANY),
            Access("tag:GetResources"),
        )
    ),
    # elbv2 and the classic elb API share the elasticloadbalancing IAM prefix.
    "elasticloadbalancing:loadbalancer": KindAccess(
        reads=(
            Access("elasticloadbalancing:DescribeLoadBalancers"),
            Access("elasticloadbalancing:DescribeTags"),
            Access("tag:GetResources"),
        )
    ),
    "s3:bucket": KindAccess(
        reads=(
            Access("s3:ListAllMyBuckets"),
            Access("s3:GetBucketLocation", ANY_BUCKET),
            Access("s3:GetBucketTagging", ANY_BUCKET),
            Access("tag:GetResources"),
        )
    ),
}

# What `pulumi destroy` of a training stack calls beyond the sweep's own deletes: the provider's
# deletes of the stack's other resources (the queue policy, event targets, the role's inline policy)
# and the reads it waits on (training_fleet.py declares them).
STACK_DESTROY_ACCESS = KindAccess(
    reads=(
        Access("iam:GetRole", ANY_ROLE),
        Access("iam:GetRolePolicy", ANY_ROLE),
        Access("autoscaling:DescribeScalingActivities"),
        Access("sqs:GetQueueAttributes", SQS_QUEUE),
        Access("events:DescribeRule", EVENTS_RULE),
    ),
    # Deleting an aws.sqs.QueuePolicy empties the queue's Policy attribute.
    deletes=(Access("sqs:SetQueueAttributes", SQS_QUEUE),),
)

# A training run's evidence of what it cost (finops.run_costs), read by the report and the reaper in
# every account they scan (the reaper for over-budget runs): its group's activities, the times of its
# checkpoints under runs/ in the environments' checkpoint buckets, and the interruption notices its
# queue holds (left for others).
RUN_COSTS_READ = (
    *INVENTORY_ACCESS["s3:bucket"].reads,  # the checkpoint buckets are found by their tags
    Access("autoscaling:DescribeScalingActivities"),
    Access("s3:ListBucket", "arn:aws:s3:::mlp-*-checkpoints-*"),
    Access("sqs:ReceiveMessage", "arn:aws:sqs:*:*:mlp-train-*-interruptions"),
)

STATE_WRITE_ACTIONS = ("s3:DeleteObject", "s3:PutObject")


@dataclass(frozen=True)
class ArnBound:
    """Reaper writes bounded by the resource ARN: the actions, the ARN patterns and why not tags alone."""

    actions: tuple[str, ...]
    resources: tuple[str, ...]
    why: str
    # Whether the tag condition is required as well (where AWS evaluates it).
    tags_too: bool


ARN_BOUNDED_ACTIONS: tuple[ArnBound, ...] = (
    ArnBound(
        ("iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy"),
        (RUN_ROLE,),
        "IAM evaluates role tags, but anyone with iam:TagRole may set them; a role's path is fixed at "
        "creation, and only training runs' roles are under RUN_ROLE_PATH",
        tags_too=True,
    ),
    ArnBound(
        ("iam:DeleteInstanceProfile", "iam:RemoveRoleFromInstanceProfile"),
        (RUN_INSTANCE_PROFILE,),
        "as for roles: instance-profile tags are mutable, the path is not",
        tags_too=True,
    ),
    ArnBound(
        STATE_WRITE_ACTIONS,
        (
            "<state>/.pulumi/{stacks,history,backups,locks}/ml-platform/train-*",
            f"<state>/{LOCK_DIR_NAME}/train-*",
        ),
        "S3 evaluates no aws:ResourceTag on object actions and Pulumi tags no state object: the key "
        "prefix of training stacks is the bound",
        tags_too=False,
    ),
)


def tag_conditions() -> dict[str, Any]:
    """The condition every reaper delete carries: the resource is a training run's, made by Pulumi."""
    return {
        "StringEquals": {
            f"aws:ResourceTag/{EPHEMERAL}": EPHEMERAL_VALUE,
            f"aws:ResourceTag/{MANAGED_BY}": MANAGED_BY_VALUE,
        }
    }


def _statements(
    sid: str, accesses: Iterable[Access], condition: Mapping[str, Any] | None = None
) -> list[dict]:
    """One statement per resource pattern, actions sorted and distinct, Sids numbered when split."""
    by_resource: dict[str, set[str]] = {}
    for access in accesses:
        by_resource.setdefault(access.resource, set()).add(access.action)
    statements = []
    for index, (resource, actions) in enumerate(sorted(by_resource.items())):
        statement: dict[str, Any] = {
            "Sid": f"{sid}{index}" if len(by_resource) > 1 else sid,
            "Effect": "Allow",
            "Action": sorted(actions),
            "Resource": resource,
        }
        if condition:
            statement["Condition"] = dict(condition)
        statements.append(statement)
    return statements


def inventory_reads(kinds: Iterable[str] | None = None) -> list[Access]:
    chosen = INVENTORY_ACCESS if kinds is None else {kind: INVENTORY_ACCESS[kind] for kind in kinds}
    return [access for kind in chosen.values() for access in kind.reads]


def run_resource_kinds() -> list[str]:
    """The kinds the reaper deletes: those with delete calls."""
    return [kind for kind, access in INVENTORY_ACCESS.items() if access.deletes]


# Spend (finops.costs: GetCostAndUsage only), GPU utilization (finops.idle), the scope's regions.
COSTS_AND_METRICS_READ: dict[str, Any] = {
    "Sid": "CostsAndMetricsRead",
    "Effect": "Allow",
    "Action": ["ce:GetCostAndUsage", "cloudwatch:GetMetricData", "ec2:DescribeRegions"],
    "Resource": "*",
}


def report_read_statements() -> list[dict[str, Any]]:
    """What the report reads in any account it scans: costs, GPU metrics, the whole inventory."""
    return [
        *_statements("InventoryRead", [*inventory_reads(), *RUN_COSTS_READ]),
        COSTS_AND_METRICS_READ,
    ]


def reaper_statements() -> list[dict[str, Any]]:
    """What the reaper does in any account: read the run resources, delete only the tagged runs'."""
    reads = [*inventory_reads(run_resource_kinds()), *STACK_DESTROY_ACCESS.reads, *RUN_COSTS_READ]
    deletes = [
        *(access for kind in run_resource_kinds() for access in INVENTORY_ACCESS[kind].deletes),
        *STACK_DESTROY_ACCESS.deletes,
    ]
    return [
        *_statements("RunResourcesRead", reads),
        COSTS_AND_METRICS_READ,
        *_statements("DeleteTaggedRunResources", deletes, tag_conditions()),
    ]


def metric_statement() -> dict[str, Any]:
    return {
        "Sid": "PublishJobMetric",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
    }


def _bucket_and_prefix(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` as ("bucket", "a/b/"); the prefix is "" for a whole bucket."""
    parts = urlsplit(uri)
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def prefix_read_statements(sid: str, uri: str) -> list[dict[str, Any]]:
    """Listing and reading the objects under one s3:// prefix, nothing else of the bucket."""
    bucket, prefix = _bucket_and_prefix(uri)
    return [
        {
            "Sid": f"{sid}List",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}*"]}},
        },
        {
            "Sid": f"{sid}Get",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
        },
    ]


def athena_statements(config: FinOpsConfig, region: str, account_id: str) -> list[dict[str, Any]]:
    """Queries in the CostExport workgroup over its Glue table, and the results it writes beside the export."""
    bucket, _ = _bucket_and_prefix(str(config.focus_uri))
    database = config.athena_database
    table = config.athena_table or str(config.focus_uri).rstrip("/").rsplit("/", 1)[-1]
    return [
        {
            "Sid": "AthenaQueries",
            "Effect": "Allow",
            "Action": [
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
            ],
            "Resource": f"arn:aws:athena:{region}:{account_id}:workgroup/{config.athena_workgroup}",
        },
        {
            "Sid": "GlueCatalogRead",
            "Effect": "Allow",
            "Action": ["glue:GetDatabase", "glue:GetTable", "glue:GetPartitions"],
            "Resource": [
                f"arn:aws:glue:{region}:{account_id}:catalog",
                f"arn:aws:glue:{region}:{account_id}:database/{database}",
                f"arn:aws:glue:{region}:{account_id}:table/{database}/{table}",
            ],
        },
        # The workgroup enforces its results location: the export bucket's athena-results/ prefix.
        {
            "Sid": "AthenaResults",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"arn:aws:s3:::{bucket}/{ATHENA_RESULTS_PREFIX}*",
        },
        {
            "Sid": "AthenaResultsBucket",
            "Effect": "Allow",
            "Action": "s3:GetBucketLocation",
            "Resource": f"arn:aws:s3:::{bucket}",
        },
        {
            "Sid": "AthenaResultsEncrypt",
            "Effect": "Allow",
            "Action": "kms:GenerateDataKey",
            "Resource": "arn:aws:kms:*:*:key/*",
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        },
    ]


def state_statements(state_backend_url: str) -> list[dict[str, Any]]:
    """The Pulumi state: read every stack (to decide), write and delete only training stacks' files.

    S3 evaluates no resource tags on object actions, and Pulumi tags no state object: the bound is
    the key. Pulumi's DIY layout keeps a stack's files at `.pulumi/{stacks,history,backups,locks}/
    <project>/<stack>...`; the reaper's own lock is `.ml-platform-locks/<stack>.lock`.
    """
    bucket, prefix = _bucket_and_prefix(state_backend_url)
    stack = f"{PROJECT}/{TRAINING_STACK_PREFIX}*"
    writable = [
        f"arn:aws:s3:::{bucket}/{prefix}.pulumi/{folder}/{stack}"
        for folder in ("stacks", "history", "backups", "locks")
    ] + [f"arn:aws:s3:::{bucket}/{prefix}{LOCK_DIR_NAME}/{TRAINING_STACK_PREFIX}*"]
    return [
        *prefix_read_statements("StateRead", state_backend_url),
        {
            "Sid": "TrainingStackStateWrite",
            "Effect": "Allow",
            "Action": list(STATE_WRITE_ACTIONS),
            "Resource": writable,
        },
    ]


def s3_key_statement(sid: str, key_arn: str, actions: Sequence[str], region: str) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": key_arn,
        "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
    }


def policy_document(statements: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def access_role_name(accounts_role: str, job: str) -> str:
    """The member-account role a job assumes: `accountsRole` for the report, `<accountsRole>-reaper`."""
    return accounts_role if job == REPORT else f"{accounts_role}-reaper"


def oidc_issuer_host(provider_arn: str) -> str:
    """IAM names an OIDC provider after its issuer's host and path: arn:...:oidc-provider/<host/path>."""
    return provider_arn.split(":oidc-provider/", 1)[1]


@dataclass(frozen=True)
class FinOpsJobsArgs:
    environment: str
    region: str
    config: FinOpsConfig
    # The cluster's Kubernetes version, which the namespace's Pod Security labels pin.
    kubernetes_version: str
    oidc_provider_arn: pulumi.Input[str]
    # Where the alarms on missed runs go (CostGovernance's alerts topic).
    alert_topic_arn: pulumi.Input[str]
    # The reaper reads runs' completion markers there before calling a run finished.
    checkpoint_bucket_arn: pulumi.Input[str]
    checkpoint_kms_key_arn: pulumi.Input[str]
    # The environment's tags; the workload labels are taken from them.
    tags: Mapping[str, str]
    protect: bool


@dataclass(frozen=True)
class _Job:
    name: str
    schedule: str
    args: Sequence[pulumi.Input[str]]
    # A missed start is picked up this late at most; after that the next schedule runs.
    starting_deadline_seconds: int
    active_deadline_seconds: int
    backoff_limit: int
    cpu: str
    memory: str
    # The alarm fires when no success was published over this many hours.
    alarm_hours: int
    # Settings the job reads from its environment (names are the CLI's own variables).
    env: Mapping[str, str] = field(default_factory=dict)


class FinOpsJobs(pulumi.ComponentResource):
    """Reports bucket and key, finance read role, the jobs' namespace, IRSA roles, CronJobs and alarms.

    Outputs: `reports_bucket`, `reports_uri`, `finance_role_arn`, `report_role_arn`, `reaper_role_arn`,
    `namespace`.
    """

    reports_bucket: pulumi.Output[str]
    reports_uri: pulumi.Output[str]
    finance_role_arn: pulumi.Output[str]
    report_role_arn: pulumi.Output[str]
    reaper_role_arn: pulumi.Output[str]
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: FinOpsJobsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("ml-platform:infra:FinOpsJobs", name, None, opts)
        self._name = name
        self._args = args
        self._labels = {key: args.tags[key] for key in WORKLOAD_LABELS}
        config = args.config

        key, bucket = self._reports_bucket()
        # The report writes each night under reports/YYYY-MM-DD/, copies it to reports/latest/ and
        # appends reports/history.jsonl: it is given the reports/ prefix, not latest/.
        reports_uri = pulumi.Output.concat("s3://", bucket.bucket, "/", REPORTS_PREFIX)
        finance_role = self._finance_role(bucket, key)

        namespace = self._namespace()
        namespace_name = namespace.metadata["name"]
        report_role = self._job_role(
            REPORT,
            namespace_name,
            pulumi.Output.all(bucket.arn, key.arn, account_scope(self)).apply(
                lambda values: self._report_policy(values[0], values[1], values[2].account_id)
            ),
        )
        reaper_role = self._job_role(
            REAPER,
            namespace_name,
            pulumi.Output.all(args.checkpoint_bucket_arn, args.checkpoint_kms_key_arn).apply(
                lambda arns: self._reaper_policy(arns[0], arns[1])
            ),
        )
        regions = self._option("--regions", self._regions())
        external_id = self._option("--external-id", config.external_id)
        focus = self._option("--focus-uri", config.focus_uri)
        if config.athena_workgroup:
            focus += [
                "--engine",
                "athena",
                *self._option("--athena-workgroup", config.athena_workgroup),
                *self._option("--athena-database", config.athena_database),
                *self._option("--athena-table", config.athena_table),
            ]

        def scope(job: str) -> list[str]:
            accounts = self._option(
                "--org-role", config.accounts_role and access_role_name(config.accounts_role, job)
            )
            return [*regions, *accounts, *(external_id if accounts else [])]

        self._cron_job(
            _Job(
                REPORT,
                config.report_schedule,
                [
                    "report",
                    "--out",
                    f"{SCRATCH}/report",
                    "--s3-uri",
                    reports_uri,
                    "--cost-source",
                    config.cost_source,
                    *focus,
                    *scope(REPORT),
                    # The alarm on the jobs counts these: a night without one is a missed night.
                    "--heartbeat",
                ],
                starting_deadline_seconds=3 * 3600,
                active_deadline_seconds=3 * 3600,
                # Cost Explorer bills every request: one retry, then tomorrow's run.
                backoff_limit=1,
                cpu="500m",
                memory="2Gi",
                alarm_hours=26,
                # The job reads the webhook itself: the URL never sits in the CronJob or the stack.
                env={SLACK_WEBHOOK_SECRET_ENV: config.slack_webhook_secret_arn}
                if config.slack_webhook_secret_arn
                else {},
            ),
            namespace_name,
            report_role,
        )
        self._cron_job(
            _Job(
                REAPER,
                config.reap_schedule,
                [
                    "reap",
                    "--apply",
                    "--backend",
                    str(config.state_backend_url),
                    *scope(REAPER),
                    "--heartbeat",
                ],
                starting_deadline_seconds=15 * 60,
                # Ends before the next hourly start; the next run picks up what this one left.
                active_deadline_seconds=50 * 60,
                backoff_limit=0,
                cpu="250m",
                memory="1Gi",
                alarm_hours=3,
            ),
            namespace_name,
            reaper_role,
        )

        self.reports_bucket = bucket.bucket
        self.reports_uri = reports_uri
        self.finance_role_arn = finance_role.arn
        self.report_role_arn = report_role.arn
        self.reaper_role_arn = reaper_role.arn
        self.namespace = namespace_name
        self.register_outputs(
            {
                "reports_bucket": self.reports_bucket,
                "reports_uri": self.reports_uri,
                "finance_role_arn": self.finance_role_arn,
                "report_role_arn": self.report_role_arn,
                "reaper_role_arn": self.reaper_role_arn,
                "namespace": self.namespace,
            }
        )

    @staticmethod
    def _option(flag: str, value: str | None) -> list[str]:
        return [flag, value] if value else []

    def _regions(self) -> str | None:
        regions = self._args.config.regions
        return regions if regions is None or isinstance(regions, str) else ",".join(regions)

    # -- AWS: reports bucket, roles, alarms ------------------------------------------------------

    def _reports_bucket(self) -> tuple[aws.kms.Key, aws.s3.Bucket]:
        name, args = self._name, self._args
        # Reports outlive the stack (the bucket is never force-destroyed), so their key does too.
        stored = retained_bucket(
            f"{name}-reports",
            parent=self,
            alias=f"mlp-{args.environment}-finops-reports",
            description=f"ml-platform {args.environment} FinOps reports encryption",
            bucket_prefix=f"mlp-{args.environment}-finops-reports-",
            # The jobs write and finance reads through S3 only, as their IAM policies allow.
            key_uses=[ViaServiceUse("s3")],
            protect=args.protect,
        )
        key, bucket, versioning = stored.key, stored.bucket, stored.versioning
        retention = args.config.report_retention_days
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-reports-lifecycle",
            bucket=bucket.id,
            rules=[
                # Dated nights (reports/2026-12-01/...) expire; latest/ and history.jsonl do not start with
                # a digit, so they stay.
                {
                    "id": "expire-old-nights",
                    "status": "Enabled",
                    "filter": {"prefix": f"{REPORTS_PREFIX}2"},
                    "expiration": {"days": retention},
                },
                # Each night overwrites latest/ and the history: the nights before are noncurrent versions.
                {
                    "id": "expire-overwritten-versions",
                    "status": "Enabled",
                    "filter": {"prefix": REPORTS_PREFIX},
                    "noncurrent_version_expiration": {"noncurrent_days": retention},
                },
                {
                    "id": "abort-incomplete-multipart-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": ABORT_INCOMPLETE_UPLOAD_DAYS
                    },
                },
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        return key, bucket

    def _finance_role(self, bucket: aws.s3.Bucket, key: aws.kms.Key) -> aws.iam.Role:
        name, args = self._name, self._args
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": list(args.config.finance_role_trusted_arns)},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        role = aws.iam.Role(
            f"{name}-finance",
            description="Finance reads the FinOps reports (reports/ of the reports bucket) and nothing else",
            assume_role_policy=json.dumps(trust),
            max_session_duration=3600,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicy(
            f"{name}-finance",
            role=role.name,
            policy=pulumi.Output.all(bucket.bucket, key.arn).apply(
                lambda values: policy_document(
                    [
                        *prefix_read_statements("Reports", f"s3://{values[0]}/{REPORTS_PREFIX}"),
                        s3_key_statement("ReportsDecrypt", values[1], ["kms:Decrypt"], args.region),
                    ]
                )
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return role

    def _report_policy(self, bucket_arn: str, key_arn: str, account_id: str) -> str:
        config, region = self._args.config, self._args.region
        statements = [
            *report_read_statements(),
            # Reads too: the history is read, changed and written back, and latest/ is a server-side copy.
            {
                "Sid": "ReportsReadWrite",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject"],
                "Resource": f"{bucket_arn}/{REPORTS_PREFIX}*",
            },
            s3_key_statement("ReportsEncrypt", key_arn, ["kms:GenerateDataKey"], region),
            # The month-end forecast and the budgets are the payer's (this account's) alone.
            {"Sid": "CostForecastRead", "Effect": "Allow", "Action": "ce:GetCostForecast", "Resource": "*"},
            {
                "Sid": "BudgetsRead",
                "Effect": "Allow",
                "Action": "budgets:ViewBudget",
                "Resource": f"arn:aws:budgets::{account_id}:budget/*",
            },
            metric_statement(),
            *self._scope_statements(REPORT),
        ]
        if config.focus_uri:
            # The default (DuckDB) engine reads the export's Parquet straight from S3.
            statements += prefix_read_statements("FocusExport", config.focus_uri)
            statements.append(
                {
                    "Sid": "FocusExportDecrypt",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    # The export's key is the payer account's, named nowhere here; S3 is the only way in.
                    "Resource": "arn:aws:kms:*:*:key/*",
                    "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
                }
            )
        if config.athena_workgroup and config.focus_uri:
            statements += athena_statements(config, region, account_id)
        return policy_document(statements)

    def _reaper_policy(self, checkpoint_bucket_arn: str, checkpoint_key_arn: str) -> str:
        config, region = self._args.config, self._args.region
        checkpoints = f"s3://{checkpoint_bucket_arn.removeprefix('arn:aws:s3:::')}/{RUNS_PREFIX}"
        return policy_document(
            [
                *reaper_statements(),
                *state_statements(str(config.state_backend_url)),
                # A run's completion marker; listing makes a missing marker a 404, not a 403.
                *prefix_read_statements("CheckpointsRead", checkpoints),
                s3_key_statement("CheckpointsDecrypt", checkpoint_key_arn, ["kms:Decrypt"], region),
                metric_statement(),
                *self._scope_statements(REAPER),
            ]
        )

    def _scope_statements(self, job: str) -> list[dict[str, Any]]:
        """Member accounts' FinOpsAccess roles and the webhook secret, when configured."""
        config = self._args.config
        statements: list[dict[str, Any]] = []
        if config.accounts_role:
            statements += [
                {
                    "Sid": "AssumeMemberAccountRole",
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Resource": f"arn:aws:iam::*:role/{access_role_name(config.accounts_role, job)}",
                },
                {
                    "Sid": "ListAccounts",
                    "Effect": "Allow",
                    "Action": "organizations:ListAccounts",
                    "Resource": "*",
                },
            ]
        if config.slack_webhook_secret_arn:
            statements.append(
                {
                    "Sid": "SlackWebhookRead",
                    "Effect": "Allow",
                    "Action": "secretsmanager:GetSecretValue",
                    "Resource": config.slack_webhook_secret_arn,
                }
            )
        return statements

    def _job_role(self, job: str, namespace: pulumi.Input[str], policy: pulumi.Input[str]) -> aws.iam.Role:
        args = self._args
        issuer = pulumi.Output.from_input(args.oidc_provider_arn).apply(oidc_issuer_host)
        role = aws.iam.Role(
            f"{self._name}-{job}",
            description=f"IRSA role of the {job} CronJob (service account {args.config.namespace}/{job})",
            assume_role_policy=irsa_assume_role_policy(
                args.oidc_provider_arn, issuer, args.config.namespace, job
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.iam.RolePolicy(
            f"{self._name}-{job}", role=role.name, policy=policy, opts=pulumi.ResourceOptions(parent=self)
        )
        return role

    def _alarm(self, job: _Job) -> None:
        aws.cloudwatch.MetricAlarm(
            f"{self._name}-{job.name}-missed",
            name=f"mlp-{self._args.environment}-{job.name}-missed",
            alarm_description=(
                f"No successful {job.name} run in {job.alarm_hours} h: the CronJob failed, did not start, "
                "or its pod cannot publish the metric"
            ),
            namespace=METRIC_NAMESPACE,
            metric_name=METRIC_NAME,
            dimensions={"Job": job.name},
            statistic="Sum",
            period=job.alarm_hours * 3600,
            evaluation_periods=1,
            threshold=1,
            comparison_operator="LessThanThreshold",
            # No datapoint at all is exactly the failure this alarm is for.
            treat_missing_data="breaching",
            alarm_actions=[self._args.alert_topic_arn],
            ok_actions=[self._args.alert_topic_arn],
            opts=pulumi.ResourceOptions(parent=self),
        )

    # -- Kubernetes: namespace, service accounts, CronJobs ---------------------------------------

    def _namespace(self) -> k8s.core.v1.Namespace:
        args = self._args
        namespace = k8s.core.v1.Namespace(
            f"{self._name}-ns",
            metadata={
                "name": args.config.namespace,
                "labels": {
                    **self._labels,
                    **pod_security_labels("restricted", f"v{args.kubernetes_version}"),
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        name = namespace.metadata["name"]
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-default-deny",
            metadata={"name": "default-deny", "namespace": name, "labels": self._labels},
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            opts=pulumi.ResourceOptions(parent=self),
        )
        # The jobs serve nothing; they resolve names and call AWS APIs (and Slack) over HTTPS, whose
        # public and endpoint addresses no fixed CIDR names.
        k8s.networking.v1.NetworkPolicy(
            f"{self._name}-egress",
            metadata={"name": "jobs-egress", "namespace": name, "labels": self._labels},
            spec={
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    DNS_EGRESS,
                    HTTPS_EGRESS,
                ],
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        return namespace

    def _cron_job(self, job: _Job, namespace: pulumi.Input[str], role: aws.iam.Role) -> None:
        args = self._args
        labels = {NAME_LABEL: job.name, **self._labels}
        # IRSA needs no Kubernetes API token: the EKS pod identity webhook sees the role-arn annotation
        # and projects its own audience-bound token (sts.amazonaws.com) into the pod, which is all
        # AssumeRoleWithWebIdentity takes. So neither the account nor the pod automounts the API token.
        account = k8s.core.v1.ServiceAccount(
            f"{self._name}-{job.name}",
            metadata={
                "name": job.name,
                "namespace": namespace,
                "labels": labels,
                "annotations": {
                    "eks.amazonaws.com/role-arn": role.arn,
                    "eks.amazonaws.com/sts-regional-endpoints": "true",
                },
            },
            automount_service_account_token=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        pod = {
            "serviceAccountName": account.metadata["name"],
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": JOB_UID,
                "runAsGroup": JOB_UID,
                "fsGroup": JOB_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": job.name,
                    "image": args.config.image,
                    "command": ["mlp"],
                    "args": list(job.args),
                    "env": [
                        {"name": "HOME", "value": SCRATCH},
                        {"name": "TMPDIR", "value": SCRATCH},
                        {"name": "AWS_REGION", "value": args.region},
                        {"name": "AWS_DEFAULT_REGION", "value": args.region},
                        *({"name": name, "value": value} for name, value in job.env.items()),
                    ],
                    "resources": {
                        "requests": {"cpu": job.cpu, "memory": job.memory},
                        "limits": {"cpu": job.cpu, "memory": job.memory},
                    },
                    "securityContext": container_security(),
                    "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
        }
        k8s.batch.v1.CronJob(
            f"{self._name}-{job.name}",
            metadata={"name": job.name, "namespace": namespace, "labels": labels},
            spec={
                "schedule": job.schedule,
                "timeZone": "Etc/UTC",
                # A run still going when the next is due finishes alone: two reapers never race.
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": job.starting_deadline_seconds,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "backoffLimit": job.backoff_limit,
                        "activeDeadlineSeconds": job.active_deadline_seconds,
                        "template": {"metadata": {"labels": labels}, "spec": pod},
                    },
                },
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._alarm(job)

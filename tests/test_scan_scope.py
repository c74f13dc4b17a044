"""`mlp idle` and `mlp untagged` over several accounts and regions, against moto in-process.

moto keeps one backend per account and maps an assumed role's credentials to the role's account, so
an organization with member accounts is real here: a resource seeded through a member's role is in
that member's backend only, and the scans reach it only through the same assumed role.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws
from moto.cloudwatch.models import CloudWatchBackend
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import InstanceBackend

from finops import scope as scope_module
from finops.idle import GPU_METRIC, MAX_QUERIES_PER_CALL
from mlp import aws
from mlp.cli import main

PAYER = "123456789012"
ROLE = "FinOpsReadOnly"
AMI = "ami-12c6146b"


@dataclass(frozen=True)
class Member:
    account_id: str
    name: str

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{ROLE}"

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A client acting in this account, as moto maps the assumed role's credentials."""
        if self.account_id == PAYER:
            return boto3.client(service, region_name=region)
        credentials = boto3.client("sts", region_name="us-east-1").assume_role(
            RoleArn=self.role_arn, RoleSessionName="seed"
        )["Credentials"]
        return boto3.client(
            service,
            region_name=region,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def idle_gpus(self, region: str = "us-east-1", count: int = 1) -> list[str]:
        """Running GPU instances launched a day ago whose GPU stayed at 1 % since."""
        ids = [
            instance["InstanceId"]
            for instance in self.client("ec2", region).run_instances(
                ImageId=AMI, MinCount=count, MaxCount=count, InstanceType="g5.xlarge"
            )["Instances"]
        ]
        now = datetime.now(UTC)
        for instance_id in ids:
            ec2_backends[self.account_id][region].get_instance(instance_id).launch_time = (
                now - timedelta(hours=30)
            ).replace(tzinfo=None)
        namespace, name = GPU_METRIC
        data = [
            {
                "MetricName": name,
                "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                "Timestamp": now - timedelta(hours=hours_ago + 0.5),
                "Value": 1.0,
            }
            for instance_id in ids
            for hours_ago in range(2)
        ]
        cloudwatch = self.client("cloudwatch", region)
        for start in range(0, len(data), 1000):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[start : start + 1000])
        return ids

    def untagged_volume(self, region: str = "us-east-1") -> str:
        return self.client("ec2", region).create_volume(AvailabilityZone=f"{region}a", Size=10)["VolumeId"]


@dataclass(frozen=True)
class Organization:
    payer: Member
    dev: Member
    prod: Member

    @property
    def members(self) -> list[Member]:
        return [self.payer, self.dev, self.prod]

    def accounts_file(self, path: Path) -> Path:
        lines = ["accounts:", f"  - account_id: '{PAYER}'", "    name: payer"]
        for member in (self.dev, self.prod):
            lines += [
                f"  - account_id: '{member.account_id}'",
                f"    name: {member.name}",
                f"    role: {ROLE}",
            ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


@pytest.fixture
def organization() -> Iterator[Organization]:
    with mock_aws():
        organizations = boto3.client("organizations", region_name="us-east-1")
        organizations.create_organization(FeatureSet="ALL")
        created = {
            name: organizations.create_account(AccountName=name, Email=f"{name}@example.com")[
                "CreateAccountStatus"
            ]["AccountId"]
            for name in ("dev", "prod")
        }
        yield Organization(
            payer=Member(PAYER, "payer"),
            dev=Member(created["dev"], "dev"),
            prod=Member(created["prod"], "prod"),
        )


def run_mlp(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run_mlp(capsys, *args, "--format", "json")
    assert code in (0, 1), err
    return code, json.loads(out)


def refuse_describe_instances(
    monkeypatch: pytest.MonkeyPatch, account_id: str, region: str, error: EC2ClientError
) -> None:
    """DescribeInstances fails in one account-region only, as AWS would answer it there."""
    original = InstanceBackend.describe_instances

    def describe(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (self.account_id, self.region_name) == (account_id, region):
            raise error
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InstanceBackend, "describe_instances", describe)


# --- accounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["accounts-file", "org-role"])
def test_idle_findings_land_with_their_account(
    organization: Organization, capsys: pytest.CaptureFixture[str], tmp_path: Path, how: str
) -> None:
    planted = {member.account_id: set(member.idle_gpus()) for member in organization.members}
    chosen = (
        ["--accounts", str(organization.accounts_file(tmp_path / "accounts.yaml"))]
        if how == "accounts-file"
        else ["--org-role", ROLE]
    )

    code, report = run_json(capsys, "idle", "--regions", "us-east-1,us-west-2", *chosen)

    assert code == 0
    found: dict[str, set[str]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["account_id"], set()).add(finding["resource_id"])
    assert found == planted
    names = {finding["account_id"]: finding["account_name"] for finding in report["findings"]}
    expected_names = {member.account_id: member.name for member in organization.members}
    if how == "org-role":
        # Organizations names the payer after the organization's master account, not "payer".
        expected_names[PAYER] = names[PAYER]
    assert names == expected_names
    assert {account["account_id"] for account in report["scope"]["accounts"]} == set(planted)
    assert all(account["regions"] == ["us-east-1", "us-west-2"] for account in report["scope"]["accounts"])
    assert (report["scope"]["gaps"], report["scope"]["regions"]) == ([], ["us-east-1", "us-west-2"])


def test_untagged_findings_land_with_their_account(
    organization: Organization, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    planted = {member.account_id: member.untagged_volume() for member in organization.members}
    accounts = organization.accounts_file(tmp_path / "accounts.yaml")

    code, report = run_json(capsys, "untagged", "--regions", "us-east-1", "--accounts", str(accounts))

    assert code == 0
    volumes = {
        finding["account_id"]: (finding["arn"].rsplit("/", 1)[1], finding["account_name"])
        for finding in report["findings"]
        if finding["resource_type"] == "ec2:volume"
    }
    assert volumes == {
        member.account_id: (planted[member.account_id], member.name) for member in organization.members
    }
    assert all(f"{finding['account_id']}:" in finding["arn"] for finding in report["findings"])
    assert [account["name"] for account in report["scope"]["accounts"]] == ["payer", "dev", "prod"]
    assert report["scope"]["gaps"] == [] and report["scope"]["skipped"] == []


def test_a_member_whose_role_cannot_be_assumed_is_a_named_gap(
    organization: Organization,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto lets any role be assumed; AWS refuses a role whose trust policy leaves the caller out.
    assume = aws.assumed_role_session

    def refuse_prod(role_arn: str, **kwargs: Any) -> Any:
        if role_arn == organization.prod.role_arn:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "not authorized to perform sts:AssumeRole"}},
                "AssumeRole",
            )
        return assume(role_arn, **kwargs)

    monkeypatch.setattr(aws, "assumed_role_session", refuse_prod)
    dev_gpu = organization.dev.idle_gpus()
    organization.prod.idle_gpus()
    accounts = str(organization.accounts_file(tmp_path / "accounts.yaml"))

    code, report = run_json(capsys, "idle", "--regions", "us-east-1", "--accounts", accounts)

    assert code == 1
    assert {finding["resource_id"] for finding in report["findings"]} == set(dev_gpu)
    [gap] = report["scope"]["gaps"]
    assert (gap["account_id"], gap["account_name"]) == (organization.prod.account_id, "prod")
    assert "region" not in gap and gap["reason"].startswith("AccessDenied")

    code, out, _ = run_mlp(capsys, "idle", "--regions", "us-east-1", "--accounts", accounts)
    assert code == 1
    assert f"not scanned: account {organization.prod.account_id} (prod): AccessDenied" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("code", "max_attempts"),
    [
        ("UnauthorizedOperation", None),
        # Past botocore's retries: one attempt here, so the test does not sleep through the backoff.
        ("RequestLimitExceeded", "1"),
    ],
    ids=["access-denied", "throttled"],
)
@pytest.mark.parametrize("command", ["idle", "untagged"])
def test_a_target_failing_mid_scan_is_a_gap_and_the_rest_is_there(
    organization: Organization,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: str,
    max_attempts: str | None,
    command: str,
) -> None:
    if max_attempts:
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", max_attempts)
    kept = organization.dev.idle_gpus("us-east-1") + organization.prod.idle_gpus("us-west-2")
    lost = organization.dev.idle_gpus("us-west-2")
    refuse_describe_instances(
        monkeypatch, organization.dev.account_id, "us-west-2", EC2ClientError(code, "refused in this test")
    )
    accounts = str(organization.accounts_file(tmp_path / "accounts.yaml"))

    exit_code, report = run_json(capsys, command, "--regions", "us-east-1,us-west-2", "--accounts", accounts)

    assert exit_code == 1
    found = {finding.get("resource_id") or finding["arn"].rsplit("/", 1)[1] for finding in report["findings"]}
    assert set(kept) <= found and not set(lost) & found
    [gap] = report["scope"]["gaps"]
    assert (gap["account_id"], gap["account_name"], gap["region"]) == (
        organization.dev.account_id,
        "dev",
        "us-west-2",
    )
    assert gap["reason"] == f"{code}: refused in this test"


# --- regions -----------------------------------------------------------------------------------


def test_the_default_is_every_enabled_region(
    organization: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    regions = ["us-east-1", "eu-west-1", "ap-southeast-2"]
    planted = {
        (instance_id, region) for region in regions for instance_id in organization.payer.idle_gpus(region)
    }
    enabled, disabled = scope_module.enabled_regions(None)

    code, report = run_json(capsys, "idle")

    assert code == 0
    assert {(finding["resource_id"], finding["region"]) for finding in report["findings"]} == planted
    assert report["scope"]["regions"] == enabled and set(regions) <= set(enabled)
    # moto reports opt-in statuses: the regions not opted in are skipped, and said so.
    assert disabled
    assert {skipped["region"] for skipped in report["scope"]["skipped"]} == set(disabled)


def test_a_region_named_that_is_not_enabled_is_skipped_and_said_so(
    organization: Organization, capsys: pytest.CaptureFixture[str]
) -> None:
    _, disabled = scope_module.enabled_regions(None)
    off = "me-south-1"
    assert off in disabled
    [instance_id] = organization.payer.idle_gpus("us-east-1")

    code, out, _ = run_mlp(capsys, "idle", "--regions", f"us-east-1,{off}")

    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "scanned 1 account x 1 region (us-east-1)"
    assert f"skipped in account {PAYER}: not enabled for the account: {off}" in lines
    assert instance_id in out

    code, report = run_json(capsys, "untagged", "--regions", f"us-east-1,{off}")
    assert code == 0
    assert report["scope"]["skipped"] == [
        {"account_id": PAYER, "region": off, "reason": "not enabled for the account"}
    ]
    assert report["scope"]["regions"] == ["us-east-1"]


# --- CloudWatch batching -----------------------------------------------------------------------


def test_cloudwatch_calls_stay_within_one_per_500_metrics_per_target(
    organization: Organization,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = {
        (organization.dev.account_id, "us-east-1"): 501,
        (organization.prod.account_id, "us-west-2"): 3,
        (PAYER, "us-east-1"): 1,
    }
    members = {member.account_id: member for member in organization.members}
    for (account_id, region), count in counts.items():
        members[account_id].idle_gpus(region, count=count)
    calls: Counter[tuple[str, str]] = Counter()
    sizes: list[int] = []
    original = CloudWatchBackend.get_metric_data

    def counting(self: CloudWatchBackend, queries: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        calls[(self.account_id, self.region_name)] += 1
        sizes.append(len(queries))
        return original(self, queries, *args, **kwargs)

    monkeypatch.setattr(CloudWatchBackend, "get_metric_data", counting)
    accounts = str(organization.accounts_file(tmp_path / "accounts.yaml"))

    code, report = run_json(capsys, "idle", "--regions", "us-east-1,us-west-2", "--accounts", accounts)

    assert code == 0 and len(report["findings"]) == sum(counts.values())
    # Every instance has GPU metrics, so no CPU pass: one GPU pass of ceil(n/500) calls per target.
    assert dict(calls) == {
        target: math.ceil(count / MAX_QUERIES_PER_CALL) for target, count in counts.items()
    }
    assert max(sizes) <= MAX_QUERIES_PER_CALL


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("accounts: [\n  - account_id: '111111111111'\n", "not valid YAML"),
        ("accounts:\n  - name: dev\n", "is not a 12-digit AWS account id"),
        (
            "accounts:\n  - account_id: '111111111111'\n  - account_id: '111111111111'\n",
            "listed twice",
        ),
        (
            "accounts:\n  - account_id: '111111111111'\n    role: arn:aws:iam::222222222222:role/FinOps\n",
            "is in account 222222222222, not 111111111111",
        ),
    ],
    ids=["bad-yaml", "missing-account-id", "duplicate", "foreign-role-arn"],
)
@pytest.mark.parametrize("command", ["idle", "untagged"])
def test_a_bad_accounts_file_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, named: str, command: str
) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(text, encoding="utf-8")

    with mock_aws():
        code, out, err = run_mlp(capsys, command, "--accounts", str(path))

    assert code == 2 and out == ""
    assert err.startswith(f"mlp: error: --accounts {path}") and err.count("\n") == 1
    assert named in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--accounts", "accounts.yaml", "--org-role", ROLE], "--accounts and --org-role"),
        (["--concurrency", "0"], "--concurrency 0"),
        (["--regions", "us-east-1,mars-north-9"], "--regions"),
    ],
)
def test_conflicting_or_bad_scope_flags_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    with mock_aws():
        code, out, err = run_mlp(capsys, "idle", *args)

    assert code == 2 and out == ""
    assert err.startswith("mlp: error: ") and err.count("\n") == 1 and named in err

"""The reaper over an organization: proofs hold per account, each account acted on with its own session.

Account A is the caller's (the payer), account B an organization member reached through its role, as
`--org-role` reaches it. Moto keeps the two accounts' resources apart by the credentials used, so a
delete made with the wrong account's session would miss or hit the wrong resource, and the
snapshots, read with each account's own clients, would show it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from moto import mock_aws
from typer.testing import CliRunner

import finops.reaper
import finops.run_resources
from finops.inventory import Scope
from finops.reaper import scan_expired_run_leftovers
from finops.scope import Account, ScanScope
from infra.training.state import DiyStateBackend
from mlp.cli import app
from mlp.cli.reap_cmds import DEFAULT_CONCURRENCY
from tests.reaper_world import (
    EXPIRED,
    MEMBER_ROLE,
    NOW,
    REGION,
    FakePulumi,
    World,
    add_stack,
    build_reaper,
    diy_backend,
    member_account,
    member_clients,
    reuse_clients,
    snapshot,
)
from tests.test_reap_cli import EXPIRED as WALL_CLOCK_EXPIRED

runner = CliRunner()


@pytest.fixture
def accounts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[World, World]]:
    """Account A (the caller's) and member account B, each planted through its own credentials."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("MLP_BACKEND_URL", "PULUMI_BACKEND_URL", "MLP_SLACK_WEBHOOK"):
        monkeypatch.delenv(name, raising=False)
    reuse_clients(monkeypatch)
    with mock_aws():
        member = member_account()
        yield World(), World(clients=member_clients(member), account_id=member)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    diy_backend(root)
    return root


def both(a: World, b: World) -> ScanScope:
    """us-east-1 of both accounts, B through its assumed role, as `resolve_scope` builds it."""
    from mlp import aws

    session = aws.assumed_role_session(
        f"arn:aws:iam::{b.account_id}:role/{MEMBER_ROLE}", session_name="reaper-tests"
    )
    return ScanScope(
        targets=[Scope(REGION, a.account_id), Scope(REGION, b.account_id, "research", session)],
        accounts=[Account(a.account_id), Account(b.account_id, "research")],
    )


def of(world: World) -> dict[tuple[str, str], dict[str, str]]:
    return snapshot(world.clients)


def test_a_stack_in_account_a_never_takes_its_look_alikes_in_account_b(
    accounts: tuple[World, World], state: Path
) -> None:
    a, b = accounts
    stacked = a.plant_run("r1")
    add_stack(state, "train-r1", stacked.tags, account_id=a.account_id)
    orphan_a = a.plant_run("orph1")
    # The same run's resources, tagged and named exactly alike, in the other account.
    look_alike = b.plant_run("r1", twin_of=stacked)
    assert (look_alike.tags, look_alike.asg, look_alike.role) == (stacked.tags, stacked.asg, stacked.role)
    orphan_b = b.plant_run("orph2")
    before_b = of(b)
    pulumi = FakePulumi(a, state)

    result = build_reaper(DiyStateBackend(f"file://{state}"), destroyer=lambda: pulumi, scope=both(a, b)).run(
        apply=True, now=NOW
    )

    decided = {(c.stack, c.account_id): (c.reason, c.action, c.why) for c in result.candidates}
    assert decided[("train-r1", a.account_id)][:2] == ("expired", "destroy")
    assert decided[("train-orph1", a.account_id)][:2] == ("orphaned", "destroy")
    assert decided[("train-orph2", b.account_id)][:2] == ("orphaned", "destroy")
    reason, action, why = decided[("train-r1", b.account_id)]
    assert (reason, action) == ("orphaned", "skip") and f"lives in account {a.account_id}" in why
    assert result.errors == [] and not result.failed
    assert pulumi.calls == [("destroy", "train-r1"), ("remove", "train-r1")]
    assert {(r.run_id, r.account_id) for r in result.receipts} == {
        ("r1", a.account_id),
        ("orph1", a.account_id),
        ("orph2", b.account_id),
    }
    for receipt in result.receipts:
        assert all(f":{receipt.account_id}:" in arn for arn in receipt.removed), receipt
        assert receipt.leaks == []

    after_a, after_b = set(of(a)), set(of(b))
    assert not (stacked.ids() | orphan_a.ids()) & after_a
    assert look_alike.ids() <= after_b
    assert not orphan_b.ids() & after_b
    assert {
        key
        for key in before_b
        if key not in after_b and key[0] not in ("member", "attachment", "profile-role")
    } == orphan_b.ids()


def test_a_stack_whose_state_proves_no_account_is_refused_and_nothing_is_touched(
    accounts: tuple[World, World], state: Path
) -> None:
    a, b = accounts
    unproven = a.plant_run("r2")
    # `pulumi stack init` and tags, but no output naming an account.
    add_stack(state, "train-r2", unproven.tags, account_id=None)
    two = a.plant_run("r3")
    add_stack(
        state,
        "train-r3",
        two.tags,
        outputs={"instanceRoleArn": f"arn:aws:iam::{b.account_id}:role/fleet-instance-r3"},
        account_id=a.account_id,
    )
    before = of(a)
    notices: list[str] = []
    pulumi = FakePulumi(a, state)

    result = build_reaper(
        DiyStateBackend(f"file://{state}"), destroyer=lambda: pulumi, notify=notices.append, scope=both(a, b)
    ).run(apply=True, now=NOW)

    by_stack = {c.stack: c for c in result.candidates}
    assert by_stack["train-r2"].action == "refuse" and by_stack["train-r2"].account_id == ""
    assert "names no account" in by_stack["train-r2"].why
    assert by_stack["train-r3"].action == "refuse"
    assert f"names accounts {a.account_id}, {b.account_id}" in by_stack["train-r3"].why
    assert result.failed and pulumi.calls == [] and result.receipts == []
    assert of(a) == before
    assert sum("refuse" in notice for notice in notices) == 2


def reap_cli(state: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(
        app,
        [
            "reap",
            "--format",
            "json",
            "--org-role",
            MEMBER_ROLE,
            "--regions",
            REGION,
            "--backend",
            f"file://{state}",
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, json.loads(result.stdout)


def test_reap_over_the_organization_lists_decisions_with_account_ids_and_the_scope(
    accounts: tuple[World, World], state: Path
) -> None:
    a, b = accounts
    mine = a.plant_run("oa", expires_at=WALL_CLOCK_EXPIRED)
    theirs = b.plant_run("ob", expires_at=WALL_CLOCK_EXPIRED)
    before_a, before_b = of(a), of(b)

    code, payload = reap_cli(state)

    assert code == 0, payload
    assert payload["applied"] is False
    assert [(c["stack"], c["account_id"], c["action"]) for c in payload["candidates"]] == sorted(
        [("train-oa", a.account_id, "destroy"), ("train-ob", b.account_id, "destroy")],
        key=lambda row: row[1],
    )
    scope = payload["scope"]
    assert {account["account_id"]: account["regions"] for account in scope["accounts"]} == {
        a.account_id: [REGION],
        b.account_id: [REGION],
    }
    assert scope["regions"] == [REGION] and scope["gaps"] == []
    assert of(a) == before_a and of(b) == before_b
    assert mine.ids() <= set(before_a) and theirs.ids() <= set(before_b)


def test_an_account_region_that_denies_access_is_a_named_gap_and_the_others_are_still_reaped(
    accounts: tuple[World, World], state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = accounts
    mine = a.plant_run("oa", expires_at=WALL_CLOCK_EXPIRED)
    theirs = b.plant_run("ob", expires_at=WALL_CLOCK_EXPIRED)
    stacked = b.plant_run("sb", expires_at=WALL_CLOCK_EXPIRED)
    add_stack(state, "train-sb", stacked.tags, account_id=b.account_id)
    before_b = of(b)
    real = finops.run_resources.find_target_run_resources

    def denied_in_b(target: Scope, run_id: str | None = None, *, with_global: bool) -> Any:
        # Moto answers every role it is asked to assume; an SCP denying the member's region is faked.
        if target.account_id == b.account_id:
            raise botocore.exceptions.ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "explicit deny in a service control policy"}},
                "DescribeAutoScalingGroups",
            )
        return real(target, run_id, with_global=with_global)

    monkeypatch.setattr(finops.run_resources, "find_target_run_resources", denied_in_b)
    pulumi = FakePulumi(b, state)
    monkeypatch.setattr(finops.reaper, "PulumiAutomationBackend", lambda url: pulumi)

    code, payload = reap_cli(state, "--apply")

    assert code == 1
    [gap] = payload["scope"]["gaps"]
    assert (gap["account_id"], gap["region"]) == (b.account_id, REGION) and "AccessDenied" in gap["reason"]
    assert [(r["run_id"], r["account_id"]) for r in payload["receipts"]] == [("oa", a.account_id)]
    assert not mine.ids() & set(of(a))
    [skipped] = [c for c in payload["candidates"] if c["stack"] == "train-sb"]
    assert (
        skipped["action"] == "skip"
        and f"account {b.account_id}, which this reap could not reach" in skipped["why"]
    )
    assert pulumi.calls == []
    assert of(b) == before_b and theirs.ids() <= set(before_b)


def test_leftovers_are_found_per_account_and_a_failing_target_is_a_gap(
    accounts: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = accounts
    a.plant_run("la", expires_at=EXPIRED)
    b.plant_run("lb", expires_at=EXPIRED)
    scope = both(a, b)

    found = scan_expired_run_leftovers(scope, NOW)
    assert [(item["run_id"], item["account_id"]) for item in found.leftovers] == sorted(
        [("la", a.account_id), ("lb", b.account_id)], key=lambda row: row[1]
    )
    assert all(r["account_id"] == item["account_id"] for item in found.leftovers for r in item["resources"])
    assert found.to_json()["scope"]["gaps"] == []

    def unreachable(target: Scope, run_id: str | None = None, *, with_global: bool) -> Any:
        raise botocore.exceptions.EndpointConnectionError(
            endpoint_url=f"https://ec2.{target.region}.amazonaws.com"
        )

    monkeypatch.setattr(finops.run_resources, "find_target_run_resources", unreachable)
    lost = scan_expired_run_leftovers(scope, NOW)
    assert lost.leftovers == [] and {gap.account_id for gap in lost.scope.gaps} == {
        a.account_id,
        b.account_id,
    }


def test_the_cli_default_concurrency_is_the_scopes() -> None:
    from finops.scope import DEFAULT_CONCURRENCY as SCOPE_DEFAULT

    assert DEFAULT_CONCURRENCY == SCOPE_DEFAULT

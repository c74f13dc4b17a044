"""Member-account sessions: assumed on first use, in the member's account, refreshed before they expire."""

from __future__ import annotations

from datetime import datetime, timedelta

import boto3
import botocore.credentials
import pytest
from dateutil.tz import tzlocal
from moto import mock_aws

from mlp import aws


@pytest.fixture
def member_role() -> str:
    with mock_aws():
        organizations = boto3.client("organizations", region_name="us-east-1")
        organizations.create_organization(FeatureSet="ALL")
        member = organizations.create_account(AccountName="team-a", Email="a@example.com")
        yield f"arn:aws:iam::{member['CreateAccountStatus']['AccountId']}:role/FinOpsReadOnly"


def test_the_session_acts_in_the_member_account_under_a_named_session(member_role: str) -> None:
    session = aws.assumed_role_session(member_role, session_name="ml-platform-finops-scan")
    identity = aws.client("sts", "us-east-1", session=session).get_caller_identity()
    assert identity["Account"] == member_role.split(":")[4]
    assert identity["Arn"].endswith("/FinOpsReadOnly/ml-platform-finops-scan")


def test_nothing_is_assumed_until_the_session_is_used(
    member_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assumed: list[str] = []
    fetch = botocore.credentials.AssumeRoleCredentialFetcher.fetch_credentials

    def counting(self: botocore.credentials.AssumeRoleCredentialFetcher) -> dict:
        assumed.append(self._role_arn)
        return fetch(self)

    monkeypatch.setattr(botocore.credentials.AssumeRoleCredentialFetcher, "fetch_credentials", counting)
    session = aws.assumed_role_session(member_role, session_name="scan")
    # Resolving a scope builds every account's session up front: none may cost a request yet.
    assert assumed == []
    aws.client("sts", "us-east-1", session=session).get_caller_identity()
    assert assumed == [member_role]


def test_credentials_close_to_expiry_are_assumed_again(
    member_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = aws.assumed_role_session(member_role, session_name="long-scan")
    credentials = session.get_credentials()
    first = credentials.get_frozen_credentials().access_key
    # Fifty-nine minutes into the role's one-hour session, inside botocore's refresh window.
    later = datetime.now(tzlocal()) + timedelta(minutes=59)
    monkeypatch.setattr(credentials, "_time_fetcher", lambda: later)
    monkeypatch.setattr(botocore.credentials, "_local_now", lambda: later)
    second = credentials.get_frozen_credentials().access_key
    assert second != first
    assert (
        aws.client("sts", "us-east-1", session=session).get_caller_identity()["Account"]
        == member_role.split(":")[4]
    )

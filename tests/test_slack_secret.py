"""The scheduled report reads its Slack webhook from Secrets Manager: the URL sits in no manifest or stack."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from finops import delivery
from mlp.errors import UserError

WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXX"


@pytest.fixture
def secrets() -> boto3.client:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def test_the_webhook_is_the_secrets_string(secrets) -> None:
    arn = secrets.create_secret(Name="finops/slack", SecretString=f"  {WEBHOOK}\n")["ARN"]
    assert delivery.webhook_from_secret(arn) == WEBHOOK


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda client: "finops/slack", "is not a Secrets Manager secret ARN"),
        (
            lambda client: "arn:aws:secretsmanager:us-east-1:123456789012:secret:finops/none-AbCdEf",
            "no secret",
        ),
        (
            lambda client: client.create_secret(Name="finops/binary", SecretBinary=b"\x00")["ARN"],
            "holds no string",
        ),
    ],
    ids=["not-an-arn", "missing", "binary"],
)
def test_a_secret_that_cannot_give_the_url_is_one_line(secrets, make, words: str) -> None:
    with pytest.raises(UserError) as refused:
        delivery.webhook_from_secret(make(secrets))
    message = str(refused.value)
    assert words in message and "\n" not in message and delivery.SLACK_WEBHOOK_SECRET_ENV in message

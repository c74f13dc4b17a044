"""Rule 1: every taggable AWS resource, and everything launch templates and ASGs launch, carries the
mandatory cost tags.

Taggable and "reached by provider default tags" come from `infra.tagging` (introspection of
pulumi_aws), the key list from `mlp.tags`, so infra, policy and finops agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity
from pydantic import Field

from infra.tagging import ASG_TYPE, is_taggable, launched_resource_tags
from mlp.tags import DEFAULT_MANDATORY_TAGS, missing_tags
from policy.rules.common import Resource, Rule, RuleConfig, violation

LAUNCH_TEMPLATE_TYPE = "aws:ec2/launchTemplate:LaunchTemplate"
# Launched kinds whose cost lands on the bill: the instances and their volumes.
BILLED_LAUNCHED_KINDS: tuple[str, ...] = ("instance", "volume")


class MandatoryTagsConfig(RuleConfig):
    tags: list[str] = Field(
        list(DEFAULT_MANDATORY_TAGS),
        min_length=1,
        description="Tag keys every taggable AWS resource must carry with a non-empty value.",
    )


def _shown_keys(tags: dict[str, str]) -> str:
    present = sorted(key for key, value in tags.items() if value.strip())
    return f"(has: {', '.join(present)})" if present else "(has none)"


def check_mandatory_tags(resource: Resource, config: MandatoryTagsConfig) -> Iterator[str]:
    if not is_taggable(resource.type):
        return
    required = ", ".join(config.tags)
    if resource.type == ASG_TYPE:
        # The group's tags are also what its instances get, but only those marked propagateAtLaunch.
        propagated = launched_resource_tags(resource.type, resource.props)["instance"]
        missing = missing_tags(propagated, config.tags)
        if missing:
            yield violation(
                resource,
                "tags with propagateAtLaunch",
                f"missing {', '.join(missing)} {_shown_keys(propagated)}",
                f"add {{key, value, propagateAtLaunch: true}} entries for every mandatory tag ({required})",
            )
        return
    tags = resource.tags
    missing = missing_tags(tags, config.tags)
    if missing:
        yield violation(
            resource,
            "tags",
            f"missing {', '.join(missing)} {_shown_keys(tags)}",
            f"set every mandatory tag ({required}) under ml-platform:tags or on the resource",
        )
    if resource.type == LAUNCH_TEMPLATE_TYPE:
        launched = launched_resource_tags(resource.type, resource.props)
        for kind in BILLED_LAUNCHED_KINDS:
            missing = missing_tags(launched[kind], config.tags)
            if missing:
                yield violation(
                    resource,
                    f"tagSpecifications[resourceType={kind}].tags",
                    f"missing {', '.join(missing)} {_shown_keys(launched[kind])}",
                    f"add a tagSpecifications entry for {kind} carrying every mandatory tag ({required}); "
                    "provider default tags never reach launched resources",
                )


RULE = Rule(
    name="mandatory-cost-tags",
    description=(
        "Every taggable AWS resource, and every instance and volume it launches, "
        "carries the mandatory cost tags."
    ),
    severity=Severity.HIGH,
    check=check_mandatory_tags,
    config_model=MandatoryTagsConfig,
)

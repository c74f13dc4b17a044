"""IAM roles and instance profiles: global, listed once per account through any region's endpoint.

IAM lists neither tags nor filters on them, so tags are read one resource at a time and filtered
here. Instance-profile tags come from GetInstanceProfile, which AWS and moto both answer
(moto does not implement ListInstanceProfileTags).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from finops.inventory.core import (
    Dependent,
    Resource,
    ResourceType,
    Scope,
    TagFilter,
    filtered,
    if_exists,
    make_resource,
    pages,
    register,
    same_run,
)
from finops.inventory.ec2 import instance_dependents
from mlp.tags import normalize_tags

# States in which an association still gives an instance the profile's role.
ASSOCIATED_STATES = ("associating", "associated")


def _role_tags(iam: Any, role_name: str) -> dict[str, str] | None:
    """The role's tags, or None when the role is gone."""
    return if_exists(
        lambda: normalize_tags(
            [tag for page in pages(iam, "list_role_tags", RoleName=role_name) for tag in page.get("Tags", [])]
        )
    )


def _profile(iam: Any, profile_name: str) -> dict[str, Any] | None:
    answer = if_exists(lambda: iam.get_instance_profile(InstanceProfileName=profile_name))
    return answer["InstanceProfile"] if answer else None


def _profiles_of_role(iam: Any, role_name: str) -> list[str] | None:
    """Names of the instance profiles holding the role, or None when the role is gone."""
    return if_exists(
        lambda: [
            profile["InstanceProfileName"]
            for page in pages(iam, "list_instance_profiles_for_role", RoleName=role_name)
            for profile in page.get("InstanceProfiles", [])
        ]
    )


# -- roles ---------------------------------------------------------------------------------------


def _roles(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    iam = scope.client("iam")
    for page in pages(iam, "list_roles"):
        for role in page.get("Roles", []):
            tags = _role_tags(iam, role["RoleName"])
            if tags is None:
                continue
            resource = make_resource(
                "iam:role",
                role["RoleName"],
                role["Arn"],
                scope,
                tags,
                attributes={key: value for key, value in role.items() if key != "Tags"},
            )
            yield from filtered([resource], tag_filter)


def _role_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    iam = scope.client("iam")
    dependents = []
    for name in _profiles_of_role(iam, resource.resource_id) or []:
        profile = _profile(iam, name)
        if profile is not None:
            dependents.append(
                Dependent(
                    "iam:instance-profile",
                    name,
                    normalize_tags(profile.get("Tags")),
                    "instance profile holding the role",
                )
            )
    return dependents


def _delete_role(scope: Scope, resource: Resource) -> None:
    """Policies off, then the role; a role still in a profile is left whole (the profile's delete frees it)."""
    iam = scope.client("iam")
    name = resource.resource_id
    profiles = _profiles_of_role(iam, name)
    if profiles is None:
        return
    if profiles:
        raise RuntimeError(
            f"role {name} is still in instance profile {', '.join(profiles)}; delete the profile first"
        )
    inline = if_exists(
        lambda: [
            policy
            for page in pages(iam, "list_role_policies", RoleName=name)
            for policy in page["PolicyNames"]
        ]
    )
    for policy in inline or []:
        if_exists(lambda policy=policy: iam.delete_role_policy(RoleName=name, PolicyName=policy))
    attached = if_exists(
        lambda: [
            policy["PolicyArn"]
            for page in pages(iam, "list_attached_role_policies", RoleName=name)
            for policy in page["AttachedPolicies"]
        ]
    )
    for arn in attached or []:
        if_exists(lambda arn=arn: iam.detach_role_policy(RoleName=name, PolicyArn=arn))
    if_exists(lambda: iam.delete_role(RoleName=name))


# -- instance profiles ---------------------------------------------------------------------------


def _instance_profiles(scope: Scope, tag_filter: TagFilter | None) -> Iterator[Resource]:
    iam = scope.client("iam")
    for page in pages(iam, "list_instance_profiles"):
        for listed in page.get("InstanceProfiles", []):
            # The listing leaves tags out on AWS; the profile itself carries them.
            profile = _profile(iam, listed["InstanceProfileName"])
            if profile is None:
                continue
            resource = make_resource(
                "iam:instance-profile",
                profile["InstanceProfileName"],
                profile["Arn"],
                scope,
                profile.get("Tags"),
                attributes={key: value for key, value in profile.items() if key != "Tags"},
            )
            yield from filtered([resource], tag_filter)


def _instance_profile_dependents(scope: Scope, resource: Resource) -> list[Dependent]:
    """Live instances of the scope's region that run with the profile (other regions are other scopes)."""
    ec2 = scope.client("ec2")
    instances = [
        association["InstanceId"]
        for page in pages(ec2, "describe_iam_instance_profile_associations")
        for association in page.get("IamInstanceProfileAssociations", [])
        if association.get("IamInstanceProfile", {}).get("Arn") == resource.arn
        and association.get("State") in ASSOCIATED_STATES
    ]
    return instance_dependents(scope, instances, "instance running with the profile")


def _delete_instance_profile(scope: Scope, resource: Resource) -> None:
    """Free the profile's roles (only the same run's), then delete it; the roles themselves stay."""
    iam = scope.client("iam")
    name = resource.resource_id
    profile = _profile(iam, name)
    if profile is None:
        return
    profile_tags = normalize_tags(profile.get("Tags"))
    roles = [role["RoleName"] for role in profile.get("Roles", [])]
    foreign = [role for role in roles if not same_run(profile_tags, _role_tags(iam, role) or {})]
    if foreign:
        raise RuntimeError(
            f"instance profile {name} holds role {', '.join(foreign)} of another run or of none; "
            "refusing to remove it"
        )
    for role in roles:
        if_exists(
            lambda role=role: iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=role)
        )
    if_exists(lambda: iam.delete_instance_profile(InstanceProfileName=name))


register(
    ResourceType(
        kind="iam:role",
        service="iam",
        enumerate=_roles,
        is_global=True,
        untagged_scan=False,
        run_resource=True,
        dependents=_role_dependents,
        delete=_delete_role,
        delete_order=90,
    )
)
register(
    ResourceType(
        kind="iam:instance-profile",
        service="iam",
        enumerate=_instance_profiles,
        is_global=True,
        untagged_scan=False,
        run_resource=True,
        dependents=_instance_profile_dependents,
        delete=_delete_instance_profile,
        delete_order=80,
    )
)

"""What every rule shares: the resource view, its environment and tags, references between resources,
and the wrappers that turn plain rule functions into CrossGuard policies.

A rule is an ordinary function over `Resource` values (type, name, props as the analyzer builds them,
the props of its provider) returning violation messages. The wrappers adapt it to
`ResourceValidationPolicy`/`StackValidationPolicy`, so the same function runs under
`pulumi preview --policy-pack policy` and in the offline evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from infra.config import PROD
from infra.tagging import effective_tags, provider_default_tags
from mlp.tags import ENVIRONMENT
from policy.analyzer_view import Unknown, items_of, peek


class RuleConfig(BaseModel):
    """A policy's configuration: camelCase keys as in the pack config, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=RuleConfig)


@dataclass(frozen=True, eq=False)
class Resource:
    """One resource as a rule sees it, whichever path (CrossGuard or offline) produced it.

    Compared by identity: comparing props would read values that may be unknown at preview.
    """

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    provider_props: Mapping[str, Any] | None = None
    # Property name -> URNs of the resources its value came from (from the engine, or a plan that records them).
    property_dependencies: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @property
    def tags(self) -> dict[str, str]:
        """Provider default tags (where they reach this type) merged with the resource's own."""
        return effective_tags(self.type, self.props, provider_default_tags(self.provider_props))

    @property
    def environment(self) -> str:
        return self.tags.get(ENVIRONMENT, "")

    @property
    def is_prod(self) -> bool:
        return self.environment == PROD

    def identities(self) -> set[str]:
        """Values other resources may use to point at this one when no dependency data is at hand."""
        found = {self.urn, self.name}
        for key in ("id", "arn", "bucket", "name"):
            value = peek(self.props, key)
            if isinstance(value, str):
                found.add(value)
        return found

    def is_named_by(self, reference: str) -> bool:
        """True when `reference` is one of its identities or a name AWS generates from its prefix."""
        if reference in self.identities():
            return True
        prefixes = (peek(self.props, key) for key in ("bucketPrefix", "namePrefix"))
        return any(isinstance(prefix, str) and prefix and reference.startswith(prefix) for prefix in prefixes)


def from_validation_args(args: ResourceValidationArgs) -> Resource:
    provider_props = args.provider.props if args.provider is not None else None
    return Resource(args.resource_type, args.name, args.urn, args.props, provider_props)


def from_policy_resource(resource: PolicyResource) -> Resource:
    provider_props = resource.provider.props if resource.provider is not None else None
    dependencies = {
        prop: frozenset(dep.urn for dep in deps)
        for prop, deps in (resource.property_dependencies or {}).items()
    }
    return Resource(
        resource.resource_type, resource.name, resource.urn, resource.props, provider_props, dependencies
    )


def referenced(source: Resource, prop: str, targets: Iterable[Resource]) -> list[Resource]:
    """The targets that `source.props[prop]` points at.

    Under CrossGuard the engine's property dependencies say it even when the value is unknown at
    preview; without them (an archived plan) the value is matched against the targets' identities.
    """
    candidates = list(targets)
    urns = source.property_dependencies.get(prop)
    if urns:
        return [target for target in candidates if target.urn in urns]
    value = peek(source.props, prop)
    if value is None or isinstance(value, Unknown):
        return []
    wanted = [str(item) for item in items_of(value)] or [str(value)]
    return [target for target in candidates if any(target.is_named_by(reference) for reference in wanted)]


def violation(resource: Resource, prop: str, found: str, fix: str) -> str:
    """The one message shape: which resource, which property, the value found (as shown), the fix."""
    return f"{resource.type.rsplit(':', 1)[-1]} '{resource.name}': {prop} is {found}; {fix}"


def parse_config(model: type[ConfigT], raw: Mapping[str, Any] | None) -> ConfigT:
    return model.model_validate(dict(raw or {}))


def config_schema(model: type[RuleConfig]) -> PolicyConfigSchema:
    """The JSON schema the Pulumi engine validates this policy's config against (with defaults)."""
    return PolicyConfigSchema(properties=model.model_json_schema(by_alias=True)["properties"])


ResourceCheck = Callable[[Resource, Any], Iterable[str]]
StackCheck = Callable[[Sequence[Resource], Any], Iterable[tuple[str | None, str]]]


@dataclass(frozen=True)
class Rule:
    """A rule's metadata and its check; `policy()` wraps it for CrossGuard."""

    name: str
    description: str
    severity: Severity
    check: ResourceCheck | StackCheck
    config_model: type[RuleConfig] | None = None
    enforcement_level: EnforcementLevel = EnforcementLevel.MANDATORY
    stack_level: bool = False

    def config(self, raw: Mapping[str, Any] | None) -> Any:
        return parse_config(self.config_model, raw) if self.config_model else None

    def policy(self) -> ResourceValidationPolicy | StackValidationPolicy:
        schema = config_schema(self.config_model) if self.config_model else None
        if self.stack_level:

            def validate_stack(args: StackValidationArgs, report_violation: ReportViolation) -> None:
                resources = [from_policy_resource(resource) for resource in args.resources]
                for urn, message in self.check(resources, self.config(args.get_config())):
                    report_violation(message, urn)

            return StackValidationPolicy(
                name=self.name,
                description=self.description,
                validate=validate_stack,
                enforcement_level=self.enforcement_level,
                config_schema=schema,
                severity=self.severity,
            )

        def validate_resource(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
            for message in self.check(from_validation_args(args), self.config(args.get_config())):
                report_violation(message, None)

        return ResourceValidationPolicy(
            name=self.name,
            description=self.description,
            validate=validate_resource,
            enforcement_level=self.enforcement_level,
            config_schema=schema,
            severity=self.severity,
        )

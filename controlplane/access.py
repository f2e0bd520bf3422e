"""Who may do what: roles, attribute policies, and the decision between them.

A caller is either an **operator** (API token with a role, attributes such as
``department: ml_ops``, and attached policies) or a **device** (its own credential). Decisions
are deny-by-default:

- an operator is allowed ``action`` on ``resource`` when its role grants it, **or** when one of
  its policies has a permission for that resource and action whose conditions all hold;
- a device is allowed only the device routes (``device`` resource); an operator credential is
  refused there, and a device credential is refused on every operator route.

Policies use the design brief's format::

    permissions:
      - resource: models
        actions: [read, update]
        conditions:
          - {attribute: department, operator: equals, value: ml_ops}
          - {attribute: resource.labels.line, operator: in, value: ["3", "4"]}

A bare attribute names the caller's attribute; ``resource.labels.<key>`` names a label of the
resource being acted on. A condition on resource labels holds only where the route addresses
one labelled resource (show, update, delete of a device or a model); on collection routes it
never holds, so such a permission never widens a list or a create.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["viewer", "operator", "admin"]
Action = Literal["read", "create", "update", "delete"]

RESOURCES = (
    "devices",
    "groups",
    "enrollment_tokens",
    "models",
    "workflows",
    "thresholds",
    "policies",
    "tokens",
    "audit",
)
ACTIONS: tuple[Action, ...] = ("read", "create", "update", "delete")
FLEET = ("devices", "groups", "models", "workflows", "thresholds")

ROLE_GRANTS: dict[str, frozenset[tuple[str, str]]] = {
    "viewer": frozenset((resource, "read") for resource in FLEET),
    "operator": frozenset(
        [(resource, action) for resource in FLEET for action in ("read", "create", "update")]
        + [("enrollment_tokens", "create"), ("enrollment_tokens", "read"), ("audit", "read")]
    ),
    "admin": frozenset((resource, action) for resource in RESOURCES for action in ACTIONS),
}
"""What each role may do. Viewers read the fleet; operators change it (but delete nothing and
manage no credentials or policies); admins do everything."""

RESOURCE_LABEL_PREFIX = "resource.labels."


class ConditionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attribute: str = Field(min_length=1, max_length=128)
    operator: Literal["equals", "not_equals", "in", "not_in", "exists"]
    value: Any = None

    def holds(self, caller: Mapping[str, Any], labels: Mapping[str, Any] | None) -> bool:
        if self.attribute.startswith(RESOURCE_LABEL_PREFIX):
            if labels is None:
                return False
            source: Mapping[str, Any] = labels
            key = self.attribute.removeprefix(RESOURCE_LABEL_PREFIX)
        else:
            source, key = caller, self.attribute
        present = key in source
        actual = source.get(key)
        match self.operator:
            case "exists":
                return present
            case "equals":
                return present and actual == self.value
            case "not_equals":
                return present and actual != self.value
            case "in":
                return present and isinstance(self.value, list) and actual in self.value
            case _:  # "not_in"
                return present and isinstance(self.value, list) and actual not in self.value


class PermissionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resource: Literal[RESOURCES]  # type: ignore[valid-type]
    actions: list[Literal["read", "create", "update", "delete"]] = Field(min_length=1)
    conditions: list[ConditionSpec] = Field(default_factory=list)

    def permits(
        self, resource: str, action: str, caller: Mapping[str, Any], labels: Mapping[str, Any] | None
    ) -> bool:
        return (
            self.resource == resource
            and action in self.actions
            and all(condition.holds(caller, labels) for condition in self.conditions)
        )


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: Literal["operator", "device"]
    subject: str
    token_id: str
    role: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    permissions: Sequence[PermissionSpec] = ()

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind}:{self.subject}"

    def allows(self, resource: str, action: str, labels: Mapping[str, Any] | None = None) -> bool:
        if self.kind != "operator":
            return False
        if (resource, action) in ROLE_GRANTS.get(self.role or "", frozenset()):
            return True
        return any(p.permits(resource, action, self.attributes, labels) for p in self.permissions)

    def may_allow_item(self, resource: str, action: str) -> bool:
        """Whether some labelled resource could be allowed: the role grants it, or a permission
        does once its resource-label conditions are checked against the item."""
        if self.kind != "operator":
            return False
        if self.allows(resource, action):
            return True
        return any(
            p.resource == resource
            and action in p.actions
            and all(
                c.attribute.startswith(RESOURCE_LABEL_PREFIX) or c.holds(self.attributes, None)
                for c in p.conditions
            )
            for p in self.permissions
        )

"""``condition``: route the run to one successor by the first rule that matches.

The design brief's rule list, unchanged::

    conditions:
      - when: "$.order.amount > 1000"
        then: "apply_premium_service"
      - when: "$.customer.type == 'VIP'"
        then: "skip_payment_validation"
      - else: "standard_processing"

Rules are tried in order; the first true ``when`` wins; ``else`` (last, optional) catches the
rest; with no match and no ``else`` every successor is skipped. The output is
``{"branch": <id or null>, "rule": <index or null>}``.

``missing`` decides what a path that matches nothing means: ``error`` (default) fails the node
and names the path, so a misspelt field never silently routes to ``else``; ``null`` reads it
as ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.workflow.config_types import Condition
from agent.workflow.context import RunContext
from agent.workflow.errors import ExpressionError, PathNotFound
from agent.workflow.node import Node, NodeSetup, Route
from agent.workflow.spec import NODE_ID_PATTERN


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    when: Condition | None = None
    then: str | None = Field(None, pattern=NODE_ID_PATTERN)
    else_: str | None = Field(None, alias="else", pattern=NODE_ID_PATTERN)

    @model_validator(mode="after")
    def _one_form(self) -> Rule:
        if self.else_ is not None:
            if self.when is not None or self.then is not None:
                raise ValueError("an 'else' rule has no 'when' or 'then'")
        elif self.when is None or self.then is None:
            raise ValueError("a rule needs both 'when' and 'then' (or is a lone 'else')")
        return self

    @property
    def target(self) -> str:
        target = self.else_ if self.else_ is not None else self.then
        assert target is not None
        return target


class ConditionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conditions: list[Rule] = Field(
        min_length=1,
        description="Rules in order: {when: <expression>, then: <successor id>}, "
        "optionally a last {else: <id>}.",
    )
    missing: Literal["error", "null"] = Field(
        "error", description="A path that matches nothing: fail the node naming it, or read it as null."
    )

    @field_validator("conditions")
    @classmethod
    def _else_last(cls, rules: list[Rule]) -> list[Rule]:
        for index, rule in enumerate(rules[:-1]):
            if rule.else_ is not None:
                raise ValueError(f"'else' must be the last rule (found at conditions[{index}])")
        return rules


class ConditionNode(Node[ConditionConfig]):
    type_name = "condition"
    config_model = ConditionConfig
    summary = "Routes to the successor named by the first matching rule (else last)."

    def __init__(self, config: ConditionConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        lenient = config.missing == "null"
        self._rules = [
            (
                index,
                rule.target,
                None
                if rule.when is None
                else (rule.when.evaluate_lenient if lenient else rule.when.evaluate),
                rule.when.source if rule.when is not None else "",
            )
            for index, rule in enumerate(config.conditions)
        ]

    def run(self, ctx: RunContext) -> Route:
        for index, target, test, source in self._rules:
            if test is None:
                return Route(target, {"branch": target, "rule": index})
            try:
                matched = test(ctx)
            except (ExpressionError, PathNotFound) as exc:
                raise ExpressionError(f"conditions[{index}].when {source!r}: {exc}") from exc
            if matched:
                return Route(target, {"branch": target, "rule": index})
        return Route(None, {"branch": None, "rule": None})

    def branch_targets(self) -> Sequence[tuple[str, str]]:
        return [
            (rule.target, f"conditions[{index}].{'else' if rule.else_ is not None else 'then'}")
            for index, rule in enumerate(self.config.conditions)
        ]

"""A third-party node plugin, as a vendor would ship it: installed as its own distribution and
found through the ``edgefleet.nodes`` entry-point group."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from agent.workflow import JsonPath, Node, RunContext


class ReverseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: JsonPath


class Reverse(Node[ReverseConfig]):
    type_name = "acme_reverse"
    config_model = ReverseConfig
    summary = "Reverses a string (ACME Corp)."

    def run(self, ctx: RunContext) -> str:
        return str(self.config.value.resolve(ctx))[::-1]


class Transform(Reverse):
    """Claims a built-in's name; edgefleet must refuse it."""

    type_name = "transform"


class NotANode:
    type_name = "acme_bogus"

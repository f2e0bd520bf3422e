"""``cache``: memoise a nested node's output by key, with size and age bounds.

The design brief's FAQ cache (``lru_cache(maxsize=1000)``) as a node::

    {"id": "faq", "type": "cache",
     "config": {"key": ["$.question"], "maxsize": 1000, "ttl_s": 600,
                "node": {"type": "transform", "config": {"output": {...}}}}}

The key is the JSON encoding of the values at ``key``'s paths, so ``1``, ``1.0`` and ``true``
are different keys. Failures are not cached. Two runs that miss on the same key at once may
both compute it; the later result wins. The cache lives as long as the compiled plan.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from threading import Lock
from typing import Any

from cachetools import Cache, LRUCache, TTLCache
from pydantic import BaseModel, ConfigDict, Field

from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.node import ConfigError, Node, NodeSetup
from agent.workflow.paths import CompiledPath


class NestedNode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    config: dict[str, Any] = Field(default_factory=dict)


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: list[JsonPath] = Field(min_length=1, description="Paths whose values form the key.")
    node: NestedNode = Field(description="The node whose output is cached.")
    maxsize: int = Field(
        1000, ge=1, le=10_000_000, description="Entries kept (least recently used go first)."
    )
    ttl_s: float | None = Field(None, gt=0, description="Seconds an entry stays valid; forever when unset.")


class CacheNode(Node[CacheConfig]):
    type_name = "cache"
    config_model = CacheConfig
    summary = "Memoises a nested node's output keyed by JSONPath values (LRU, optional TTL)."

    def __init__(self, config: CacheConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        if setup.build is None:
            raise ConfigError("node", "nested nodes cannot be built here")
        self.inner = setup.build(config.node.model_dump(), "node")
        if self.inner.branch_targets():
            raise ConfigError("node.type", f"a routing node ('{config.node.type}') cannot be cached")
        self._cache: Cache[str, Any] = (
            TTLCache(config.maxsize, config.ttl_s) if config.ttl_s else LRUCache(config.maxsize)
        )
        self._lock = Lock()
        self.hits = 0
        self.misses = 0

    def run(self, ctx: RunContext) -> Any:
        key = json.dumps([path.resolve(ctx) for path in self.config.key], sort_keys=True, default=repr)
        with self._lock:
            try:
                value = self._cache[key]
            except KeyError:
                self.misses += 1
            else:
                self.hits += 1
                return value
        value = self.inner.run(ctx)
        with self._lock:
            self._cache[key] = value
        return value

    def references(self) -> Iterable[tuple[CompiledPath, str]]:
        yield from ((path, f"key[{index}]") for index, path in enumerate(self.config.key))
        for path, field in self.inner.references():
            yield path, f"node.config.{field}"

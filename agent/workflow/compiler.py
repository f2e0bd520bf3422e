"""Compile a workflow graph into an execution ``Plan``, reporting every problem at once.

Checks, each reported as an ``Issue`` naming the node and the field:

- ``schema``: the document's shape (unknown fields, wrong types, bad node ids);
- ``duplicate_id``: a node id used twice;
- ``unknown_type``: a node type no plugin provides;
- ``dangling_edge``, ``duplicate_edge``: an edge end that is not a node; a repeated edge;
- ``cycle``: a cycle, naming the nodes on it;
- ``config``: node config against the type's schema, including JSONPaths and expressions that
  do not parse or reference nothing;
- ``reference``: a path that reads a node that does not exist or is not upstream;
- ``branch_target``: a branch or error-route target that is not a successor;
- ``unreachable``: a node no run can reach.

A ``Plan`` is immutable and safe to run many times, from many threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.workflow.errors import CompileError, Issue
from agent.workflow.node import ConfigError, Node, NodeSetup
from agent.workflow.registry import NodeRegistry, default_registry
from agent.workflow.spec import (
    EdgeSpec,
    ErrorPolicySpec,
    NodeSpec,
    RetrySpec,
    WorkflowSpec,
)


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node of a plan. Indices refer to ``Plan.nodes``, which is in topological order."""

    index: int
    id: str
    type: str
    impl: Node[Any]
    preds: tuple[int, ...]
    succs: tuple[int, ...]
    timeout_s: float | None
    retry: RetrySpec | None
    on_error: str
    default: Any
    error_target: int | None
    routes: Mapping[str, int]
    """For a routing node, successor id → index."""
    success_succs: tuple[int, ...]
    """Successors that run when the node succeeds (all but the error-route target)."""
    concurrent: bool
    """Overlap with other ready nodes on the worker pool (``Node.concurrent``)."""


@dataclass(frozen=True)
class Plan:
    workflow_id: str
    version: int
    nodes: tuple[PlannedNode, ...]
    entries: tuple[int, ...]

    def node(self, node_id: str) -> PlannedNode:
        for planned in self.nodes:
            if planned.id == node_id:
                return planned
        raise KeyError(node_id)


@dataclass
class CompileOptions:
    """Where compile-time resources come from (schema directories, later the model store)."""

    registry: NodeRegistry | None = None
    schema_dirs: tuple[Path, ...] = ()
    resources: Mapping[str, Any] | None = None


def compile_workflow(document: Any, options: CompileOptions | None = None) -> Plan:
    """Check ``document`` (a parsed graph or a ``WorkflowSpec``) and build its plan.

    Raises ``CompileError`` carrying every issue found.
    """
    return _Compiler(options or CompileOptions()).compile(document)


def _field(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _validation_issues(
    exc: ValidationError, *, node: str | None, prefix: str = "", code: str = "schema"
) -> list[Issue]:
    issues = []
    for error in exc.errors():
        loc = _field(tuple(error["loc"]))
        field = prefix + loc if loc.startswith("[") or not prefix or not loc else f"{prefix}.{loc}"
        message = error["msg"].removeprefix("Value error, ")
        issues.append(Issue(code, message, node=node, field=field or None))
    return issues


class _Compiler:
    def __init__(self, options: CompileOptions) -> None:
        self.registry = options.registry or default_registry()
        self.schema_dirs = tuple(options.schema_dirs)
        self.resources = dict(options.resources or {})
        self.issues: list[Issue] = []

    def report(self, code: str, message: str, node: str | None = None, field: str | None = None) -> None:
        self.issues.append(Issue(code, message, node=node, field=field))

    # -- shape -----------------------------------------------------------------------------

    def _parse(
        self, document: Any
    ) -> tuple[str | None, int, Any, list[NodeSpec], list[tuple[int, EdgeSpec]], set[str]]:
        """Validate the document piece by piece so one bad node hides no other problem."""
        if isinstance(document, WorkflowSpec):
            document = document.model_dump()
        if not isinstance(document, dict):
            raise CompileError(
                None, [Issue("schema", f"a workflow must be an object, got {type(document).__name__}")]
            )
        raw_nodes = document.get("nodes")
        raw_edges = document.get("edges", [])
        header = dict(document.items())
        header["nodes"] = [{"id": "_", "type": "_"}]
        header["edges"] = []
        workflow_id = document.get("id") if isinstance(document.get("id"), str) else None
        version = 1
        defaults: Any = None
        try:
            parsed = WorkflowSpec.model_validate(header)
            version = parsed.version
            defaults = parsed.defaults
        except ValidationError as exc:
            self.issues.extend(_validation_issues(exc, node=None))
        nodes: list[NodeSpec] = []
        known_ids: set[str] = set()
        if not isinstance(raw_nodes, list) or not raw_nodes:
            self.report("schema", "a workflow needs a non-empty list of nodes", field="nodes")
            raw_nodes = []
        for index, raw in enumerate(raw_nodes):
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(raw_id, str):
                known_ids.add(raw_id)
            try:
                nodes.append(NodeSpec.model_validate(raw))
            except ValidationError as exc:
                node = raw_id if isinstance(raw_id, str) else None
                prefix = "" if node else f"nodes[{index}]"
                self.issues.extend(_validation_issues(exc, node=node, prefix=prefix))
                salvaged = _salvage(raw)
                if salvaged is not None:  # keep checking its type, config and edges
                    nodes.append(salvaged)
        edges: list[tuple[int, EdgeSpec]] = []
        if not isinstance(raw_edges, list):
            self.report("schema", "edges must be a list", field="edges")
            raw_edges = []
        for index, raw in enumerate(raw_edges):
            try:
                edges.append((index, EdgeSpec.model_validate(raw)))
            except ValidationError as exc:
                self.issues.extend(_validation_issues(exc, node=None, prefix=f"edges[{index}]"))
        return workflow_id, version, defaults, nodes, edges, known_ids

    # -- graph -----------------------------------------------------------------------------

    def compile(self, document: Any) -> Plan:
        workflow_id, version, defaults, node_specs, edge_specs, known_ids = self._parse(document)
        specs: dict[str, NodeSpec] = {}
        for spec in node_specs:
            if spec.id in specs:
                self.report("duplicate_id", f"node id '{spec.id}' is used more than once", spec.id, "id")
            else:
                specs[spec.id] = spec
        order = list(specs)
        succs: dict[str, list[str]] = {node_id: [] for node_id in order}
        preds: dict[str, list[str]] = {node_id: [] for node_id in order}
        seen_edges: set[tuple[str, str]] = set()
        for index, edge in edge_specs:
            ok = True
            for end in ("source", "target"):
                name = getattr(edge, end)
                if name not in specs:
                    if name not in known_ids:
                        self.report(
                            "dangling_edge",
                            f"edge {end} '{name}' is not a node",
                            None,
                            f"edges[{index}].{end}",
                        )
                    ok = False
            if not ok:
                continue
            key = (edge.source, edge.target)
            if key in seen_edges:
                self.report(
                    "duplicate_edge",
                    f"edge {edge.source} → {edge.target} is repeated",
                    edge.source,
                    f"edges[{index}]",
                )
                continue
            seen_edges.add(key)
            succs[edge.source].append(edge.target)
            preds[edge.target].append(edge.source)

        has_cycle = self._check_cycles(order, succs)
        impls: dict[str, Node[Any]] = {}
        for node_id in order:
            impl = self._build(specs[node_id])
            if impl is not None:
                impls[node_id] = impl

        ancestors = None if has_cycle else _ancestors(order, preds)
        policies: dict[str, tuple[float | None, RetrySpec | None, ErrorPolicySpec]] = {}
        for node_id in order:
            spec = specs[node_id]
            timeout = (
                spec.timeout_s if spec.timeout_s is not None else (defaults.timeout_s if defaults else None)
            )
            retry = spec.retry if spec.retry is not None else (defaults.retry if defaults else None)
            on_error = spec.on_error or (defaults.on_error if defaults else None) or ErrorPolicySpec()
            if on_error.policy == "route" and on_error.target not in succs[node_id]:
                self.report(
                    "branch_target",
                    f"error route target '{on_error.target}' is not a successor of '{node_id}'",
                    node_id,
                    "on_error.target",
                )
            policies[node_id] = (timeout, retry, on_error)
            impl = impls.get(node_id)
            if impl is None:
                continue
            for target, field in impl.branch_targets():
                if target not in succs[node_id]:
                    self.report(
                        "branch_target",
                        f"branch target '{target}' is not a successor of '{node_id}' "
                        f"(add an edge {node_id} → {target})",
                        node_id,
                        f"config.{field}",
                    )
            if ancestors is not None:
                self._check_references(node_id, impl, specs, ancestors[node_id])

        if not has_cycle:
            self._check_reachable(order, succs, preds, impls, policies)
        if self.issues:
            raise CompileError(workflow_id, self.issues)
        assert workflow_id is not None
        return _plan(workflow_id, version, order, succs, preds, impls, specs, policies)

    def _check_cycles(self, order: list[str], succs: dict[str, list[str]]) -> bool:
        found = False
        for component in _strongly_connected(order, succs):
            if len(component) == 1 and component[0] not in succs[component[0]]:
                continue
            found = True
            cycle = _cycle_in(component, succs)
            path = " → ".join([*cycle, cycle[0]])
            self.report("cycle", f"cycle through {', '.join(sorted(set(cycle)))}: {path}", cycle[0], "edges")
        return found

    def _check_references(
        self, node_id: str, impl: Node[Any], specs: dict[str, NodeSpec], upstream: set[str]
    ) -> None:
        for path, field in impl.references():
            ref = path.node_ref
            if ref is None:  # reads the input, or all node outputs at once: nothing to check
                continue
            if ref not in specs:
                self.report(
                    "reference",
                    f"path {path.text} reads node '{ref}', which does not exist",
                    node_id,
                    f"config.{field}",
                )
            elif ref == node_id:
                self.report(
                    "reference", f"path {path.text} reads the node's own output", node_id, f"config.{field}"
                )
            elif ref not in upstream:
                self.report(
                    "reference",
                    f"path {path.text} reads node '{ref}', which is not upstream of '{node_id}' "
                    "(its output is not ready yet)",
                    node_id,
                    f"config.{field}",
                )

    def _check_reachable(
        self,
        order: list[str],
        succs: dict[str, list[str]],
        preds: dict[str, list[str]],
        impls: dict[str, Node[Any]],
        policies: dict[str, tuple[float | None, RetrySpec | None, ErrorPolicySpec]],
    ) -> None:
        reached = {node_id for node_id in order if not preds[node_id]}
        stack = list(reached)
        while stack:
            node_id = stack.pop()
            impl = impls.get(node_id)
            targets = impl.branch_targets() if impl is not None else ()
            routed = {target for target, _ in targets}
            for nxt in succs[node_id]:
                if routed and nxt not in routed and nxt != policies[node_id][2].target:
                    continue
                if nxt not in reached:
                    reached.add(nxt)
                    stack.append(nxt)
        for node_id in order:
            if node_id not in reached:
                self.report(
                    "unreachable",
                    "no run can reach this node: every edge into it comes from a routing node that "
                    "never chooses it, or from nodes that are themselves unreachable",
                    node_id,
                )

    # -- nodes -----------------------------------------------------------------------------

    def _build(self, spec: NodeSpec, field_prefix: str = "") -> Node[Any] | None:
        cls = self.registry.get(spec.type)
        type_field = f"{field_prefix}type" if field_prefix else "type"
        if cls is None:
            known = ", ".join(self.registry)
            hint = ""
            failed = [
                line
                for line in self.registry.load_errors
                if f"'{spec.type} " in line or f"'{spec.type}'" in line
            ]
            if failed:
                hint = f"; its plugin was refused: {failed[0]}"
            self.report(
                "unknown_type", f"unknown node type '{spec.type}' (known: {known}){hint}", spec.id, type_field
            )
            return None
        config_field = f"{field_prefix}config"
        try:
            config = cls.config_model.model_validate(spec.config)
        except ValidationError as exc:
            self.issues.extend(_validation_issues(exc, node=spec.id, prefix=config_field, code="config"))
            return None
        setup = NodeSetup(
            node_id=spec.id,
            schema_dirs=self.schema_dirs,
            build=lambda raw, field: self._build_nested(spec.id, raw, f"{config_field}.{field}."),
            resources=self.resources,
        )
        try:
            return cls(config, setup)
        except ConfigError as exc:
            if exc.field != "<nested>":
                self.report(
                    "config",
                    exc.message,
                    spec.id,
                    f"{config_field}.{exc.field}" if exc.field else config_field,
                )
            return None

    def _build_nested(self, node_id: str, raw: Any, prefix: str) -> Node[Any]:
        if isinstance(raw, BaseModel):
            raw = raw.model_dump()
        try:
            inner = NodeSpec.model_validate({"id": node_id, **raw})
        except (ValidationError, TypeError) as exc:
            if isinstance(exc, ValidationError):
                self.issues.extend(_validation_issues(exc, node=node_id, prefix=prefix.rstrip(".")))
            raise ConfigError("<nested>", "invalid nested node") from exc
        impl = self._build(inner, field_prefix=prefix)
        if impl is None:
            raise ConfigError("<nested>", "invalid nested node")
        return impl


def _salvage(raw: Any) -> NodeSpec | None:
    """The id, type and config of a node whose other fields are wrong, so that the rest of it
    is still checked (the compile fails either way)."""
    if not isinstance(raw, dict):
        return None
    node_id, node_type, config = raw.get("id"), raw.get("type"), raw.get("config", {})
    if not (isinstance(node_id, str) and isinstance(node_type, str) and isinstance(config, dict)):
        return None
    return NodeSpec.model_construct(
        id=node_id, type=node_type, config=config, description=None, timeout_s=None, retry=None, on_error=None
    )


def _strongly_connected(order: list[str], succs: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in order:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            children = succs[node]
            while child < len(children):
                nxt = children[child]
                child += 1
                if nxt not in index:
                    work.append((node, child))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_in(component: list[str], succs: dict[str, list[str]]) -> list[str]:
    """One concrete cycle inside a strongly connected component."""
    members = set(component)
    start = min(component)
    path = [start]
    positions = {start: 0}
    node = start
    while True:
        nxt = min(n for n in succs[node] if n in members)
        if nxt in positions:
            return path[positions[nxt] :]
        positions[nxt] = len(path)
        path.append(nxt)
        node = nxt


def _ancestors(order: list[str], preds: dict[str, list[str]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for node_id in _topological(order, preds):
        upstream: set[str] = set()
        for parent in preds[node_id]:
            upstream.add(parent)
            upstream |= result[parent]
        result[node_id] = upstream
    return result


def _topological(order: list[str], preds: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, stable: among ready nodes, declaration order wins."""
    import heapq

    position = {node_id: i for i, node_id in enumerate(order)}
    remaining = {node_id: len(preds[node_id]) for node_id in order}
    succs: dict[str, list[str]] = {node_id: [] for node_id in order}
    for node_id in order:
        for parent in preds[node_id]:
            succs[parent].append(node_id)
    ready = [position[n] for n in order if remaining[n] == 0]
    heapq.heapify(ready)
    result = []
    while ready:
        node_id = order[heapq.heappop(ready)]
        result.append(node_id)
        for child in succs[node_id]:
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(ready, position[child])
    return result


def _plan(
    workflow_id: str,
    version: int,
    order: list[str],
    succs: dict[str, list[str]],
    preds: dict[str, list[str]],
    impls: dict[str, Node[Any]],
    specs: dict[str, NodeSpec],
    policies: dict[str, tuple[float | None, RetrySpec | None, ErrorPolicySpec]],
) -> Plan:
    topo = _topological(order, preds)
    index = {node_id: i for i, node_id in enumerate(topo)}
    planned = []
    for node_id in topo:
        timeout, retry, on_error = policies[node_id]
        impl = impls[node_id]
        node_succs = tuple(index[s] for s in succs[node_id])
        error_target = index[on_error.target] if on_error.target is not None else None
        routes = {target: index[target] for target, _ in impl.branch_targets()}
        planned.append(
            PlannedNode(
                index=index[node_id],
                id=node_id,
                type=specs[node_id].type,
                impl=impl,
                preds=tuple(index[p] for p in preds[node_id]),
                succs=node_succs,
                timeout_s=timeout,
                retry=retry,
                on_error=on_error.policy,
                default=on_error.default,
                error_target=error_target,
                routes=routes,
                success_succs=tuple(s for s in node_succs if s != error_target),
                concurrent=type(impl).concurrent,
            )
        )
    entries = tuple(p.index for p in planned if not p.preds)
    return Plan(workflow_id=workflow_id, version=version, nodes=tuple(planned), entries=entries)

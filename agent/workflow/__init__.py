"""The workflow engine: graph spec → compiler → plan → executor, with node plugins.

Typical use::

    from agent.workflow import CompileOptions, Executor, compile_workflow, read_document

    plan = compile_workflow(read_document("inspect.yaml"), CompileOptions(schema_dirs=(...,)))
    with Executor() as executor:
        result = executor.run(plan, {"frame": ...})
"""

from agent.workflow.compiler import CompileOptions, Plan, PlannedNode, compile_workflow
from agent.workflow.config_types import Condition, Expr, JsonPath, Template, TemplateValue
from agent.workflow.context import Event, EventSink, RunContext
from agent.workflow.errors import (
    CompileError,
    DuplicateNodeType,
    ExpressionError,
    ExpressionSyntaxError,
    InvalidInput,
    Issue,
    NodeError,
    NodeTimeout,
    PathNotFound,
    RegistryError,
    SpecError,
    WorkflowError,
)
from agent.workflow.executor import Executor
from agent.workflow.expressions import Expression
from agent.workflow.node import ConfigError, Node, NodeSetup, Route
from agent.workflow.paths import CompiledPath
from agent.workflow.registry import ENTRY_POINT_GROUP, NodeRegistry, builtin_registry, default_registry
from agent.workflow.result import ErrorInfo, NodeRun, RunResult
from agent.workflow.spec import WorkflowSpec, parse_document, read_document

__all__ = [
    "ENTRY_POINT_GROUP",
    "CompileError",
    "CompileOptions",
    "CompiledPath",
    "Condition",
    "ConfigError",
    "DuplicateNodeType",
    "ErrorInfo",
    "Event",
    "EventSink",
    "Executor",
    "Expr",
    "Expression",
    "ExpressionError",
    "ExpressionSyntaxError",
    "InvalidInput",
    "Issue",
    "JsonPath",
    "Node",
    "NodeError",
    "NodeRegistry",
    "NodeRun",
    "NodeSetup",
    "NodeTimeout",
    "PathNotFound",
    "Plan",
    "PlannedNode",
    "RegistryError",
    "Route",
    "RunContext",
    "RunResult",
    "SpecError",
    "Template",
    "TemplateValue",
    "WorkflowError",
    "WorkflowSpec",
    "builtin_registry",
    "compile_workflow",
    "default_registry",
    "parse_document",
    "read_document",
]

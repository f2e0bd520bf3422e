"""``model_inference``: run a model from the device's model store on values from the run.

The design brief's node, unchanged::

    {"id": "price_calculator", "type": "model_inference",
     "config": {"model_id": "pricing_model_v3",
                "input_mapping": {"product_id": "$.product.id", "quantity": "$.quantity"}}}

``input_mapping`` maps each model input name to a JSONPath; every input must be mapped. Arrays
(from image nodes) must have the input's dtype; JSON values (numbers, strings, lists) are
converted to it. The output is ``{output name: array}`` for one sample (the batch axis
removed). Without ``version`` the node runs the version the compile pins for ``model_id`` (the
``model_versions`` resource: a workflow delivered by the control plane runs exactly the model
versions its assignment names), else the newest installed (a workflow from a config file).
Concurrent runs are coalesced into batches by the model's dynamic batcher
(``max_batch`` / ``max_wait_ms`` come from the device profile). The model is loaded when the
workflow is compiled, so the first frame does not pay for it. Outputs holding NaN or Inf fail
the node, naming the model and output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from agent.workflow.config_types import JsonPath
from agent.workflow.context import RunContext
from agent.workflow.errors import NodeError
from agent.workflow.node import ConfigError, Node, NodeSetup

if TYPE_CHECKING:
    from agent.inference.runtime import ModelRuntime, ServedModel

MODELS_RESOURCE = "models"
MODEL_VERSIONS_RESOURCE = "model_versions"
"""Compile resource: ``{model_id: version}`` pinned for nodes that name no ``version``."""


class ModelInferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_id: str = Field(description="Model name in the device's model store.")
    version: str | None = Field(
        None,
        description="Model version; when unset, the version the assignment pins, else the newest installed.",
    )
    input_mapping: dict[str, JsonPath] = Field(description="Model input name → JSONPath of its value.")
    outputs: list[str] | None = Field(None, description="Outputs to keep; all when unset.")
    timeout_s: float = Field(30.0, gt=0, description="Longest wait for a batch slot and the model call.")


class ModelInference(Node[ModelInferenceConfig]):
    type_name = "model_inference"
    config_model = ModelInferenceConfig
    summary = "Runs a model from the model store (ONNX Runtime / TensorRT) with dynamic batching."
    concurrent = True

    def __init__(self, config: ModelInferenceConfig, setup: NodeSetup) -> None:
        super().__init__(config, setup)
        from agent.inference.batcher import numpy_dtype
        from agent.inference.errors import InferenceError, ModelNotFound

        runtime: ModelRuntime | None = setup.resources.get(MODELS_RESOURCE)
        if runtime is None:
            raise ConfigError("model_id", "no model store is configured on this host")
        pinned = setup.resources.get(MODEL_VERSIONS_RESOURCE) or {}
        version = config.version if config.version is not None else pinned.get(config.model_id)
        try:
            self.served: ServedModel = runtime.get(config.model_id, version)
        except ModelNotFound as exc:
            raise ConfigError("model_id", str(exc)) from exc
        except InferenceError as exc:
            raise ConfigError("model_id", f"model '{config.model_id}' cannot be served: {exc}") from exc
        record = self.served.record
        wanted = {spec.name for spec in record.inputs}
        missing = sorted(wanted - set(config.input_mapping))
        unknown = sorted(set(config.input_mapping) - wanted)
        if missing or unknown:
            raise ConfigError(
                "input_mapping",
                f"model '{record.model_id}' v{record.version} has inputs {sorted(wanted)}: "
                f"unmapped {missing or 'none'}, not inputs of the model {unknown or 'none'}",
            )
        names = [spec.name for spec in record.outputs]
        if config.outputs is not None:
            bad = sorted(set(config.outputs) - set(names))
            if bad:
                raise ConfigError("outputs", f"model '{record.model_id}' has outputs {names}, not {bad}")
        self._keep = config.outputs
        self._dtypes = {spec.name: numpy_dtype(spec) for spec in record.inputs}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        import numpy as np

        from agent.inference.errors import InferenceError

        record = self.served.record
        sample = {}
        for name, path in self.config.input_mapping.items():
            value = path.resolve(ctx)
            if not isinstance(value, np.ndarray):
                try:
                    value = np.asarray(value, dtype=self._dtypes[name])
                except (TypeError, ValueError) as exc:
                    raise NodeError(
                        f"model '{record.model_id}' input '{name}' ({self._dtypes[name]}) cannot take "
                        f"{path.text} = {value!r:.80}"
                    ) from exc
            sample[name] = value
        try:
            outputs = self.served.infer(sample, timeout=self.config.timeout_s)
        except InferenceError as exc:
            raise NodeError(
                f"model '{record.model_id}' v{record.version}: {exc}", retryable=exc.retryable
            ) from exc
        except TimeoutError as exc:
            raise NodeError(
                f"model '{record.model_id}' v{record.version}: no result within {self.config.timeout_s:g} s",
                retryable=True,
            ) from exc
        if self._keep is not None:
            outputs = {name: outputs[name] for name in self._keep}
        for name, value in outputs.items():
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise NodeError(
                    f"model '{record.model_id}' v{record.version} output '{name}' holds NaN or Inf"
                )
        return outputs

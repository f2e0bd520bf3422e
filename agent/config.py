"""The agent's settings: one typed object per process, built once in ``main``.

Sources, highest first: arguments, environment (``EDGEFLEET_…``, nested with ``__``, e.g.
``EDGEFLEET_DEVICE_ID=line3-cam1``), then the YAML config file
(``/etc/edgefleet/agent.yaml`` by default). Relative paths in the file are relative to the
file. Nothing reads the environment at import time.

Example::

    device_id: line3-station2
    data_dir: /var/lib/edgefleet
    profile: null                 # detect; or a profile name from device_profiles/
    models:
      - {id: surface_inspection, version: "1", file: /opt/edgefleet/models/surface_inspection_v1.onnx}
    thresholds:
      surface: {default: 0.5}
    workflows:
      - file: /opt/edgefleet/workflows/surface_inspection.json
        workers: 2
        queue: {size: 8, policy: drop_oldest}
        sources:
          - {type: capture, uri: "rtsp://10.0.0.7/stream1"}
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.sources.readers import CaptureSourceSpec, FolderSourceSpec, SyntheticSourceSpec
from agent.workflow.spec import read_document

DEFAULT_CONFIG = Path("/etc/edgefleet/agent.yaml")
_config_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "edgefleet_config_file", default=None
)


class ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    version: str
    file: Path


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(8, ge=1)
    policy: Literal["drop_oldest", "block"] = "drop_oldest"


class WorkflowBinding(BaseModel):
    """A workflow and the frame sources that feed it."""

    model_config = ConfigDict(extra="forbid")
    file: Path
    workers: int = Field(2, ge=1, le=64, description="Runs in flight at once (frames in parallel).")
    queue: QueueSettings = Field(default_factory=QueueSettings)
    input_key: str = Field("image", description="Key of the frame in the run's input document.")
    sources: list[SyntheticSourceSpec | FolderSourceSpec | CaptureSourceSpec] = Field(default_factory=list)


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", env_nested_delimiter="__", extra="forbid")

    device_id: str = Field("edge-device", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    data_dir: Path = Path("/var/lib/edgefleet")
    profile: str | None = Field(None, description="Device profile name; detected when unset.")
    profiles_dir: Path | None = None
    schema_dirs: list[Path] = Field(default_factory=list)
    models: list[ModelFile] = Field(default_factory=list)
    thresholds: dict[str, dict[str, float]] = Field(default_factory=dict)
    workflows: list[WorkflowBinding] = Field(default_factory=list)
    results_jsonl: Path | None = Field(
        None, description="Append one line per run here (for audits and demos)."
    )
    config_dir: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _relative_to_config(self) -> AgentSettings:
        base = self.config_dir
        if base is None:
            return self

        def fix(path: Path) -> Path:
            return path if path.is_absolute() else base / path

        self.data_dir = fix(self.data_dir)
        self.profiles_dir = fix(self.profiles_dir) if self.profiles_dir else None
        self.schema_dirs = [fix(p) for p in self.schema_dirs]
        self.results_jsonl = fix(self.results_jsonl) if self.results_jsonl else None
        for model in self.models:
            model.file = fix(model.file)
        for binding in self.workflows:
            binding.file = fix(binding.file)
            for source in binding.sources:
                if isinstance(source, FolderSourceSpec):
                    source.path = fix(source.path)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFile(settings_cls))


class _YamlFile(PydanticBaseSettingsSource):
    """The config file named by ``load_settings``; malformed files raise ``SpecError`` with
    line and column."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None:
            return {}
        data = read_document(path)
        if data is None:
            return {"config_dir": path.resolve().parent}
        if not isinstance(data, dict):
            from agent.workflow.errors import SpecError

            raise SpecError("the agent config must be a mapping", source=str(path))
        return {**data, "config_dir": path.resolve().parent}


def load_settings(config: Path | None = None, **overrides: Any) -> AgentSettings:
    """Settings from ``config`` (YAML), the environment and ``overrides``."""
    token = _config_file.set(config)
    try:
        return AgentSettings(**overrides)
    finally:
        _config_file.reset(token)

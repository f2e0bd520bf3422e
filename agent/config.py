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
    sync:                         # optional: managed by a control plane (docs/sync.md)
      control_plane_url: https://fleet.example.com
      mqtt_host: mqtt.example.com
      mqtt_tls: true
      mqtt_ca_file: /etc/edgefleet/ca.pem
    device_api: {socket_path: null}   # the local gRPC API (docs/device-api.md); default on
    metrics: {host: 127.0.0.1, port: 9464}   # Prometheus /metrics (docs/metrics.md); default on
    watchdog: {max_run_s: 60}     # systemd's watchdog (docs/service.md)

A workflow binding may name a workflow by id instead of by file (``workflow: surface_inspection``):
its sources start when the control plane delivers that workflow.
"""

from __future__ import annotations

import contextvars
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from agent.device_api.settings import DeviceApiSettings
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
    """A workflow and the frame sources that feed it.

    ``file`` is a workflow graph compiled at start. ``workflow`` names a workflow by id instead:
    the control plane delivers it (docs/sync.md) and the sources start once it is running. With
    both, the file is what runs until the control plane delivers a version of that workflow.
    """

    model_config = ConfigDict(extra="forbid")
    file: Path | None = Field(None, description="Workflow graph (JSON or YAML) compiled at start.")
    workflow: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Workflow id delivered by the control plane; these sources feed it.",
    )
    workers: int = Field(2, ge=1, le=64, description="Runs in flight at once (frames in parallel).")
    queue: QueueSettings = Field(default_factory=QueueSettings)
    input_key: str = Field("image", description="Key of the frame in the run's input document.")
    sources: list[SyntheticSourceSpec | FolderSourceSpec | CaptureSourceSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _file_or_workflow(self) -> WorkflowBinding:
        if self.file is None and self.workflow is None:
            raise ValueError(
                "give 'file' (a workflow graph) or 'workflow' (a workflow id from the control plane)"
            )
        return self


class SyncSettings(BaseModel):
    """Being managed by a control plane: the MQTT link and where artifacts come from.

    Unset values come from the credentials file written by ``edgefleet-agent enroll``
    (``api_url``, and its ``mqtt`` object when the control plane sent one).
    """

    model_config = ConfigDict(extra="forbid")
    control_plane_url: str | None = Field(
        None, description="Base URL of the control plane's API; the enrolled api_url when unset."
    )
    credentials_file: Path | None = Field(None, description="Default: <data_dir>/credentials.json.")
    mqtt_host: str | None = Field(None, description="The MQTT broker; the enrolled mqtt.host when unset.")
    mqtt_port: int | None = Field(None, ge=1, le=65535, description="Default: 8883 with TLS, 1883 without.")
    mqtt_username: str | None = Field(None, description="Default: the device id.")
    mqtt_password: str | None = Field(None, description="Default: the enrolled mqtt.password, if any.")
    mqtt_tls: bool | None = Field(None, description="Default: the enrolled mqtt.tls, else false.")
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for the broker; the system's when unset.")
    mqtt_cert_file: Path | None = Field(None, description="Client certificate (mutual TLS).")
    mqtt_key_file: Path | None = Field(None, description="Client private key (mutual TLS).")
    keepalive_s: int = Field(30, ge=5, le=3600)
    telemetry_interval_s: float = Field(10.0, gt=0)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, le=2**32 - 1)
    reconnect_min_s: float = Field(1.0, gt=0, description="First reconnect delay (before jitter).")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest reconnect delay.")

    @model_validator(mode="after")
    def _cert_and_key(self) -> SyncSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("mqtt_cert_file and mqtt_key_file must be set together")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be less than reconnect_min_s")
        return self


class MetricsSettings(BaseModel):
    """The Prometheus endpoint (docs/metrics.md): ``http://host:port/metrics``."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Serve /metrics.")
    host: str = Field("127.0.0.1", description="Address to listen on; localhost unless opened on purpose.")
    port: int = Field(9464, ge=0, le=65535, description="0: any free port (the log says which).")


class WatchdogSettings(BaseModel):
    """When systemd's watchdog counts the agent as stuck (docs/service.md, "The watchdog").
    Used only when systemd asks for pings (``WatchdogSec=`` in the unit)."""

    model_config = ConfigDict(extra="forbid")
    max_run_s: float = Field(
        60.0, gt=0, description="One run longer than this makes its worker count as stuck."
    )
    max_loop_silence_s: float = Field(
        10.0, gt=0, description="The main loop silent longer than this counts as stuck."
    )


class Credentials(BaseModel):
    """What ``edgefleet-agent enroll`` stores (mode 0600): the device's identity at the control plane."""

    model_config = ConfigDict(extra="ignore")
    device_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    credential: str = Field(min_length=1, description="Bearer credential for the control plane's API.")
    signing_public_key: str = Field(description="PEM ed25519 key that release manifests are signed with.")
    signing_key_id: str | None = None
    api_url: str
    mqtt: dict[str, Any] | None = Field(None, description="Broker settings sent at enrollment, if any.")

    @classmethod
    def load(cls, path: Path) -> Credentials:
        """Read ``path``; ``ValueError`` naming the file when it is missing or malformed."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(
                f"credentials file {path} does not exist: enroll first (edgefleet-agent enroll)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"credentials file {path} is unreadable: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"credentials file {path} is invalid: {problems}") from None


def _path(value: Any) -> Path | None:
    return Path(value) if isinstance(value, str) and value else None


class ResolvedSync(BaseModel):
    """:class:`SyncSettings` with every default filled in from the credentials."""

    model_config = ConfigDict(frozen=True)
    device_id: str
    control_plane_url: str
    credential: str
    signing_public_key: str
    mqtt_host: str
    mqtt_port: int
    mqtt_username: str | None
    mqtt_password: str | None
    mqtt_tls: bool
    mqtt_ca_file: Path | None
    mqtt_cert_file: Path | None
    mqtt_key_file: Path | None
    keepalive_s: int
    telemetry_interval_s: float
    session_expiry_s: int
    reconnect_min_s: float
    reconnect_max_s: float


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
    sync: SyncSettings | None = Field(None, description="Managed by a control plane (docs/sync.md).")
    device_api: DeviceApiSettings = Field(
        default_factory=DeviceApiSettings, description="The local gRPC API (docs/device-api.md)."
    )
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    watchdog: WatchdogSettings = Field(default_factory=WatchdogSettings)
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
            binding.file = fix(binding.file) if binding.file else None
            for source in binding.sources:
                if isinstance(source, FolderSourceSpec):
                    source.path = fix(source.path)
        self.device_api = self.device_api.resolve(base)
        if self.sync is not None:
            sync = self.sync
            sync.credentials_file = fix(sync.credentials_file) if sync.credentials_file else None
            sync.mqtt_ca_file = fix(sync.mqtt_ca_file) if sync.mqtt_ca_file else None
            sync.mqtt_cert_file = fix(sync.mqtt_cert_file) if sync.mqtt_cert_file else None
            sync.mqtt_key_file = fix(sync.mqtt_key_file) if sync.mqtt_key_file else None
        return self

    @property
    def credentials_file(self) -> Path:
        """Where ``edgefleet-agent enroll`` wrote this device's credentials."""
        if self.sync is not None and self.sync.credentials_file is not None:
            return self.sync.credentials_file
        return self.data_dir / "credentials.json"

    def resolve_sync(self, credentials: Credentials) -> ResolvedSync:
        """The sync settings with defaults taken from ``credentials``; ``ValueError`` when the
        broker or the control plane is known from neither, or the device ids disagree."""
        sync = self.sync
        if sync is None:
            raise ValueError("the agent has no sync settings")
        device_id = self.device_id
        if credentials.device_id != device_id:
            if "device_id" in self.model_fields_set:
                raise ValueError(
                    f"device_id is '{device_id}' but {self.credentials_file} was enrolled as "
                    f"'{credentials.device_id}'"
                )
            device_id = credentials.device_id
        mqtt = credentials.mqtt or {}
        host = sync.mqtt_host or mqtt.get("host")
        if not isinstance(host, str) or not host:
            raise ValueError("sync.mqtt_host is not set and the credentials carry no mqtt.host")
        tls = sync.mqtt_tls if sync.mqtt_tls is not None else bool(mqtt.get("tls", False))
        port = sync.mqtt_port or mqtt.get("port") or (8883 if tls else 1883)
        password = sync.mqtt_password if sync.mqtt_password is not None else mqtt.get("password")
        username = sync.mqtt_username or mqtt.get("username") or device_id
        return ResolvedSync(
            device_id=device_id,
            control_plane_url=(sync.control_plane_url or credentials.api_url).rstrip("/"),
            credential=credentials.credential,
            signing_public_key=credentials.signing_public_key,
            mqtt_host=host,
            mqtt_port=int(port),
            mqtt_username=str(username),
            mqtt_password=None if password is None else str(password),
            mqtt_tls=tls,
            # The certificate made at enrollment is used only when the broker speaks TLS.
            mqtt_ca_file=sync.mqtt_ca_file or (_path(mqtt.get("ca_file")) if tls else None),
            mqtt_cert_file=sync.mqtt_cert_file or (_path(mqtt.get("cert_file")) if tls else None),
            mqtt_key_file=sync.mqtt_key_file or (_path(mqtt.get("key_file")) if tls else None),
            keepalive_s=sync.keepalive_s,
            telemetry_interval_s=sync.telemetry_interval_s,
            session_expiry_s=sync.session_expiry_s,
            reconnect_min_s=sync.reconnect_min_s,
            reconnect_max_s=sync.reconnect_max_s,
        )

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

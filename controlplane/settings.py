"""The control plane's settings: typed, from the environment (``EDGEFLEET_…``) and arguments.

With nothing set it runs on embedded defaults: data under ``./edgefleet-data``, a SQLite
database in it, listening on ``127.0.0.1:8080``. At scale point ``EDGEFLEET_DATABASE_URL`` at
PostgreSQL (``postgresql+psycopg://user@host/db``). Nothing reads the environment at import
time: call ``ControlPlaneSettings()`` in ``main``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", extra="ignore")

    data_dir: Path = Field(Path("edgefleet-data"), description="Artifacts, the signing key, the SQLite file.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; a SQLite file in the data directory when unset."
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes, each a whole control plane.")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_url: str | None = Field(
        None, description="Base URL devices use for artifact links; derived from host/port when unset."
    )
    signing_key: Path | None = Field(
        None, description="ed25519 private key (PEM); created in the data directory at first start."
    )
    max_model_bytes: int = Field(8 * 1024**3, gt=0, description="Largest model upload accepted.")
    max_body_bytes: int = Field(4 * 1024**2, gt=0, description="Largest JSON/YAML request body.")
    manifest_lifetime_days: int = Field(365, ge=1, description="How long a signed release manifest is valid.")
    enrollment_token_ttl_s: int = Field(24 * 3600, gt=0, description="Default enrollment token lifetime.")
    operator_token_ttl_s: int = Field(90 * 24 * 3600, gt=0, description="Default operator token lifetime.")
    schema_dirs: list[Path] = Field(
        default_factory=list, description="JSON Schemas that data_validation nodes name (as on the devices)."
    )
    mqtt_host: str | None = Field(None, description="The MQTT broker; the bridge is off when unset.")
    mqtt_port: int = Field(1883, ge=1, le=65535)
    mqtt_username: str = "edgefleet-controlplane"
    mqtt_password: str | None = None
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    mqtt_public_host: str | None = Field(
        None, description="Broker host devices connect to; mqtt_host when unset."
    )
    mqtt_public_port: int | None = Field(
        None, description="Broker port devices connect to; mqtt_port when unset."
    )
    broker_password_file: Path | None = Field(
        None, description="Mosquitto's password file, rewritten when devices enroll or leave."
    )
    broker_pid_file: Path | None = Field(None, description="Mosquitto's pid file: SIGHUP after a rewrite.")
    broker_crl_file: Path | None = Field(
        None,
        description="The broker's crlfile (mutual TLS): rewritten with every decommissioned device's "
        "certificate after each decommission, then SIGHUP.",
    )
    mqtt_max_payload: int = Field(
        1024 * 1024, gt=0, description="Larger MQTT payloads are dropped and counted."
    )
    rollout_tick_s: float = Field(
        2.0,
        ge=0,
        description="Seconds between rollout controller ticks; 0 turns the controller off in this process.",
    )
    migrate_on_start: bool = Field(True, description="Apply database migrations when the service starts.")
    log_json: bool = Field(True, description="One JSON object per log line.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ControlPlaneSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'controlplane.db'}"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.data_dir / "signing_key.pem"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

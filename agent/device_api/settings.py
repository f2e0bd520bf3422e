"""The device API's settings: the ``device_api`` section of the agent's config.

Example::

    device_api:
      socket_path: null                # default <data_dir>/device.sock (mode 0660)
      tcp_address: 0.0.0.0:50051       # optional; needs TLS and a token
      tls_cert_file: /etc/edgefleet/device-api.pem
      tls_key_file: /etc/edgefleet/device-api.key
      tls_client_ca_file: /etc/edgefleet/line-ca.pem   # optional: require client certificates
      token_file: /etc/edgefleet/device-api.token
      max_message_bytes: 16777216
      inspect_window: 8
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class DeviceApiSettings(BaseModel):
    """Where the device API listens, how TCP callers are authenticated, and its limits.

    TCP is off unless ``tcp_address`` is set, and then needs TLS (``tls_cert_file`` and
    ``tls_key_file``) and a bearer token (``token_file``); the Unix socket needs neither: its
    file permissions (0660) decide who may connect."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="Serve the device API.")
    socket_path: Path | None = Field(None, description="Unix socket; default <data_dir>/device.sock.")
    tcp_address: str | None = Field(
        None, pattern=r"^\S+:\d{1,5}$", description="host:port to listen on over TCP (TLS and token)."
    )
    tls_cert_file: Path | None = Field(None, description="Server certificate chain (PEM) for TCP.")
    tls_key_file: Path | None = Field(None, description="Server private key (PEM) for TCP.")
    tls_client_ca_file: Path | None = Field(
        None, description="CA bundle (PEM); when set, TCP clients must present a certificate it signed."
    )
    token_file: Path | None = Field(
        None, description="File holding the bearer token TCP callers send as 'authorization: Bearer …'."
    )
    max_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES,
        ge=1024,
        le=1 << 30,
        description="Largest request or response; larger ones fail with RESOURCE_EXHAUSTED.",
    )
    inspect_window: int = Field(
        8, ge=1, le=1024, description="Frames of one Inspect stream in flight at most (read, not answered)."
    )
    run_workers: int = Field(4, ge=1, le=64, description="Threads running frames of Inspect streams.")
    max_concurrent_rpcs: int = Field(
        32, ge=2, le=1024, description="Calls served at once (streams included); more get RESOURCE_EXHAUSTED."
    )
    event_buffer: int = Field(
        1024, ge=1, le=1_000_000, description="Events kept per watcher; a slower watcher loses the oldest."
    )
    shutdown_grace_s: float = Field(5.0, ge=0, description="How long calls in progress may finish at stop.")

    @model_validator(mode="after")
    def _tcp_needs_tls_and_token(self) -> DeviceApiSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tcp_address is not None:
            if self.tls_cert_file is None:
                raise ValueError(
                    "tcp_address needs tls_cert_file and tls_key_file: TCP is served over TLS only"
                )
            if self.token_file is None:
                raise ValueError("tcp_address needs token_file: TCP callers must send a bearer token")
        elif self.tls_client_ca_file is not None:
            raise ValueError("tls_client_ca_file applies to TCP only: set tcp_address too")
        return self

    def socket(self, data_dir: Path) -> Path:
        """The Unix socket's path for an agent whose data directory is ``data_dir``."""
        return self.socket_path if self.socket_path is not None else data_dir / "device.sock"

    def resolve(self, base: Path) -> DeviceApiSettings:
        """These settings with relative paths made relative to ``base`` (the config file's
        directory)."""

        updates: dict[str, Path] = {}
        for name in ("socket_path", "tls_cert_file", "tls_key_file", "tls_client_ca_file", "token_file"):
            value = getattr(self, name)
            if value is not None and not value.is_absolute():
                updates[name] = base / value
        return self.model_copy(update=updates)

"""edgefleet's MQTT broker (Mosquitto): its configuration, password file and ACL, and the small CA
that issues the broker's TLS certificate and the devices' client certificates.

``edgefleet broker-config`` (:mod:`controlplane.broker.cli`) writes a ready-to-run configuration.
"""

from __future__ import annotations

from controlplane.broker.config import (
    CONTROL_PLANE_USER,
    DEVICE_READ_TOPICS,
    DEVICE_WRITE_TOPICS,
    DEVICES_TOPIC,
    SHARED_GROUP,
    BrokerUser,
    TlsFiles,
    check_username,
    device_topic,
    password_hash,
    render_acl,
    render_mosquitto_conf,
    render_password_file,
    shared_subscription,
    verify_password,
    write_broker_config,
    write_password_file,
)

__all__ = [
    "CONTROL_PLANE_USER",
    "DEVICES_TOPIC",
    "DEVICE_READ_TOPICS",
    "DEVICE_WRITE_TOPICS",
    "SHARED_GROUP",
    "BrokerUser",
    "TlsFiles",
    "check_username",
    "device_topic",
    "password_hash",
    "render_acl",
    "render_mosquitto_conf",
    "render_password_file",
    "shared_subscription",
    "verify_password",
    "write_broker_config",
    "write_password_file",
]

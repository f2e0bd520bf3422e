"""The control plane's MQTT bridge: desired state out; reported state, telemetry and events in."""

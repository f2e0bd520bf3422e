"""The device side of edgefleet's sync with the control plane over MQTT."""

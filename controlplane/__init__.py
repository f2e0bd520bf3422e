"""edgefleet control plane: manages the fleet of devices (the operator's side)."""

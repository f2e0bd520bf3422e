"""Canary rollouts: spec, cohorts, bundle, analysis, controller (docs/rollouts.md).

Modules, lowest layer first: ``spec`` (the request body), ``cohorts`` (which devices take part in
a step), ``targets`` (which devices a target names), ``bundle`` (the signed artifact set),
``store`` (the ``rollouts`` and ``rollout_decisions`` rows), ``plan`` (what one device runs during
a rollout; ``controlplane.desired`` reads it), ``create`` (registry checks and the new row),
``analysis`` (statistics and verdicts), ``controller`` (the state machine) and ``leader`` (one
driver of the controller per fleet).

Errors (``controlplane.rollouts.errors``)::

    RolloutError
    ├── SpecInvalid        the spec does not fit the registry; ``errors`` lists {field, message}
    ├── RolloutNotFound    no rollout with that id
    └── RolloutConflict    overlapping target, or an action the rollout's state does not allow
"""

from controlplane.rollouts.errors import RolloutConflict, RolloutError, RolloutNotFound, SpecInvalid

__all__ = ["RolloutConflict", "RolloutError", "RolloutNotFound", "SpecInvalid"]

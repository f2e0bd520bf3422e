"""Canary rollouts on the device (docs/rollouts.md): bundle verification, A/B slots, the health
gate, crash-loop accounting and shadow runs. The reconciler (``agent.sync.reconciler``) drives
them; the workflow service (``agent.daemon``) feeds the gate and the shadow runner its runs.

Modules: :mod:`~agent.rollout.bundle` (verify a signed bundle against its assignment),
:mod:`~agent.rollout.gate` (the health gate), :mod:`~agent.rollout.ledger` (failures and crash
counts across restarts), :mod:`~agent.rollout.slots` (slot A, plan origins),
:mod:`~agent.rollout.shadow` (shadow runs and their comparison).
"""

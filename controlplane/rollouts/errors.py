"""The rollout package's errors (the tree is drawn in ``controlplane.rollouts``). None of them
is worth retrying unchanged: each names what the caller must change."""

from __future__ import annotations


class RolloutError(Exception):
    """Base of every rollout error."""


class SpecInvalid(RolloutError):
    """The spec names something the registry does not have, or does not fit together.

    ``errors`` holds one ``{"field": dotted path, "message": …}`` per problem."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))


class RolloutNotFound(RolloutError):
    def __init__(self, rollout_id: str) -> None:
        self.rollout_id = rollout_id
        super().__init__(f"rollout '{rollout_id}' does not exist")


class RolloutConflict(RolloutError):
    """The request conflicts with the current state: an overlapping active rollout, or an action
    the rollout's state does not allow."""

"""Choosing a device's profile, with the reasons a person can check.

``detect`` evaluates every profile's rule against the facts: a profile matches when every rule
it sets holds. The matching profile with the highest priority wins; when none matches, the
fallback profile does. ``select_profile`` lets an explicit name win over detection.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agent.profiles.errors import ProfileError, UnknownProfile
from agent.profiles.facts import DeviceFacts
from agent.profiles.model import DetectRule, Profile

How = Literal["explicit", "matched", "fallback"]


@dataclass(frozen=True)
class Detection:
    """The chosen profile, how it was chosen, and why (first line: the decision; then one line
    per profile considered, highest priority first; warnings last)."""

    profile: Profile
    how: How
    reasons: list[str]
    facts: DeviceFacts | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "how": self.how,
            "reasons": list(self.reasons),
            "source": str(self.profile.source) if self.profile.source else None,
            "facts": self.facts.to_dict() if self.facts else None,
        }


def contains_words(text: str, words: str) -> bool:
    """Whether ``words`` occur in ``text``, case-insensitively, not inside a longer word."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(words.strip()) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def evaluate(rule: DetectRule, facts: DeviceFacts) -> tuple[list[str], list[str]]:
    """(rules that held, rules that failed), each described for people. A rule matches when
    it has no failures and at least one rule that held."""
    held: list[str] = []
    failed: list[str] = []
    if rule.device_tree_model is not None:
        model = facts.device_tree_model
        if model is not None and contains_words(model, rule.device_tree_model):
            held.append(f"device-tree model '{model}' contains '{rule.device_tree_model}'")
        elif model is None:
            failed.append(f"no device-tree model (wants '{rule.device_tree_model}')")
        else:
            failed.append(f"device-tree model '{model}' lacks '{rule.device_tree_model}'")
    if rule.gpu_name is not None:
        found = [name for name in facts.gpu_names if contains_words(name, rule.gpu_name)]
        if found:
            held.append(f"GPU '{found[0]}' matches '{rule.gpu_name}'")
        else:
            seen = ", ".join(f"'{name}'" for name in facts.gpu_names) or "none"
            failed.append(f"no GPU matches '{rule.gpu_name}' (GPUs: {seen})")
    if rule.arch is not None:
        (held if facts.arch == rule.arch else failed).append(
            f"arch {facts.arch}" + ("" if facts.arch == rule.arch else f" is not {rule.arch}")
        )
    if rule.min_memory_gb is not None:
        enough = facts.memory_gb >= rule.min_memory_gb
        (held if enough else failed).append(
            f"memory {facts.memory_gb:.1f} GiB {'≥' if enough else '<'} {rule.min_memory_gb:g} GiB"
        )
    return held, failed


def detect(profiles: Mapping[str, Profile], facts: DeviceFacts) -> Detection:
    """Pick the profile for ``facts``. Never fails for a directory that ``load_profiles``
    accepted (it has exactly one fallback); raises ``ProfileError`` for a set without one
    when nothing matches."""
    ordered = sorted(profiles.values(), key=lambda p: (-p.detect.priority, p.name))
    lines: list[str] = []
    winner: Profile | None = None
    for profile in ordered:
        held, failed = evaluate(profile.detect, facts)
        label = f"{profile.name} (priority {profile.detect.priority})"
        if failed or not held:
            lines.append(f"{label}: rejected: {'; '.join(failed) or 'no rule to match'}")
        elif winner is None:
            winner = profile
            lines.append(f"{label}: matched: {'; '.join(held)}")
        else:
            lines.append(f"{label}: also matched, lower priority than {winner.name}: {'; '.join(held)}")
    notes = [f"note: {note}" for note in facts.notes]
    if winner is not None:
        decision = f"detected '{winner.name}': the highest-priority profile whose rule matched"
        return Detection(winner, "matched", [decision, *lines, *notes], facts)
    fallback = next((p for p in ordered if p.detect.fallback), None)
    if fallback is None:
        raise ProfileError(f"no profile matches this device ({facts.describe()}) and none is the fallback")
    decision = f"fell back to '{fallback.name}': no profile's rule matched this device"
    return Detection(fallback, "fallback", [decision, *lines, *notes], facts)


def select_profile(profiles: Mapping[str, Profile], facts: DeviceFacts, explicit: str | None) -> Detection:
    """The explicit profile when ``explicit`` is a name (``UnknownProfile`` when it is not
    defined), else ``detect``. An explicit choice keeps, as reasons, what detection would
    have picked and any mismatch with the device (architecture, missing GPU)."""
    if explicit is None:
        return detect(profiles, facts)
    profile = profiles.get(explicit)
    if profile is None:
        raise UnknownProfile(explicit, profiles)
    reasons = [f"chosen explicitly: '{explicit}'"]
    try:
        detected = detect(profiles, facts).profile
    except ProfileError:
        reasons.append("detection would find no profile for this device")
    else:
        if detected.name != explicit:
            reasons.append(f"detection would pick '{detected.name}'")
    hardware = profile.hardware
    if hardware.arch != facts.arch:
        reasons.append(f"warning: the profile is for {hardware.arch}; this device is {facts.arch}")
    if hardware.gpu is not None and not hardware.gpu.shared_memory and not facts.gpu_names:
        reasons.append(f"warning: the profile expects a {hardware.gpu.name}; no NVIDIA GPU was found")
    return Detection(profile, "explicit", reasons, facts)

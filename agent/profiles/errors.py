"""Errors of device profiles.

The tree::

    ProfileError            a profile cannot be used; retrying does not help, fixing a file
    │                       or the name does
    ├── ProfileLoadError    files that cannot be read or are invalid; ``problems`` lists each
    │                       by file, line and field path, for every file at once
    └── UnknownProfile      an explicit profile name that no file defines (lists the known ones)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ProfileError(Exception):
    """Base of the errors that stop a device from getting a profile."""


@dataclass(frozen=True)
class ProfileProblem:
    """One problem in one profile file. ``field`` is a dotted path (``inference.backends[1]``)."""

    file: str
    message: str
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, str | int | None]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ProfileLoadError(ProfileError):
    """Profile files that cannot be used. ``problems`` lists every one found, not just the first."""

    def __init__(self, problems: Iterable[ProfileProblem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in device profiles:\n{lines}")


class UnknownProfile(ProfileError):
    """An explicit profile name that is not defined."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown profile '{name}'; known profiles: {', '.join(self.known) or 'none'}")

"""Reading profile files and directories.

``load_profiles`` checks every ``*.yaml``/``*.yml`` file of a directory and reports every
problem at once: YAML syntax (with line and column), duplicate keys, fields that are unknown,
missing or out of range (with their path and line), and problems across files: duplicate
names, shared priorities, and not exactly one fallback profile. A directory that loads is
therefore safe for ``detect``: it always picks a profile, and never by a tie.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.profiles.errors import ProfileLoadError, ProfileProblem
from agent.profiles.model import FieldProblems, Loc, Profile

PROFILE_SUFFIXES = (".yaml", ".yml")
_REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def bundled_profiles_dir(override: Path | None = None) -> Path:
    """The profiles directory to use: ``override`` when given, else the ``device_profiles/``
    shipped with edgefleet (beside the repository root of a checkout or editable install, or
    under ``<prefix>/share/edgefleet/``). Returns the first candidate that exists, else the
    checkout path, so that loading it reports a clear 'not a directory'."""
    if override is not None:
        return override
    candidates = (
        _REPOSITORY_ROOT / "device_profiles",
        Path(sys.prefix) / "share" / "edgefleet" / "device_profiles",
    )
    return next((c for c in candidates if c.is_dir()), candidates[0])


def load_profiles(directory: Path) -> dict[str, Profile]:
    """Load every profile of ``directory``, keyed by name, highest priority first.

    Raises ``ProfileLoadError`` listing every problem of every file."""
    if not directory.is_dir():
        raise ProfileLoadError([ProfileProblem(str(directory), "not a directory")])
    files = sorted(p for p in directory.iterdir() if p.suffix in PROFILE_SUFFIXES and p.is_file())
    if not files:
        raise ProfileLoadError([ProfileProblem(str(directory), "no profile files (*.yaml)")])
    problems: list[ProfileProblem] = []
    loaded: list[tuple[Profile, str]] = []
    for path in files:
        try:
            profile, text = _load_file(path)
        except ProfileLoadError as exc:
            problems.extend(exc.problems)
        else:
            loaded.append((profile, text))
    problems.extend(_check_set(loaded, directory, every_file_loaded=not problems))
    if problems:
        raise ProfileLoadError(problems)
    ordered = sorted((p for p, _ in loaded), key=lambda p: -p.detect.priority)
    return {profile.name: profile for profile in ordered}


def load_profile(path: Path) -> Profile:
    """Load and validate one profile file; raises ``ProfileLoadError`` naming file and fields."""
    return _load_file(path)[0]


def _load_file(path: Path) -> tuple[Profile, str]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileLoadError([ProfileProblem(name, f"cannot read: {exc}")]) from exc
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: constructs plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(filter(None, [exc.context, exc.problem])) or "invalid YAML"
        if mark is not None:
            message = f"{message} (column {mark.column + 1})"
        line = mark.line + 1 if mark is not None else None
        raise ProfileLoadError([ProfileProblem(name, f"invalid YAML: {message}", line=line)]) from exc
    except yaml.YAMLError as exc:
        raise ProfileLoadError([ProfileProblem(name, f"invalid YAML: {exc}")]) from exc
    if not isinstance(document, dict):
        got = "an empty file" if document is None else type(document).__name__
        raise ProfileLoadError([ProfileProblem(name, f"a profile is a mapping of fields, got {got}")])
    try:
        profile = Profile.model_validate(document)
    except ValidationError as exc:
        raise ProfileLoadError(_problems(exc, name, text)) from exc
    profile._source = path
    return profile, text


def _problems(exc: ValidationError, name: str, text: str) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblems):
            located = [(loc + sub, message) for sub, message in cause.problems]
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "required field is missing"
            located = [(loc, message)]
        for where, message in located:
            problems.append(
                ProfileProblem(name, message, field=format_loc(where), line=_line_of(text, where))
            )
    return problems


def _check_set(
    loaded: Sequence[tuple[Profile, str]], directory: Path, *, every_file_loaded: bool
) -> list[ProfileProblem]:
    """Problems across files. A missing fallback is only reported when every file loaded: the
    fallback may be one of the invalid files."""
    problems: list[ProfileProblem] = []
    by_name: dict[str, Profile] = {}
    by_priority: dict[int, Profile] = {}
    for profile, text in loaded:
        file = str(profile.source)
        first = by_name.setdefault(profile.name, profile)
        if first is not profile:
            problems.append(
                ProfileProblem(
                    file,
                    f"duplicate profile name '{profile.name}', also defined in {first.source}",
                    field="name",
                    line=_line_of(text, ("name",)),
                )
            )
        other = by_priority.setdefault(profile.detect.priority, profile)
        if other is not profile:
            problems.append(
                ProfileProblem(
                    file,
                    f"priority {profile.detect.priority} is also used by '{other.name}' ({other.source}); "
                    "priorities must be unique so that the most specific match is never a tie",
                    field="detect.priority",
                    line=_line_of(text, ("detect", "priority")),
                )
            )
    fallbacks = [p for p, _ in loaded if p.detect.fallback]
    if every_file_loaded and not fallbacks:
        problems.append(
            ProfileProblem(str(directory), "no profile has detect.fallback: true; exactly one must")
        )
    for extra in fallbacks[1:]:
        problems.append(
            ProfileProblem(
                str(extra.source),
                f"a second fallback profile; '{fallbacks[0].name}' ({fallbacks[0].source}) is one already",
                field="detect.fallback",
            )
        )
    return problems


def format_loc(loc: Loc) -> str:
    """``("inference", "backends", 1)`` → ``inference.backends[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(text: str, loc: Loc) -> int | None:
    """The 1-based line of the deepest YAML node on the path ``loc`` (a mapping key's own line
    when the path ends at a key), or None when the text does not compose."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line = key.start_mark.line
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line
        if child is None:
            break
        node = child
    return line + 1


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

"""The JSON Schema of a profile file, generated from ``Profile``.

``device_profiles/schema.json`` is this output; a test fails when it is stale. Regenerate it
with ``python -m agent.profiles.schema`` (writes the bundled file) or pass another path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agent.profiles.loader import bundled_profiles_dir
from agent.profiles.model import Profile

SCHEMA_FILE = "schema.json"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one profile file. Cross-field checks (``use_dla``
    needs DLA cores, limits fit the hardware, ...) are not expressible in it; the loader
    applies them."""
    return {"$schema": DIALECT, **Profile.model_json_schema(mode="validation")}


def render_schema() -> str:
    """The schema file's exact text."""
    return json.dumps(profile_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else bundled_profiles_dir() / SCHEMA_FILE
    target.write_text(render_schema(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":  # pragma: no cover
    main()

"""The engine's public API is what ``agent.workflow.__all__`` lists, and importing it is cheap."""

from __future__ import annotations

import inspect
import subprocess
import sys

import agent.workflow


def test_all_names_exist_and_nothing_private_leaks() -> None:
    for name in agent.workflow.__all__:
        assert hasattr(agent.workflow, name), name
        assert not name.startswith("_")
    public = {
        name
        for name, value in vars(agent.workflow).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(agent.workflow.__all__)


def test_importing_the_engine_loads_no_heavy_library() -> None:
    code = (
        "import sys, agent.workflow, agent.nodes\n"
        "heavy = {'onnxruntime', 'tensorrt', 'pycuda', 'cv2', 'numpy', 'torch'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""``agent.service`` exposes what its ``__all__`` lists, and importing it stays cheap."""

from __future__ import annotations

import inspect
import subprocess
import sys

import agent.service


def test_all_names_exist_and_nothing_else_is_public() -> None:
    public = {
        name
        for name, value in vars(agent.service).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(agent.service.__all__)


def test_importing_it_loads_neither_grpc_nor_heavy_libraries() -> None:
    code = (
        "import sys, agent.service\n"
        "print(sorted({'grpc', 'numpy', 'cv2', 'onnxruntime', 'tensorrt'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""The device API's public names are what ``agent.device_api.__all__`` lists; importing it is cheap."""

from __future__ import annotations

import inspect
import subprocess
import sys

import agent.device_api


def test_all_names_exist_and_nothing_private_leaks() -> None:
    public = {
        name
        for name, value in vars(agent.device_api).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(agent.device_api.__all__)


def test_importing_the_device_api_loads_no_heavy_library() -> None:
    code = (
        "import sys, agent.device_api\n"
        "heavy = {'onnxruntime', 'tensorrt', 'pycuda', 'cv2', 'numpy'} & set(sys.modules)\n"
        "print(sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

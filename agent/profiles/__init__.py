"""Device profiles: what a device is, how it runs inference, and its service limits.

A profile is one YAML file of ``device_profiles/`` (schema: ``device_profiles/schema.json``).
The agent loads the directory, probes the device and picks the profile::

    profiles = load_profiles(bundled_profiles_dir())
    detection = select_profile(profiles, DeviceFacts.probe(), explicit=None)
    detection.profile.inference.backends   # e.g. ['tensorrt', 'onnxruntime-cuda', ...]
    detection.reasons                      # why this profile, and why not the others

Errors (see ``agent.profiles.errors``)::

    ProfileError            a profile cannot be used; retrying does not help
    ├── ProfileLoadError    invalid files: every problem, by file, line and field path
    └── UnknownProfile      an explicit name that no file defines (lists the known ones)
"""

from agent.profiles.detect import Detection, detect, select_profile
from agent.profiles.errors import ProfileError, ProfileLoadError, ProfileProblem, UnknownProfile
from agent.profiles.facts import DeviceFacts
from agent.profiles.loader import bundled_profiles_dir, load_profile, load_profiles
from agent.profiles.model import (
    DetectRule,
    GpuSpec,
    HardwareSpec,
    InferenceSpec,
    Profile,
    ServiceLimits,
)

__all__ = [
    "DetectRule",
    "Detection",
    "DeviceFacts",
    "GpuSpec",
    "HardwareSpec",
    "InferenceSpec",
    "Profile",
    "ProfileError",
    "ProfileLoadError",
    "ProfileProblem",
    "ServiceLimits",
    "UnknownProfile",
    "bundled_profiles_dir",
    "detect",
    "load_profile",
    "load_profiles",
    "select_profile",
]

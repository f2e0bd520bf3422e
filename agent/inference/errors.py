"""Errors of the inference runtime.

The tree::

    InferenceError
    ├── ModelNotFound        no such model (or version) in the store
    ├── ModelFormatError     the file is not a usable ONNX model (names the file and why)
    ├── ModelStoreError      the store cannot be written (a full disk, permissions); retryable
    ├── BackendUnavailable   a backend cannot run on this device (names it and why)
    ├── InputMismatch        a request does not fit the model's inputs (names input and shape)
    └── InferenceFailed      the backend failed while running; retryable

Errors of onnxruntime, tensorrt and pycuda never leave their adapter modules: they are
translated into these, with the model and backend named.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of the inference runtime's errors. ``retryable`` says whether trying again helps."""

    retryable = False


class ModelNotFound(InferenceError):
    def __init__(self, model_id: str, version: str | None = None, known: list[str] | None = None) -> None:
        self.model_id = model_id
        self.version = version
        what = f"model '{model_id}'" + (f" version '{version}'" if version else "")
        hint = f" (installed: {', '.join(known)})" if known else " (the store holds no version of it)"
        super().__init__(f"{what} is not in the model store{hint}")


class ModelFormatError(InferenceError):
    """A file that is not a usable ONNX model."""


class ModelStoreError(InferenceError):
    """The store could not be written or read; nothing half-written is left behind."""

    retryable = True


class BackendUnavailable(InferenceError):
    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend {backend} is unavailable: {reason}")


class InputMismatch(InferenceError):
    """A request whose inputs do not fit the model."""


class InferenceFailed(InferenceError):
    """The backend raised while running a batch."""

    retryable = True

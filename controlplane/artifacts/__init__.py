"""Model artifacts on the control plane: content-addressed blob storage and ONNX metadata."""

from __future__ import annotations

from controlplane.artifacts.blobs import (
    BlobNotFound,
    BlobStore,
    BlobStoreError,
    BlobTooLarge,
    BlobWriter,
    DigestMismatch,
    FileBlobStore,
    validate_sha256,
)
from controlplane.artifacts.onnx_meta import NotOnnxError, OnnxMetadata, TensorInfo, read_onnx_metadata

__all__ = [
    "BlobNotFound",
    "BlobStore",
    "BlobStoreError",
    "BlobTooLarge",
    "BlobWriter",
    "DigestMismatch",
    "FileBlobStore",
    "NotOnnxError",
    "OnnxMetadata",
    "TensorInfo",
    "read_onnx_metadata",
    "validate_sha256",
]

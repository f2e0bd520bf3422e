"""Writing files so that a crash, a kill -9 or a full disk never leaves half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` survive a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never a part.

    The bytes go to a temporary file beside ``path``, which is renamed over it. With
    ``durable`` the file and the directory are fsync'ed as well, so the new file survives a
    power cut; without, it is only safe against crashes of this process. On failure the
    temporary file is removed and the error propagates.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        Path(tmp).unlink(missing_ok=True)

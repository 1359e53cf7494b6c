"""Writing files so that readers see the old file, no file, or the whole new
one, never a partial write (checkpoints, saved graphs, compile caches)."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable


def atomic_write(path: str, write: Callable[[Any], None], durable: bool = True) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temporary file in the
    same directory, then rename it into place; the temporary file is removed
    on any failure. ``durable`` also fsyncs the file and the directory (a
    checkpoint survives a crash; a cache entry need not)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

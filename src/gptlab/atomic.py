"""``write_atomic``: replace a file so that a reader (or a restart after a kill) sees the old
content or the complete new content, never a partial write."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def temp_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary files (hidden, so no ``*.ckpt`` glob matches them)."""
    return f".{path.name}."


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file is
    renamed over ``path`` (``os.replace`` is atomic within one file system). A process killed
    before the rename leaves ``path`` untouched and only a hidden ``.<name>.*.tmp`` file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; caches and runs may be shared between users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename itself lives in the directory; without this a power loss could still undo it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

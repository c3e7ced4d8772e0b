"""``write_atomic``: replace a file so that a reader (or a restart after a kill) sees the old
content or the complete new content, never a partial write."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
# A writer that fails while its file system has less than this free ran out of space; some writers
# (torch.save's zip writer) report that only as a garbled error of their own.
NEARLY_FULL_BYTES = 16 << 20


def temp_prefix(path: Path) -> str:
    """The name prefix of ``path``'s temporary files (hidden, so no ``*.ckpt`` glob matches them)."""
    return f".{path.name}."


class AtomicFile:
    """A file written in as many calls as needed and put in place at once.

    The bytes go to a hidden temporary file in ``path``'s directory; ``commit`` flushes it to disk
    and renames it over ``path`` (``os.replace`` is atomic within one file system), ``discard``
    removes it. A process killed before the rename leaves ``path`` untouched and only a hidden
    ``.<name>.*.tmp`` file behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=temp_prefix(self.path), suffix=TEMP_SUFFIX)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, 0o644)  # mkstemp makes it private; caches and runs may be shared between users
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        _fsync_directory(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        Path(self.tmp).unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` as one ``AtomicFile``."""
    out = AtomicFile(path)
    try:
        if callable(data):
            data(out.file)
        else:
            out.file.write(data)
    except Exception as err:
        free = _free_bytes(out.path.parent)  # before discard() frees what was written
        out.discard()
        ran_out = free is not None and free < NEARLY_FULL_BYTES
        if ran_out and not (isinstance(err, OSError) and err.errno == errno.ENOSPC):
            raise OSError(
                errno.ENOSPC, f"no space left on the device writing {out.path} ({free:,} bytes free; the file "
                f"was left as it was). The writer's own error: {type(err).__name__}: {err}"
            ) from err
        raise
    except BaseException:
        out.discard()
        raise
    out.commit()


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


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

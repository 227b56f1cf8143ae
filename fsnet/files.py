"""Writing files so that a stopped or failed write never leaves a half file under the real name."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fsnet.errors import FsnetError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds.

    A kill at any moment leaves either the previous file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            yield Path(tmp)
        except Exception as exc:
            reason = write_failure(exc, path.parent)
            if reason is None:
                raise
            raise FsnetError(f"cannot write {path}: {reason}") from exc
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_failure(exc: BaseException, folder: str | os.PathLike) -> str | None:
    """Why writing into ``folder`` failed, if ``exc`` is a failed write; else None.

    A full disk surfaces as whatever the writer makes of a short write (torch.save: "unexpected
    pos", libsndfile: "System error"), so the free space is checked while the partial file still
    holds what was written.
    """
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on device"
    if isinstance(exc, OSError):
        return None  # permissions, missing folders, ...: the caller's own message is clearer
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return "no space left on device"
    except OSError:
        pass
    if type(exc).__name__ == "LibsndfileError":
        return str(getattr(exc, "error_string", exc)).strip()
    return None

"""Errors that carry a message a user can act on.

Every failure caused by bad input (an unknown model, a malformed dataset, a corrupt download) is raised
as a :class:`CnnscopeError` whose text names the offending file or value and says what to do, so the
step entry points can print it without a traceback.

A fault of the disk that the user can fix (a full or read-only disk, permissions, a file where a
folder must go) is an :class:`OSError` with one of :data:`USER_ERRNOS`; :func:`disk_fault` turns it
into the same kind of one line, naming the path and the fix, for the steps and the ``cnnscope`` command.
"""

import difflib
import errno
from collections.abc import Sequence


class CnnscopeError(Exception):
    """A user-facing error: the message names the bad input and the fix."""


class DatasetError(CnnscopeError):
    """A probe dataset on disk is missing, incomplete or malformed."""


class DownloadError(CnnscopeError):
    """A download failed or produced an archive that cannot be trusted."""


class ModelError(CnnscopeError):
    """An unknown model, layer or checkpoint, or weights that cannot be loaded."""


# Failures of the disk a user can fix, each with what to do; other errnos are bugs (a traceback).
USER_ERRNOS = {
    errno.ENOSPC: "free space on that disk, then rerun",
    errno.EDQUOT: "free space within your disk quota, then rerun",
    errno.EROFS: "that file system is read-only: run where it is writable",
    errno.EACCES: "fix its permissions, or run where you may write",
    errno.EPERM: "fix its permissions, or run where you may write",
    errno.ENOTDIR: "a file stands where a folder must be: move it away",
    errno.EISDIR: "a folder stands where a file must be: move it away",
    errno.EEXIST: "something already stands there: move it away",
}


def disk_fault(e: OSError, where: str | None = None) -> str | None:
    """One line for a user-fixable disk fault ``e`` (``None`` for any other error): the path (the
    error's own, else ``where``), the system's reason and the fix."""
    fix = USER_ERRNOS.get(e.errno)
    if fix is None:
        return None
    path = e.filename if e.filename is not None else where
    return f"cannot use {path or 'a file'}: {e.strerror}; {fix}"


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean a, b?"`` for the names of ``known`` close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, known, n=5)
    return f"; did you mean {', '.join(close)}?" if close else ""

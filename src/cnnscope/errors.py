"""Errors that carry a message a user can act on.

Every failure caused by bad input (an unknown model, a malformed dataset, a corrupt download) is raised
as a :class:`CnnscopeError` whose text names the offending file or value and says what to do, so the
step entry points can print it without a traceback.
"""


class CnnscopeError(Exception):
    """A user-facing error: the message names the bad input and the fix."""


class DatasetError(CnnscopeError):
    """A probe dataset on disk is missing, incomplete or malformed."""


class DownloadError(CnnscopeError):
    """A download failed or produced an archive that cannot be trusted."""


class ModelError(CnnscopeError):
    """An unknown model, layer or checkpoint, or weights that cannot be loaded."""

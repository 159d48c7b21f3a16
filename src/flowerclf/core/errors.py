"""Every error a user can fix, in one hierarchy, in a module that imports nothing.

The CLI prints a :class:`FlowerclfError` as one line and exits with its ``exit_code``;
any other exception is a bug and keeps its traceback. Each class also derives from the
built-in exception it replaced (``ValueError``, ``RuntimeError``, ``FileNotFoundError``),
so callers that caught those keep working.
"""

from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class FlowerclfError(Exception):
    """Base of the errors whose message tells the user what to change."""

    exit_code = EXIT_FAILURE


class ConfigError(FlowerclfError, ValueError):
    """A configuration value or override is invalid; the message says what is valid."""

    exit_code = EXIT_USAGE


class UsageError(FlowerclfError, ValueError):
    """A command was called with arguments that cannot work together.

    Exits 1 like the other failures (as these did before the hierarchy existed); 2 stays
    reserved for configuration errors, the Hydra overrides every pipeline command takes.
    """


class DatasetLayoutError(FlowerclfError, ValueError):
    """A source or raw directory does not look like the dataset it should be."""


class UnsafeArchiveError(FlowerclfError, ValueError):
    """The archive contains a member that could escape the extraction directory."""


class DownloadError(FlowerclfError, RuntimeError):
    """A file could not be fetched or failed verification."""


class ImageDecodeError(FlowerclfError, ValueError):
    """An input could not be turned into an RGB image; ``reason`` is short and user-facing.

    ``kind`` says what went wrong, for callers that map failures to their own codes (the
    REST service's HTTP statuses): ``empty``, ``unrecognised`` (not an image Pillow knows),
    ``unsupported`` (an image, in a format outside SUPPORTED_FORMATS), ``too_large`` (pixel
    limit), ``corrupt`` (truncated or damaged data) or ``unreadable`` (the file itself).
    """

    def __init__(self, reason: str, kind: str = "corrupt") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, str]]:
        return type(self), (self.reason, self.kind)  # keep ``kind`` across processes


class PackageError(FlowerclfError, ValueError):
    """A directory is not a usable model package; the message says what is wrong."""


class RunNotFoundError(FlowerclfError, FileNotFoundError):
    """A run id, checkpoint or prepared dataset named by the user does not exist."""


class RunStateError(FlowerclfError, ValueError):
    """A run cannot start or continue as asked (occupied run directory, other model...)."""


class WeightsUnavailableError(FlowerclfError, RuntimeError):
    """Pretrained weights were requested but cannot be obtained here."""


class ExportError(FlowerclfError, RuntimeError):
    """The export could not produce a package that keeps its promises."""


class TensorRTUnavailableError(FlowerclfError, RuntimeError):
    """TensorRT cannot be used on this machine; the message says why."""


class ServiceError(FlowerclfError, RuntimeError):
    """A server flowerclf started or talks to did not come up or answer as it should."""


class MissingExtraError(FlowerclfError):
    """A command needs an optional part of flowerclf (an install extra) that is missing."""

"""The errors edgesdk raises. Every failure a user can cause is an EdgeSDKError subclass
whose message says what was expected and what to do about it."""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base class of every error edgesdk raises on purpose."""


class ModelLoadError(EdgeSDKError):
    """A model file or bundle is missing, truncated, corrupt or of an unknown kind."""


class ConversionError(EdgeSDKError):
    """A conversion failed, or its artifact did not match the source model closely enough."""

    #: Where it failed, as recorded in a bundle's `failed` list (records.FAILURE_STAGES).
    stage = "convert"


class ExportError(ConversionError):
    """The source model did not export to ONNX, the file most targets build from."""

    stage = "export"


class BackendUnavailable(EdgeSDKError):
    """A backend or converter needs a library (a pip extra) that is not installed."""


class InputError(EdgeSDKError):
    """Inputs given to a model do not match its specification (name, shape, dtype, finite values)."""


class InferenceError(EdgeSDKError):
    """A backend failed while running inputs that passed validation: the backend's fault, not the caller's."""


class UsageError(EdgeSDKError, ValueError):
    """An argument has a value edgesdk does not accept (a mode, a thread count, an output location).
    Also a ValueError, so code that caught ValueError before keeps working."""


class CalibrationError(EdgeSDKError):
    """Calibration data is missing, unusable or unsuitable for INT8 quantization."""


def missing_extra(module: str, extra: str, what: str) -> BackendUnavailable:
    """The error for a heavy library that is not installed, naming the pip extra that brings it."""
    return BackendUnavailable(
        f"{what} needs the Python package '{module}', which is not installed. "
        f"Install it with: pip install 'edgesdk[{extra}]'"
    )


def require(module: str, extra: str, what: str):
    """Import a heavy optional module, or raise BackendUnavailable naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # ImportError covers a broken install as well as a missing one
        err = missing_extra(module.split(".")[0], extra, what)
        raise err from exc


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (the cause, not a trailing MLIR dump or
    generic advice), or the exception's class name when the message is empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else exc.__class__.__name__

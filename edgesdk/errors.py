"""The errors edgesdk raises. Every failure a user can cause is an EdgeSDKError subclass
whose message says what was expected and what to do about it."""

from __future__ import annotations


class EdgeSDKError(Exception):
    """Base class of every error edgesdk raises on purpose."""


class ModelLoadError(EdgeSDKError):
    """A model file or bundle is missing, truncated, corrupt or of an unknown kind."""


class ConversionError(EdgeSDKError):
    """A conversion failed, or its artifact did not match the source model closely enough."""


class BackendUnavailable(EdgeSDKError):
    """A backend or converter needs a library (a pip extra) that is not installed."""


class InputError(EdgeSDKError):
    """Inputs given to a model do not match its specification (name, shape, dtype)."""


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

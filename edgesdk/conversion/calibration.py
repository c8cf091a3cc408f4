"""CalibrationSet: the one way every converter receives representative data for INT8.

It accepts a folder of images (preprocessed per a Preprocess spec), a .npy/.npz file, an array, or any
iterable of arrays (or of dicts keyed by input name), and always yields batches of one sample in each
input's dtype (float32 pixels, int64 token ids)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import CalibrationError
from ..core.images import Preprocess
from ..core.specs import TensorSpec

log = logging.getLogger(__name__)

#: Below this many samples, post-training INT8 ranges are noisy; we warn (but go on).
MIN_RECOMMENDED_SAMPLES = 32
#: More than this adds calibration time and little accuracy.
DEFAULT_MAX_SAMPLES = 300

Sample = dict[str, np.ndarray]


class CalibrationSet:
    """Representative input samples, each a dict {input name: array with batch dimension 1}."""

    def __init__(self, samples: Sequence[Sample], source: str, preprocess: Preprocess | None = None):
        if not samples:
            raise CalibrationError(f"No calibration samples found in {source}.")
        self.samples: list[Sample] = list(samples)
        self.source = source
        self.preprocess = preprocess
        if len(self.samples) < MIN_RECOMMENDED_SAMPLES:
            log.warning(
                "Calibration uses only %d samples from %s; INT8 accuracy is usually better with at least %d.",
                len(self.samples), source, MIN_RECOMMENDED_SAMPLES,
            )
        else:
            log.info("Calibration set: %d samples from %s", len(self.samples), source)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __repr__(self) -> str:
        return f"CalibrationSet({len(self.samples)} samples from {self.source})"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "count": len(self.samples)}

    # -- constructors -------------------------------------------------------------------------------
    @classmethod
    def from_any(
        cls,
        data: Any,
        inputs: Sequence[TensorSpec],
        preprocess: Preprocess | None = None,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
    ) -> CalibrationSet:
        """Build a CalibrationSet from a folder, a .npy/.npz file, an array, or an iterable."""
        if isinstance(data, CalibrationSet):
            return data
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            labelled = _labelled_images(path)
            if labelled:
                return cls.from_image_files(labelled, inputs, preprocess, max_samples, f"labelled images in {path}")
            if path.is_dir():
                return cls.from_image_folder(path, inputs, preprocess, max_samples)
            if path.suffix in (".npy", ".npz"):
                return cls.from_numpy_file(path, inputs, max_samples)
            if not path.exists():
                raise CalibrationError(f"Calibration data not found: {path}")
            raise CalibrationError(
                f"Cannot use {path} as calibration data: give a folder of images, a .npy or .npz file."
            )
        if isinstance(data, np.ndarray):
            return cls.from_arrays(_split_batch(data), inputs, "an array", max_samples)
        if hasattr(data, "numpy") and hasattr(data, "shape"):  # a torch tensor
            return cls.from_arrays(_split_batch(np.asarray(data.detach().cpu().numpy())), inputs, "a tensor",
                                   max_samples)
        if isinstance(data, Mapping):  # {input name: batch of samples}, as an .npz file holds them
            return cls.from_arrays([data], inputs, "a dict of arrays", max_samples)
        if isinstance(data, Iterable):
            return cls.from_arrays(data, inputs, "an iterable", max_samples)
        raise CalibrationError(f"Cannot use a {type(data).__name__} as calibration data.")

    @classmethod
    def from_image_folder(
        cls,
        folder: Path,
        inputs: Sequence[TensorSpec],
        preprocess: Preprocess | None = None,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
    ) -> CalibrationSet:
        from ..core.images import list_images

        files = list_images(folder)
        if not files:
            raise CalibrationError(f"No image files (.jpg, .png, ...) in {folder}.")
        return cls.from_image_files(files, inputs, preprocess, max_samples, f"images in {folder}")

    @classmethod
    def from_image_files(
        cls,
        files: Sequence[Path],
        inputs: Sequence[TensorSpec],
        preprocess: Preprocess | None = None,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
        source: str = "image files",
    ) -> CalibrationSet:
        from ..core.images import preprocess_image

        if len(inputs) != 1:
            raise CalibrationError("Images can only calibrate a model with one input.")
        pre = preprocess
        if pre is None:
            pre = Preprocess.for_input(inputs[0])
            log.warning("No preprocessing given for the images in %s: assuming %s, resize %s, mean %s, std %s. "
                        "Pass preprocess=Preprocess(...) (--mean/--std/--resize) if the model was trained "
                        "otherwise.", source, pre.color, pre.resize, pre.mean, pre.std)
        files = files[:max_samples] if max_samples else files
        samples = [{inputs[0].name: preprocess_image(f, pre)} for f in files]
        return cls(samples, source, pre)

    @classmethod
    def from_numpy_file(
        cls, path: Path, inputs: Sequence[TensorSpec], max_samples: int | None = DEFAULT_MAX_SAMPLES
    ) -> CalibrationSet:
        try:
            loaded = np.load(path, allow_pickle=False)  # never unpickle a data file
        except Exception as exc:
            raise CalibrationError(f"Cannot read {path} as a numpy array file: {exc}") from None
        if isinstance(loaded, np.ndarray):
            return cls.from_arrays(_split_batch(loaded), inputs, str(path), max_samples)
        with loaded:
            names = [s.name for s in inputs]
            missing = [n for n in names if n not in loaded.files]
            if len(inputs) == 1 and missing and len(loaded.files) == 1:
                arrays = {names[0]: loaded[loaded.files[0]]}
            elif missing:
                raise CalibrationError(f"{path} has arrays {loaded.files}; expected one per input: {names}.")
            else:
                arrays = {n: loaded[n] for n in names}
        count = min(len(a) for a in arrays.values())
        samples = [{n: a[i : i + 1] for n, a in arrays.items()} for i in range(count)]
        return cls.from_arrays(samples, inputs, str(path), max_samples)

    @classmethod
    def from_arrays(
        cls,
        items: Iterable[Any],
        inputs: Sequence[TensorSpec],
        source: str,
        max_samples: int | None = DEFAULT_MAX_SAMPLES,
    ) -> CalibrationSet:
        samples: list[Sample] = []
        for item in items:
            if max_samples and len(samples) >= max_samples:
                break
            samples.extend(_to_samples(item, inputs))
        if max_samples:
            samples = samples[:max_samples]
        return cls(samples, source)

    # -- checks -------------------------------------------------------------------------------------
    def check_representative(self) -> None:
        """Refuse data that cannot teach a quantizer real activation ranges: noise or constants."""
        for name in self.samples[0]:
            if self.samples[0][name].dtype.kind != "f":  # token ids, masks: no neighbour correlation to judge
                continue
            verdicts = [_looks_like_noise(s[name]) for s in self.samples[:16]]
            if all(v == "constant" for v in verdicts):
                raise CalibrationError(
                    f"Calibration data for input '{name}' ({self.source}) is constant. INT8 needs real, "
                    "representative samples (e.g. a folder of photos the model will see)."
                )
            if all(v in ("noise", "constant") for v in verdicts):
                raise CalibrationError(
                    f"Calibration data for input '{name}' ({self.source}) looks like random noise. "
                    "Random data gives wrong INT8 ranges; give real, representative samples "
                    "(a folder of images, a .npy of real inputs)."
                )


def _labelled_images(path: Path) -> list[Path]:
    """The images of a labelled set (class folders, a file,label CSV, images/ + labels/), else []."""
    from ..measuring.accuracy import load_labelled

    labelled = load_labelled(path)
    return [labelled.root / rel for rel, _ in labelled.items] if labelled else []


def _split_batch(array: np.ndarray) -> list[np.ndarray]:
    return [array[i : i + 1] for i in range(len(array))] if array.ndim >= 2 else [array]


def _to_samples(item: Any, inputs: Sequence[TensorSpec]) -> list[Sample]:
    """One iterable item (array, tensor, tuple of arrays, dict) -> samples of batch 1."""
    dtypes = {s.name: s.dtype for s in inputs}
    if isinstance(item, dict):
        arrays = {k: _as_dtype(v, dtypes.get(k)) for k, v in item.items()}
    elif isinstance(item, (tuple, list)):
        arrays = {s.name: _as_dtype(v, s.dtype) for s, v in zip(inputs, item)}
    else:
        arrays = {inputs[0].name: _as_dtype(item, inputs[0].dtype)}
    unknown = set(arrays) - {s.name for s in inputs}
    if unknown:
        raise CalibrationError(f"Calibration sample has inputs {sorted(unknown)}; the model takes "
                               f"{[s.name for s in inputs]}.")
    out: list[Sample] = []
    for spec in inputs:
        a = arrays.get(spec.name)
        if a is None:
            raise CalibrationError(f"Calibration sample lacks input '{spec.name}'.")
        if a.ndim == len(spec.shape) - 1:
            a = a[None]
        if a.ndim != len(spec.shape):
            raise CalibrationError(f"Calibration sample for '{spec.name}' has shape {a.shape}; the model "
                                   f"expects {list(spec.shape)}.")
        arrays[spec.name] = a
    if all(s.accepts_shape(arrays[s.name].shape) and (not s.shape or isinstance(s.shape[0], int)
                                                     or arrays[s.name].shape[0] == 1) for s in inputs):
        # Exactly one sample as the model takes it (also for inputs whose first axis is not a batch,
        # like a recurrent state [2, 1, 128]).
        return [{s.name: np.ascontiguousarray(arrays[s.name]) for s in inputs}]
    batch = len(next(iter(arrays.values())))
    for i in range(batch):
        out.append({s.name: np.ascontiguousarray(arrays[s.name][i : i + 1]) for s in inputs})
    return out


def _as_dtype(value: Any, dtype: str | None) -> np.ndarray:
    """The value as the input's dtype; integer inputs refuse fractional values rather than truncate them."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        wanted = np.dtype(dtype or "float32")
    except TypeError:
        wanted = np.dtype(np.float32)
    array = np.asarray(value)
    if wanted.kind in "iub" and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise CalibrationError(f"Calibration data holds fractional values for an input of dtype {wanted}.")
    try:
        return array.astype(wanted if wanted.kind != "f" else np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"Calibration data of type {array.dtype} cannot be read as the input's {wanted} "
                               f"({exc}): give arrays, or a dict of arrays by input name.") from None


def _looks_like_noise(sample: np.ndarray) -> str:
    """'constant', 'noise' or 'signal': real images and audio have strongly correlated neighbours,
    generated noise does not. Short trailing axes carry too little to judge and count as signal."""
    a = np.asarray(sample, dtype=np.float64)
    if a.std() == 0:
        return "constant"
    # Correlate neighbours along the longest axis (width of an image, time of audio).
    axis = int(np.argmax(a.shape))
    if a.shape[axis] < 8:
        return "signal"
    x = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
    left, right = x[:, :-1].ravel(), x[:, 1:].ravel()
    if left.std() == 0 or right.std() == 0:
        return "signal"
    corr = float(np.corrcoef(left, right)[0, 1])
    return "noise" if abs(corr) < 0.2 else "signal"

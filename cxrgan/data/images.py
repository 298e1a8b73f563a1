"""Image decoding shared by every loader: PNG/JPEG via Pillow, DICOM via pydicom, centre crop and area resize."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxrgan.errors import CxrganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
_CHUNK = 512  # files handed to the thread pool at a time


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one file into a 2-D uint8 grayscale array at its native size.

    PNG/JPEG go through Pillow; 16-bit and float images are min-max scaled to 0..255 and colour images are
    converted to luminance. DICOM goes through :func:`read_dicom`.

    Args:
        path: the image file.
    """
    path = Path(path)
    if path.is_dir():
        raise CxrganError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise CxrganError(f"{path}: image file not found")
    return _DECODERS.get(path.suffix.lower(), _read_pillow)(path)


def _read_pillow(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_gray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CxrganError(f"{path}: cannot decode image ({exc})") from exc


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Decode a DICOM radiograph into uint8 with the display convention "bright = dense".

    The modality LUT (rescale slope/intercept) is applied, then the first VOI window in the file if there is
    one, otherwise a min-max stretch; MONOCHROME1 images (where low values are bright) are inverted.

    Args:
        path: the .dcm file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (InvalidDicomError, AttributeError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CxrganError(f"{path}: cannot decode DICOM ({exc})") from exc
    if pixels.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        pixels = pixels[0]  # multi-frame: a radiograph is a single frame; keep the first
    if pixels.ndim != 2:
        raise CxrganError(f"{path}: expected a single grayscale frame, got pixel array {pixels.shape}")
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if has_window or "VOILUTSequence" in ds:
        # apply_voi_lut maps to the stored range for MONOCHROME1/2 alike; the inversion below is separate
        values = apply_voi_lut(values, ds, index=0).astype(np.float64)
    out = _stretch(values)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 255 - out
    return out


_DECODERS = {suffix: read_dicom for suffix in DICOM_SUFFIXES}  # any other suffix goes to Pillow


def _stretch(values: np.ndarray) -> np.ndarray:
    """Min-max scale to uint8; a constant image becomes all zeros."""
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _stretch(np.asarray(image, dtype=np.float64))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA").convert("RGB")  # drop alpha before luminance
    return np.asarray(image.convert("L"), dtype=np.uint8)


def center_crop(image: np.ndarray) -> np.ndarray:
    """The central square whose side is the short edge (MedMNIST's and the shared data's crop)."""
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 image to ``size`` x ``size``.

    Shrinking uses Pillow's area filter (``Image.BOX``, mean of the covered source pixels), which does not
    alias like nearest or bilinear sampling; enlarging (rare: small sources) uses bicubic interpolation.
    """
    if image.shape == (size, size):
        return np.ascontiguousarray(image)
    resample = Image.BOX if image.shape[0] >= size else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize((size, size), resample=resample), dtype=np.uint8)


def load_square(path: str | os.PathLike, size: int | None) -> np.ndarray:
    """Decode, centre-crop to the short edge and (unless ``size`` is None) area-resize one file."""
    image = read_image(path)
    if size is None:
        return image
    return resize_area(center_crop(image), size)


def load_many(
    paths: Sequence[str | os.PathLike],
    size: int | None,
    workers: int = 1,
    progress: bool = False,
    desc: str = "decoding",
) -> np.ndarray:
    """Decode many files into one (N, size, size) uint8 array, in order.

    Threads are used because Pillow releases the GIL while decoding and resampling. With ``size`` None the
    images are kept at native size and must all share one square shape.

    Args:
        paths: image files.
        size: output side in pixels, or None to keep the native size.
        workers: decoding threads (1 decodes in the calling thread).
        progress: show a tqdm progress bar.
        desc: progress bar label.
    """
    if size is not None and size < 1:
        raise CxrganError(f"image size must be a positive number of pixels, got {size}")
    if workers < 1:
        raise CxrganError(f"workers must be at least 1, got {workers}")
    from tqdm.auto import tqdm

    paths = list(paths)
    out: np.ndarray | None = np.empty((len(paths), size, size), np.uint8) if size is not None else None
    first_shape: tuple[int, int] | None = None

    def store(i: int, image: np.ndarray) -> None:
        nonlocal out, first_shape
        if size is None:
            if first_shape is None:
                if image.shape[0] != image.shape[1]:
                    raise CxrganError(f"{paths[i]}: image is {image.shape[1]}x{image.shape[0]}, not square; pass a size")
                first_shape = image.shape
                out = np.empty((len(paths), *first_shape), np.uint8)
            elif image.shape != first_shape:
                raise CxrganError(
                    f"{paths[i]}: image size {image.shape[1]}x{image.shape[0]} differs from "
                    f"{first_shape[1]}x{first_shape[0]} of {paths[0]}; pass a size to resize all images"
                )
        out[i] = image

    bar = tqdm(total=len(paths), desc=desc, disable=not progress, unit="img")
    with bar:
        if workers == 1:
            for i, path in enumerate(paths):
                store(i, load_square(path, size))
                bar.update()
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                # bounded chunks: few pending results in memory, and a bad file stops the run early
                for start in range(0, len(paths), _CHUNK):
                    chunk = paths[start : start + _CHUNK]
                    for offset, image in enumerate(pool.map(lambda p: load_square(p, size), chunk)):
                        store(start + offset, image)
                        bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    if out is None:
        return np.empty((0, size or 0, size or 0), np.uint8)
    return out


def resize_stack(images: np.ndarray, size: int, progress: bool = False) -> np.ndarray:
    """Centre-crop and area-resize every image of an (N, H, W) uint8 stack to ``size``."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"expected an (N, H, W) uint8 image stack, got {images.shape} {images.dtype}")
    if images.shape[1:] == (size, size):
        return np.ascontiguousarray(images)
    from tqdm.auto import tqdm

    out = np.empty((len(images), size, size), np.uint8)
    for i in tqdm(range(len(images)), desc="resizing", disable=not progress, unit="img"):
        out[i] = resize_area(center_crop(np.asarray(images[i])), size)
    return out

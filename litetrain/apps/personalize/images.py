"""Image helpers of personalization, in NumPy only (no graph code): decode an image file (Pillow if
installed, else scikit-image), resize bilinearly, and turn arrays or image files into a float32 batch
at the size a `Preprocessing` declares."""
from __future__ import annotations

import os

import numpy as np

from .base import PersonalizeError, Preprocessing


def resize_bilinear(image: np.ndarray, size) -> np.ndarray:
    """Bilinear resize of [H, W, C] to `size` (half-pixel centres, edges clamped)."""
    h, w = image.shape[:2]
    oh, ow = size
    if (h, w) == (oh, ow):
        return image.astype(np.float32, copy=False)

    def axis(n_in, n_out):
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, fy = axis(h, oh)
    x0, x1, fx = axis(w, ow)
    img = image.astype(np.float32, copy=False)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bottom = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def read_image(path, channels: int) -> np.ndarray:
    """Decode an image file to [H, W, channels] uint8 with PIL if installed, else scikit-image."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PersonalizeError(f"image file {path!r} does not exist")
    try:
        from PIL import Image
    except ImportError:
        Image = None
    try:
        if Image is not None:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB" if channels == 3 else "L" if channels == 1 else im.mode))
        else:
            from skimage import io
            arr = io.imread(path)
    except ImportError:
        raise PersonalizeError("reading image files needs Pillow or scikit-image: pip install \"litetrain[images]\" "
                               "(or pip install pillow), or pass arrays instead") from None
    except Exception as e:
        raise PersonalizeError(f"cannot decode image {path!r}: {e}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[-1] != channels:
        if channels == 3 and arr.shape[-1] == 1:
            arr = np.repeat(arr, 3, -1)
        elif channels == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        else:
            raise PersonalizeError(f"image {path!r} has {arr.shape[-1]} channels; the model takes {channels}")
    return arr


def prepare_images(images, preprocessing: Preprocessing) -> np.ndarray:
    """Arrays ([H, W, C], [N, H, W, C] or a list of them, pixels in [0, scale]) or file paths ->
    float32 [N, height, width, channels] at the declared size."""
    p = preprocessing
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    elif isinstance(images, np.ndarray):
        images = [images]
    images = list(images)
    if not images:
        raise PersonalizeError("no images given")
    out = []
    for k, img in enumerate(images):
        if isinstance(img, (str, os.PathLike)):
            arr = read_image(img, p.channels).astype(np.float32) * np.float32(p.scale / 255.0)
        else:
            arr = np.asarray(img)
            if arr.ndim == 2 and p.channels == 1:
                arr = arr[:, :, None]
            if arr.ndim != 3 or arr.shape[-1] != p.channels or arr.dtype.kind not in "uif" or 0 in arr.shape:
                raise PersonalizeError(f"image {k}: expected an array [height, width, {p.channels}] of numbers "
                                       f"(or [N, height, width, {p.channels}]), got {arr.dtype}{list(arr.shape)}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise PersonalizeError(f"image {k} holds an infinity or a NaN")
        out.append(resize_bilinear(arr, p.size))
    return np.stack(out).astype(np.float32, copy=False)

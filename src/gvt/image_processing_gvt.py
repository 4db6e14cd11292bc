# Copyright 2025 The gvt authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Image processor for the GVT / LaVIT visual tokenizers (PIL backend, no torchvision needed).

This module imports only transformers, numpy and Pillow (no `gvt` imports), so it can be copied into a Hub repo
and loaded with `trust_remote_code=True`.
"""

import base64
import binascii
import contextlib
import io
import os
import re
import urllib.request
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size_for_max_height_width,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType, is_torch_available, logging

if TYPE_CHECKING:
    import torch

logger = logging.get_logger(__name__)

ImageSource = Union[
    Image.Image, np.ndarray, "torch.Tensor", str, os.PathLike, bytes, bytearray, BinaryIO, Mapping[str, Any]
]
"""One image: a PIL image, an array or tensor (HW, HWC or CHW), a file path or http(s) URL, encoded bytes, a binary
file object, or a `datasets` image dict (`{"bytes": ..., "path": ...}`)."""

# Modes whose pixels carry more than 8 bits (or are floats): read through numpy, not `Image.convert`, which clips.
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
# Modes with an alpha channel; composited onto white.
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
# Tolerance when checking that floating-point images lie in [0, 1].
_UNIT_RANGE_TOLERANCE = 1e-3
_VALID_CHANNELS = (1, 3, 4)


class GVTImageProcessorKwargs(ImagesKwargs, total=False):
    """
    min_size (`int`, *optional*, defaults to `self.min_size`):
        Smallest accepted height and width (in pixels) of an input image, before resizing.
    input_bit_depth (`int`, *optional*, defaults to `self.input_bit_depth`):
        Bit depth of integer pixel data: values lie in `[0, 2**input_bit_depth - 1]`. When `None`, `uint8` data is
        8-bit and `uint16` data (PIL modes `I;16*`) 16-bit; any other integer type (`int32`, PIL mode `I`, ...) is
        ambiguous and refused. Never guessed from the values.
    """

    min_size: int | None
    input_bit_depth: int | None


@contextlib.contextmanager
def restoring_auto_map(*owners: Any):
    """Saving with a registered Auto class attaches `auto_map` to the saved objects (transformers'
    `custom_object_save`); put each object's own `auto_map` (or none) back afterwards, so that a reloaded object
    compares equal to the one saved."""
    before = [(owner, "auto_map" in vars(owner), vars(owner).get("auto_map")) for owner in owners]
    try:
        yield
    finally:
        for owner, had, value in before:
            if had:
                owner.auto_map = value
            else:
                vars(owner).pop("auto_map", None)


def check_bit_depth(input_bit_depth: Any) -> None:
    """`input_bit_depth` must be `None` or an integer from 1 to 32."""
    if input_bit_depth is None:
        return
    if isinstance(input_bit_depth, bool) or not isinstance(input_bit_depth, (int, np.integer)):
        raise TypeError(f"`input_bit_depth` must be an integer from 1 to 32 or None, got {input_bit_depth!r}.")
    if not 1 <= int(input_bit_depth) <= 32:
        raise ValueError(f"`input_bit_depth` must be from 1 to 32, got {input_bit_depth}.")


# ---------------------------------------------------------------------------------------------------------------
# Decoding and conversion to RGB
# ---------------------------------------------------------------------------------------------------------------


def _fetch_url(url: str, name: str, timeout: float = 30.0) -> bytes:
    """The bytes behind an http(s) URL (transformers' `load_image` accepts URLs too); offline, a clear error."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            f"Could not open {name}: {url!r} is a URL and HF_HUB_OFFLINE is set; download the file first."
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except Exception as err:
        raise ValueError(f"Could not fetch {name} from {url!r}: {type(err).__name__}: {err}") from err


_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")


def _base64_bytes(text: str) -> bytes | None:
    """The bytes of a `data:image/...;base64,` URI or of a long base64 string (transformers' `load_image` accepts
    both), else None."""
    if text.startswith("data:image/") and "," in text:
        text = text.split(",", 1)[1]
    elif len(text) < 64 or not _BASE64.match(text):
        return None
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return None


def _decode(source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO, name: str) -> Image.Image:
    """Open and fully decode a path, encoded bytes or a binary file object, with Pillow's bomb limit enforced."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        encoded = None
        if path.startswith(("http://", "https://")):
            encoded = _fetch_url(path, name)
        elif not os.path.isfile(path):
            encoded = _base64_bytes(path)
            if encoded is None:
                raise ValueError(f"Could not open {name}: no such file {path[:200]!r}.")
        fp: Any = path if encoded is None else io.BytesIO(encoded)
        origin = f" from {path[:200]!r}"
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ValueError(f"Could not decode {name}: the bytes are empty.")
        fp = io.BytesIO(bytes(source))
        origin = ""
    else:
        fp = source
        origin = ""

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat the warning as the error it flags.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(fp)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(
            f"Could not open {name}{origin}: image too large for Pillow's decompression-bomb limit "
            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {err} Raise the limit only for trusted files."
        ) from err
    except UnidentifiedImageError as err:
        raise ValueError(
            f"Could not decode {name}{origin}: not a recognised image format, or the data is corrupt."
        ) from err
    except Exception as err:  # truncated data, broken chunks, decoder errors, ...
        raise ValueError(f"Could not decode {name}{origin}: {type(err).__name__}: {err}") from err
    return image


def _exif_transpose(image: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed EXIF block is ignored with a warning."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:
        logger.warning_once(f"Ignoring unreadable EXIF orientation of {name}: {err}")
        return image


def _pil_to_array(image: Image.Image, name: str, convert_rgb: bool = True, bit_depth: int | None = None) -> np.ndarray:
    """
    Convert a PIL image to an HWC array: `uint8` for 8-bit data, `float32` in [0, 1] for deeper data (modes `I;16*`,
    `I` with `bit_depth`, `F`).

    With `convert_rgb`, the result is RGB: transparent pixels are composited onto white, gray is repeated. Without it,
    the image keeps its own channels (`L` -> 1, `RGBA` -> 4); palette images must be converted.
    """
    try:
        image.load()
    except Exception as err:
        raise ValueError(f"Could not decode {name}: {type(err).__name__}: {err}") from err
    image = _exif_transpose(image, name)
    mode = image.mode
    if mode == "RGB" and ("transparency" not in image.info or not convert_rgb):
        return np.asarray(image)
    if mode in _HIGH_BIT_DEPTH_MODES or not convert_rgb:
        if mode in ("P", "PA"):
            raise ValueError(
                f"{name} is a palette image (PIL mode {mode!r}); set `do_convert_rgb=True` to convert it."
            )
        array = np.asarray(image)
        return _array_to_pixels(array, name, ChannelDimension.LAST, convert_rgb=convert_rgb, bit_depth=bit_depth)
    try:
        if mode in _ALPHA_MODES or "transparency" in image.info:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            image = image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"Could not convert {name} from PIL mode {mode!r} to RGB: {err}") from err
    return np.asarray(image)


def _infer_channel_axis(shape: tuple[int, ...], channels_first_default: bool, name: str) -> ChannelDimension:
    """
    Find the channel axis of a 3-D array. When both ends could be channels, an axis of size 3 wins; otherwise the
    container's convention decides (channels first for torch tensors, channels last for numpy arrays).
    """
    first, last = shape[0] in _VALID_CHANNELS, shape[-1] in _VALID_CHANNELS
    if first and last:
        if (shape[0] == 3) != (shape[-1] == 3):
            return ChannelDimension.FIRST if shape[0] == 3 else ChannelDimension.LAST
        return ChannelDimension.FIRST if channels_first_default else ChannelDimension.LAST
    if first:
        return ChannelDimension.FIRST
    if last:
        return ChannelDimension.LAST
    raise ValueError(
        f"{name} has shape {tuple(shape)}: no channel axis of size 1, 3 or 4 first or last "
        "(expected HW, HWC or CHW with 1 (gray), 3 (RGB) or 4 (RGBA) channels)."
    )


def _integer_to_unit_or_uint8(array: np.ndarray, name: str, bit_depth: int | None = None) -> np.ndarray:
    """
    Map integer pixels to `uint8` (8-bit data) or `float32` in [0, 1] (any other depth). The depth is `bit_depth`,
    else the dtype's (`uint8` 8, `uint16` 16, `bool` 1); other integer dtypes are ambiguous and refused: the values
    never decide (a dark 16-bit image looks like an 8-bit one).
    """
    if array.dtype == np.bool_ and bit_depth is None:
        return array.astype(np.uint8) * np.uint8(255)
    if bit_depth is None:
        if array.dtype == np.uint8:
            return array
        if array.dtype == np.uint16:  # either byte order (PIL "I;16B")
            return array.astype(np.float32) / np.float32(65535.0)
        raise ValueError(
            f"{name} has integer dtype {array.dtype} (values in [{int(array.min())}, {int(array.max())}]), whose bit "
            "depth is ambiguous: pass `input_bit_depth` (8 for 0-255, 16 for 0-65535, or your data's depth) to the "
            "image processor, or give uint8 / uint16 data."
        )
    check_bit_depth(bit_depth)
    maximum = 2 ** int(bit_depth) - 1
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > maximum:
        raise ValueError(
            f"{name} has integer values in [{low}, {high}], outside the {bit_depth}-bit range [0, {maximum}] "
            f"(`input_bit_depth={bit_depth}`)."
        )
    if bit_depth == 8:
        return array.astype(np.uint8, copy=False)
    return (array.astype(np.float64) / maximum).astype(np.float32)


def _array_to_pixels(
    array: np.ndarray,
    name: str,
    input_data_format: ChannelDimension | str | None = None,
    channels_first_default: bool = False,
    convert_rgb: bool = True,
    bit_depth: int | None = None,
) -> np.ndarray:
    """
    Convert an array (HW, HWC or CHW) to an HWC array, `uint8` (8-bit data) or `float32` (everything else).

    Floating-point data is checked for NaN/inf; other integer depths become floats in [0, 1] (see
    `_integer_to_unit_or_uint8`). With `convert_rgb` the result is RGB (gray repeated, alpha composited onto white:
    255 for `uint8`, 1 for floats); without it, the channels stay as they are (1, 3 or 4).
    """
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{name} has unsupported array dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"{name} has complex dtype {array.dtype}; images must be real-valued.")
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim == 3:
        if input_data_format is None:
            axis = _infer_channel_axis(array.shape, channels_first_default, name)
        else:
            axis = ChannelDimension(input_data_format)
        if axis == ChannelDimension.FIRST:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] not in _VALID_CHANNELS:
            raise ValueError(
                f"{name} has {array.shape[-1]} channels (shape {tuple(array.shape)}); expected 1, 3 or 4 channels."
            )
    else:
        raise ValueError(
            f"{name} has {array.ndim} dimensions (shape {tuple(array.shape)}); expected HW, HWC or CHW "
            "(or a 4-D batch of those)."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(array.shape)}).")

    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    else:
        array = _integer_to_unit_or_uint8(array, name, bit_depth)

    channels = array.shape[-1]
    if not convert_rgb or channels == 3:
        return array
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        alpha = array[..., 3:].astype(np.float32) / np.float32(255.0)
        rgb = array[..., :3].astype(np.float32)
        return np.rint(rgb * alpha + np.float32(255.0) * (1.0 - alpha)).astype(np.uint8)
    alpha = array[..., 3:]
    if alpha.min() < -_UNIT_RANGE_TOLERANCE or alpha.max() > 1.0 + _UNIT_RANGE_TOLERANCE:
        raise ValueError(f"{name} has a floating-point alpha channel outside [0, 1].")
    return array[..., :3] * alpha + (1.0 - alpha)


def _to_pixels(
    source: ImageSource,
    name: str,
    input_data_format: ChannelDimension | str | None = None,
    convert_rgb: bool = True,
    bit_depth: int | None = None,
) -> np.ndarray:
    """Turn any supported source into an HWC array (`uint8`, or `float32` for float / deeper data); RGB when
    `convert_rgb`."""
    if isinstance(source, Image.Image):
        return _pil_to_array(source, name, convert_rgb, bit_depth)
    if isinstance(source, np.ndarray):
        return _array_to_pixels(
            source, name, input_data_format, channels_first_default=False, convert_rgb=convert_rgb, bit_depth=bit_depth
        )
    if is_torch_available():
        import torch

        if isinstance(source, torch.Tensor):
            tensor = source.detach().cpu()
            if tensor.dtype in (torch.bfloat16, torch.float16):
                tensor = tensor.float()
            return _array_to_pixels(
                tensor.numpy(),
                name,
                input_data_format,
                channels_first_default=True,
                convert_rgb=convert_rgb,
                bit_depth=bit_depth,
            )
    if isinstance(source, Mapping):
        source = datasets_image_source(source, name)
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(source, "read"):
        return _pil_to_array(_decode(source, name), name, convert_rgb, bit_depth)
    raise TypeError(
        f"{name} has unsupported type {type(source).__name__}; expected a PIL image, a numpy array, a torch tensor, "
        "a file path or URL, encoded image bytes or a `datasets` image dict."
    )


def datasets_image_source(image: Mapping[str, Any], name: str = "image") -> bytes | str:
    """The encoded bytes (or else the path) of a `datasets` `Image` feature read with `decode=False`."""
    if image.get("bytes"):
        return image["bytes"]
    if image.get("path"):
        return image["path"]
    raise ValueError(f"{name} is a dict without 'bytes' or 'path' (a `datasets` image has one of them).")


def _check_min_size(array: np.ndarray, name: str, min_size: int) -> None:
    height, width = array.shape[:2]
    if height < min_size or width < min_size:
        raise ValueError(
            f"{name} is too small: {width}x{height} pixels (width x height); images must be at least "
            f"{min_size}x{min_size} (`min_size={min_size}`)."
        )


def load_image(source: ImageSource, *, min_size: int = 2, input_bit_depth: int | None = None) -> Image.Image:
    """
    Load one image as an RGB PIL image.

    Accepts a PIL image, a numpy array or torch tensor (HW, HWC or CHW; `uint8`, `uint16`, other integers with
    `input_bit_depth`, or floats in [0, 1]), a file path, an http(s) URL (not when `HF_HUB_OFFLINE` is set), a
    base64 data URI, encoded bytes, a binary file object or a `datasets` image dict. Applies the EXIF orientation,
    composites transparency onto white and scales deeper data to 8 bits.

    Raises:
        `ValueError`: undecodable, truncated or too large (decompression-bomb limit) data, an image smaller than
            `min_size` pixels per side, NaN values, integer data of unknown bit depth, or an unsupported shape.
        `TypeError`: an unsupported input type.
    """
    check_bit_depth(input_bit_depth)
    array = _to_pixels(source, "image", bit_depth=input_bit_depth)
    _check_min_size(array, "image", min_size)
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        if low < -_UNIT_RANGE_TOLERANCE or high > 1.0 + _UNIT_RANGE_TOLERANCE:
            raise ValueError(f"image has floating-point values in [{low:g}, {high:g}]; expected [0, 1].")
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _flatten_images(images: Any) -> list[Any]:
    """Flatten a single image, a list, a list of lists, or 4-D batch arrays / tensors into a flat list of images."""

    def is_batch(item: Any) -> bool:
        return hasattr(item, "ndim") and hasattr(item, "shape") and not isinstance(item, Image.Image)

    def split(item: Any) -> list[Any]:
        if is_batch(item) and item.ndim == 4:
            return list(item)
        if is_batch(item) and item.ndim > 4:
            raise ValueError(
                f"Got an array with {item.ndim} dimensions (shape {tuple(item.shape)}); expected HW, HWC or CHW "
                "images or a 4-D batch of them."
            )
        return [item]

    if isinstance(images, (list, tuple)):
        flat: list[Any] = []
        for item in images:
            if isinstance(item, (list, tuple)):
                for inner in item:
                    if isinstance(inner, (list, tuple)):
                        raise ValueError("Images nested more than two lists deep are not supported.")
                    flat.extend(split(inner))
            else:
                flat.extend(split(item))
    else:
        flat = split(images)
    if not flat:
        raise ValueError("No images were given (empty list).")
    return flat


# ---------------------------------------------------------------------------------------------------------------
# Image processor
# ---------------------------------------------------------------------------------------------------------------


class GVTImageProcessor(PilBackend):
    r"""
    Image processor for the GVT / LaVIT visual tokenizers; runs on Pillow and numpy only (no torchvision).

    Defaults follow the LaVIT release: RGB, bicubic resize to 224 x 224, rescale by 1/255, CLIP mean and std.

    Inputs can be PIL images (any mode: transparency is composited onto white, 16-bit data is scaled, EXIF
    orientation is applied), numpy arrays or torch tensors (HW, HWC or CHW; `uint8`, `uint16`, other integers with
    `input_bit_depth`, or floats in [0, 1]; 4-D batches), file paths, http(s) URLs, encoded bytes, `datasets` image
    dicts, and lists of any of those. Floating-point inputs are taken to be in [0, 1] already: `do_rescale` only
    rescales 8-bit data (deeper integer data is mapped to [0, 1] by its bit depth).

    Args:
        do_resize (`bool`, *optional*, defaults to `True`): Resize images to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`): Output size; also accepts
            `{"shortest_edge": n}` (keeps the aspect ratio).
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`): Pillow resampling filter.
        do_rescale (`bool`, *optional*, defaults to `True`): Rescale integer data by `rescale_factor`.
        rescale_factor (`float`, *optional*, defaults to `1/255`): Factor used by `do_rescale`.
        do_normalize (`bool`, *optional*, defaults to `True`): Normalise with `image_mean` and `image_std`.
        image_mean (`list[float]`, *optional*, defaults to the CLIP mean): Per-channel mean.
        image_std (`list[float]`, *optional*, defaults to the CLIP std): Per-channel standard deviation.
        do_convert_rgb (`bool`, *optional*, defaults to `True`): Convert non-RGB inputs to RGB; when `False`,
            images keep their channels (gray 1, RGBA 4: give `image_mean` / `image_std` with as many values).
        min_size (`int`, *optional*, defaults to 2): Smallest accepted input height and width, in pixels.
        input_bit_depth (`int`, *optional*): Bit depth of integer pixel data (values in `[0, 2**input_bit_depth -
            1]`). By default `uint8` is 8-bit and `uint16` 16-bit; other integer data (`int32` arrays, PIL mode `I`)
            needs it. Bit depths are never guessed from pixel values.
    """

    valid_kwargs = GVTImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"height": 224, "width": 224}
    resample = PILImageResampling.BICUBIC
    do_center_crop = False
    crop_size = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_convert_rgb = True
    min_size = 2
    input_bit_depth = None

    def __init__(self, **kwargs: Unpack[GVTImageProcessorKwargs]):
        # Saving writes `auto_map` from the registered Auto class; a loaded one is not a setting of this processor.
        kwargs.pop("auto_map", None)
        super().__init__(**kwargs)
        if not isinstance(self.min_size, int) or self.min_size < 1:
            raise ValueError(f"`min_size` must be a positive integer, got {self.min_size!r}.")
        check_bit_depth(self.input_bit_depth)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as transformers does (`auto_map` included in the file); this object keeps no `auto_map`."""
        with restoring_auto_map(self):
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def preprocess(
        self, images: ImageSource | list[ImageSource], **kwargs: Unpack[GVTImageProcessorKwargs]
    ) -> BatchFeature:
        """
        Preprocess one image or a batch into `pixel_values` of shape `[batch, 3, height, width]` (float32; other
        channel counts only with `do_convert_rgb=False`).

        Keyword arguments override the processor's attributes for this call (see the class docstring); pass
        `return_tensors="pt"` for a torch tensor, `"np"` for a numpy array.
        """
        return super().preprocess(images, **kwargs)

    def fetch_images(self, image_url_or_urls: Any) -> Any:
        """Open paths, URLs, encoded bytes and `datasets` image dicts (or nested lists of them) as PIL images, in
        their own mode (conversion happens in `preprocess`); other images pass through unchanged."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        source = image_url_or_urls
        if isinstance(source, Mapping):
            source = datasets_image_source(source, "image")
        if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
            return _decode(source, "image")
        return image_url_or_urls

    def _prepare_image_like_inputs(
        self,
        images: Any,
        *args: Any,
        do_convert_rgb: bool | None = None,
        input_data_format: ChannelDimension | str | None = None,
        min_size: int | None = None,
        input_bit_depth: int | None = None,
        **kwargs: Any,
    ) -> list[np.ndarray]:
        """Decode and validate every image into an HWC array (`uint8`, or `float32` for float / deeper data), RGB
        unless `do_convert_rgb=False`."""
        min_size = self.min_size if min_size is None else min_size
        bit_depth = self.input_bit_depth if input_bit_depth is None else input_bit_depth
        check_bit_depth(bit_depth)
        convert_rgb = True if do_convert_rgb is None else do_convert_rgb
        prepared = []
        for index, image in enumerate(_flatten_images(images)):
            name = f"image {index}"
            array = _to_pixels(
                image, name, input_data_format=input_data_format, convert_rgb=convert_rgb, bit_depth=bit_depth
            )
            _check_min_size(array, name, min_size)
            prepared.append(array)
        channels = sorted({array.shape[-1] for array in prepared})
        if len(channels) > 1:
            raise ValueError(
                f"Images have different channel counts {channels} with `do_convert_rgb=False`; convert them to RGB "
                "(`do_convert_rgb=True`) or give images with the same channels."
            )
        return prepared

    @staticmethod
    def _output_size(height: int, width: int, size: SizeDict) -> tuple[int, int]:
        """Target `(height, width)` for `size`, following transformers' size-dict conventions."""
        if size.height and size.width:
            return size.height, size.width
        if size.shortest_edge and size.longest_edge:
            return get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        if size.shortest_edge:
            dummy = np.empty((height, width, 1), dtype=np.uint8)
            return get_resize_output_image_size(
                dummy, size=size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.LAST
            )
        if size.max_height and size.max_width:
            return get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
        raise ValueError(
            f"`size` must contain 'height' and 'width', 'shortest_edge' or 'max_height' and 'max_width'; got {size}."
        )

    @staticmethod
    def _resize_array(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
        """Resize an HWC array with Pillow; `uint8` stays `uint8`; other channel counts and floats are resized per
        channel (mode `L` or `F`)."""
        if image.shape[:2] == (height, width):
            return image
        if image.dtype == np.uint8 and image.shape[-1] == 3:  # (Pillow would premultiply an RGBA image's alpha)
            return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((width, height), resample=resample))
        channels = [
            np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize((width, height), resample=resample))
            for c in range(image.shape[-1])
        ]
        return np.stack(channels, axis=-1)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | int | None,
        do_center_crop: bool,
        crop_size: SizeDict | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...] | None,
        image_std: float | tuple[float, ...] | None,
        do_pad: bool | None = None,
        return_tensors: str | TensorType | None = None,
        data_format: ChannelDimension | str | None = ChannelDimension.FIRST,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize, crop, stack, rescale and normalise the prepared HWC arrays into `[batch, 3, height, width]`."""
        if do_pad:
            raise ValueError("`do_pad` is not supported by GVTImageProcessor; resize images to a common size instead.")
        resample = PILImageResampling.BICUBIC if resample is None else resample

        scales = []
        processed = []
        for index, image in enumerate(images):
            if image.dtype == np.uint8:
                scales.append(rescale_factor if do_rescale else 1.0)
            else:
                if do_rescale:
                    low, high = float(image.min()), float(image.max())
                    if low < -_UNIT_RANGE_TOLERANCE or high > 1.0 + _UNIT_RANGE_TOLERANCE:
                        raise ValueError(
                            f"image {index} is floating-point with values in [{low:g}, {high:g}]; floating-point "
                            "images must be in [0, 1] (pass uint8 data for the 0-255 range, or set do_rescale=False)."
                        )
                scales.append(1.0)
            if do_resize:
                height, width = self._output_size(image.shape[0], image.shape[1], size)
                image = self._resize_array(image, height, width, int(resample))
            if do_center_crop:
                image = self._center_crop_array(image, crop_size, index)
            processed.append(image)

        shapes = {image.shape for image in processed}
        if len(shapes) > 1:
            found = sorted(f"{shape[1]}x{shape[0]}" for shape in shapes)
            raise ValueError(
                f"Images have different sizes after preprocessing ({', '.join(found)}, width x height); "
                "set `do_resize=True` with a fixed `size` to batch them."
            )

        batch = np.stack(processed).astype(np.float32)  # [batch, height, width, 3]
        scale = np.asarray(scales, dtype=np.float32)[:, None, None, None]
        if np.any(scale != 1.0):
            batch *= scale
        if do_normalize:
            mean = np.asarray(image_mean, dtype=np.float32).reshape(-1)
            std = np.asarray(image_std, dtype=np.float32).reshape(-1)
            channels = batch.shape[-1]
            if mean.size not in (1, channels) or std.size not in (1, channels):
                raise ValueError(
                    f"`image_mean` ({mean.size} values) and `image_std` ({std.size} values) must have one value per "
                    f"channel ({channels}); images keep their channels with `do_convert_rgb=False`."
                )
            batch = (batch - mean) / std
        if data_format is None or ChannelDimension(data_format) == ChannelDimension.FIRST:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

        pixel_values = batch if return_tensors is not None else list(batch)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    @staticmethod
    def _center_crop_array(image: np.ndarray, crop_size: SizeDict | None, index: int) -> np.ndarray:
        """Center-crop an HWC array to `crop_size`."""
        if crop_size is None or not (crop_size.height and crop_size.width):
            raise ValueError(f"`crop_size` must contain 'height' and 'width' for center cropping; got {crop_size}.")
        height, width = image.shape[:2]
        if crop_size.height > height or crop_size.width > width:
            raise ValueError(
                f"image {index} ({width}x{height}) is smaller than crop_size "
                f"({crop_size.width}x{crop_size.height}, width x height)."
            )
        top = (height - crop_size.height) // 2
        left = (width - crop_size.width) // 2
        return image[top : top + crop_size.height, left : left + crop_size.width]


__all__ = ["GVTImageProcessor", "GVTImageProcessorKwargs", "datasets_image_source", "load_image"]

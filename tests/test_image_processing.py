"""Tests for `gvt.image_processing_gvt`: shapes, numerics, serialisation, input robustness and clear errors."""

import base64
import functools
import http.server
import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from PIL import Image

from gvt.image_processing_gvt import GVTImageProcessor, load_image

torch.set_num_threads(1)

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference" / "tiny_a"


def raw_processor(**kwargs) -> GVTImageProcessor:
    """A processor that only converts and rescales, so outputs are RGB values in [0, 1]."""
    return GVTImageProcessor(do_resize=False, do_normalize=False, **kwargs)


def rgb_values(image, **kwargs) -> np.ndarray:
    """The [3, H, W] float output of `raw_processor` for one image."""
    return raw_processor(**kwargs)(image, return_tensors="np")["pixel_values"][0]


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_kwargs)
    return buffer.getvalue()


def random_rgb(height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Defaults, shapes, numerics
# --------------------------------------------------------------------------------------------------------------


def test_defaults_follow_lavit_release():
    processor = GVTImageProcessor()
    assert dict(processor.size) == {"height": 224, "width": 224}
    assert int(processor.resample) == int(Image.Resampling.BICUBIC)
    assert processor.rescale_factor == pytest.approx(1 / 255)
    np.testing.assert_allclose(processor.image_mean, CLIP_MEAN)
    np.testing.assert_allclose(processor.image_std, CLIP_STD)
    assert processor.do_convert_rgb and processor.do_resize and processor.do_rescale and processor.do_normalize
    assert processor.min_size == 2
    assert processor.model_input_names == ["pixel_values"]


def test_output_shape_and_dtype():
    images = [Image.fromarray(random_rgb(30, 50, seed=1)), Image.fromarray(random_rgb(64, 20, seed=2))]
    out = GVTImageProcessor()(images, return_tensors="pt")
    assert list(out.keys()) == ["pixel_values"]
    assert out["pixel_values"].shape == (2, 3, 224, 224)
    assert out["pixel_values"].dtype == torch.float32
    single = GVTImageProcessor()(images[0], return_tensors="pt")["pixel_values"]
    assert single.shape == (1, 3, 224, 224)
    torch.testing.assert_close(single[0], out["pixel_values"][0])


def test_normalisation_matches_numpy_reference():
    image = random_rgb(224, 224, seed=3)
    out = GVTImageProcessor()(image, return_tensors="np")["pixel_values"][0]
    expected = ((image.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_resize_to_configured_size_with_pillow_bicubic():
    image = random_rgb(40, 60, seed=4)
    processor = GVTImageProcessor(size={"height": 24, "width": 36}, do_normalize=False)
    out = processor(image, return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 24, 36)
    expected = np.asarray(Image.fromarray(image).resize((36, 24), resample=Image.Resampling.BICUBIC)) / 255.0
    np.testing.assert_allclose(out[0], expected.transpose(2, 0, 1), atol=1e-6)


def test_resize_shortest_edge_and_call_time_override():
    processor = GVTImageProcessor(size={"shortest_edge": 20})
    assert processor(random_rgb(40, 80), return_tensors="pt")["pixel_values"].shape == (1, 3, 20, 40)
    out = processor(random_rgb(40, 80), size={"height": 16, "width": 16}, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 3, 16, 16)


def test_float_inputs_are_resized_without_quantisation():
    image = np.random.default_rng(5).random((3, 20, 20), dtype=np.float32)
    out = GVTImageProcessor(size={"height": 10, "width": 10}, do_normalize=False)(image, return_tensors="np")
    expected = np.stack(
        [np.asarray(Image.fromarray(c).resize((10, 10), resample=Image.Resampling.BICUBIC)) for c in image]
    )
    np.testing.assert_allclose(out["pixel_values"][0], expected, atol=1e-6)


def test_channels_last_output_and_list_without_return_tensors():
    processor = GVTImageProcessor(size={"height": 8, "width": 8})
    out = processor([random_rgb(), random_rgb(seed=1)], data_format="channels_last", return_tensors="np")
    assert out["pixel_values"].shape == (2, 8, 8, 3)
    listed = processor([random_rgb(), random_rgb(seed=1)])["pixel_values"]
    assert isinstance(listed, list) and len(listed) == 2 and listed[0].shape == (3, 8, 8)


def test_reference_fixture_pixel_values():
    path = FIXTURE_DIR / "io.safetensors"
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    raw_images, expected = tensors["raw_images"], tensors["pixel_values"]
    processor = GVTImageProcessor(do_resize=False, do_rescale=False)
    out = processor(list(raw_images), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)
    # A 4-D batch array, float inputs under the default do_rescale=True and a size-112 resize agree too.
    batch = GVTImageProcessor(size={"height": 112, "width": 112})(raw_images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(batch, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Serialisation
# --------------------------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tmp_path):
    processor = GVTImageProcessor(
        size={"height": 32, "width": 40},
        resample=Image.Resampling.BILINEAR,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
        min_size=4,
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "GVTImageProcessor"
    assert saved["size"] == {"height": 32, "width": 40}
    assert saved["min_size"] == 4

    loaded = GVTImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    image = random_rgb(50, 50, seed=6)
    np.testing.assert_array_equal(
        loaded(image, return_tensors="np")["pixel_values"], processor(image, return_tensors="np")["pixel_values"]
    )
    with pytest.raises(ValueError, match="too small"):
        loaded(random_rgb(3, 3))


# --------------------------------------------------------------------------------------------------------------
# Input types
# --------------------------------------------------------------------------------------------------------------


def test_all_input_types_agree(tmp_path):
    image = random_rgb(20, 30, seed=7)
    png = encode(Image.fromarray(image))
    path = tmp_path / "image.png"
    path.write_bytes(png)
    processor = GVTImageProcessor(size={"height": 16, "width": 16})
    reference = processor(Image.fromarray(image), return_tensors="np")["pixel_values"][0]
    inputs = [
        image,  # HWC uint8
        image.transpose(2, 0, 1),  # CHW uint8
        torch.from_numpy(image.transpose(2, 0, 1).copy()),  # CHW uint8 tensor
        str(path),
        path,
        png,
        bytearray(png),
        io.BytesIO(png),
    ]
    out = processor(inputs, return_tensors="np")["pixel_values"]
    assert out.shape == (len(inputs), 3, 16, 16)
    for row in out:
        np.testing.assert_allclose(row, reference, atol=1e-6)
    # Floats in [0, 1] (numpy HWC, torch CHW incl. half precision) match up to bicubic rounding of uint8 data.
    unit = image.astype(np.float32) / 255.0
    floats = [unit, torch.from_numpy(unit.transpose(2, 0, 1).copy()), torch.from_numpy(unit).permute(2, 0, 1).half()]
    out = processor(floats, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(out, np.broadcast_to(reference, out.shape), atol=0.05)


def test_nested_lists_and_batches_are_flattened():
    processor = GVTImageProcessor(size={"height": 8, "width": 8})
    batch = np.stack([random_rgb(seed=s) for s in range(3)])  # [3, H, W, C]
    assert processor(batch, return_tensors="pt")["pixel_values"].shape == (3, 3, 8, 8)
    nested = [[random_rgb()], [random_rgb(seed=1), random_rgb(seed=2)]]
    assert processor(nested, return_tensors="pt")["pixel_values"].shape == (3, 3, 8, 8)


def test_ambiguous_shapes_follow_container_convention():
    hwc = np.zeros((4, 4, 3), dtype=np.uint8)
    hwc[..., 0] = 255  # red, channels last
    np.testing.assert_allclose(rgb_values(hwc)[:, 0, 0], [1.0, 0.0, 0.0])
    chw = torch.zeros(3, 4, 4)
    chw[0] = 1.0  # red, channels first
    np.testing.assert_allclose(rgb_values(chw)[:, 0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(rgb_values(chw.permute(1, 2, 0), input_data_format="channels_last")[:, 0, 0], [1, 0, 0])
    # Both ends could be channels: an axis of size 3 wins over 1 or 4, ties follow the container.
    np.testing.assert_allclose(rgb_values(chw.numpy())[:, 0, 0], [1.0, 0.0, 0.0])  # numpy [3, 4, 4]
    np.testing.assert_allclose(rgb_values(torch.from_numpy(hwc))[:, 0, 0], [1.0, 0.0, 0.0])  # torch [4, 4, 3]
    square = np.zeros((4, 8, 4), dtype=np.uint8)  # numpy tie -> channels last: RGBA, fully transparent -> white
    np.testing.assert_allclose(rgb_values(square), 1.0)


def test_grayscale_and_rgba_arrays():
    gray = np.full((4, 4), 51, dtype=np.uint8)
    np.testing.assert_allclose(rgb_values(gray)[:, 0, 0], [0.2, 0.2, 0.2], atol=1e-6)
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[0, 1] = (255, 0, 0, 255)  # opaque red
    values = rgb_values(rgba)
    np.testing.assert_allclose(values[:, 0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(values[:, 0, 1], [1.0, 0.0, 0.0])
    rgba_float = np.zeros((4, 4, 4), dtype=np.float32)  # fully transparent
    np.testing.assert_allclose(rgb_values(rgba_float), 1.0)
    sixteen_bit = np.full((4, 4, 3), 65535, dtype=np.uint16)
    np.testing.assert_allclose(rgb_values(sixteen_bit), 1.0)


# --------------------------------------------------------------------------------------------------------------
# PIL modes
# --------------------------------------------------------------------------------------------------------------


def _palette_image(transparent: bool) -> Image.Image:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [200, 100, 50] + [0, 0, 0] * 254)
    image.putpixel((1, 0), 1)
    if transparent:
        image.info["transparency"] = 0
    return image


def _rgba_image() -> Image.Image:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black
    return image


def _image_16bit(value: int) -> Image.Image:
    return Image.fromarray(np.full((4, 4), value, dtype=np.uint16))


HALF_BLACK = 1.0 - 128 / 255  # black at alpha 128 over white

MODE_CASES = {
    "L": (Image.new("L", (4, 4), 51), {(0, 0): [0.2, 0.2, 0.2]}),
    "LA transparent": (Image.new("LA", (4, 4), (0, 0)), {(0, 0): [1.0, 1.0, 1.0]}),
    "LA opaque": (Image.new("LA", (4, 4), (51, 255)), {(0, 0): [0.2, 0.2, 0.2]}),
    "P": (_palette_image(False), {(0, 0): [10 / 255, 20 / 255, 30 / 255], (1, 0): [200 / 255, 100 / 255, 50 / 255]}),
    "P transparency": (_palette_image(True), {(0, 0): [1.0, 1.0, 1.0], (1, 0): [200 / 255, 100 / 255, 50 / 255]}),
    "RGBA": (_rgba_image(), {(0, 0): [1.0, 1.0, 1.0], (1, 0): [1.0, 0.0, 0.0], (2, 0): [HALF_BLACK] * 3}),
    "CMYK": (Image.new("CMYK", (4, 4), (0, 255, 0, 0)), {(0, 0): [1.0, 0.0, 1.0]}),
    "I;16 white": (_image_16bit(65535), {(0, 0): [1.0, 1.0, 1.0]}),
    "I;16 mid": (_image_16bit(32768), {(0, 0): [32768 / 65535] * 3}),
    "1 white": (Image.new("1", (4, 4), 1), {(0, 0): [1.0, 1.0, 1.0]}),
    "1 black": (Image.new("1", (4, 4), 0), {(0, 0): [0.0, 0.0, 0.0]}),
    "F": (Image.fromarray(np.full((4, 4), 0.25, dtype=np.float32)), {(0, 0): [0.25, 0.25, 0.25]}),
}


@pytest.mark.parametrize("case", list(MODE_CASES))
def test_pil_modes_convert_to_rgb(case):
    image, expected = MODE_CASES[case]
    values = rgb_values(image)
    assert values.shape == (3, 4, 4)
    for (x, y), rgb in expected.items():
        np.testing.assert_allclose(values[:, y, x], rgb, atol=1 / 255 + 1e-6, err_msg=f"{case} at ({x}, {y})")


def test_16bit_png_round_trip_is_scaled_not_clipped():
    gradient = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    decoded = Image.open(io.BytesIO(encode(Image.fromarray(gradient))))
    assert decoded.mode.startswith("I")
    values = rgb_values(decoded)
    np.testing.assert_allclose(values[0], gradient / 65535.0, atol=1e-6)
    assert load_image(encode(Image.fromarray(gradient))).getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    # 40 wide x 20 high: left half red, right half blue; Orientation 6 means "rotate 90 degrees clockwise to view".
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = encode(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)

    values = rgb_values(jpeg)
    assert values.shape == (3, 40, 20)  # now 20 wide x 40 high
    top, bottom = values[:, 5, 10], values[:, 35, 10]  # the old left half is now on top
    assert top[0] > 0.9 and top[2] < 0.1
    assert bottom[2] > 0.9 and bottom[0] < 0.1
    assert load_image(jpeg).size == (20, 40)
    # Also applied to an already-opened PIL image.
    assert rgb_values(Image.open(io.BytesIO(jpeg))).shape == (3, 40, 20)


def test_load_image_helper(tmp_path):
    rgba = _rgba_image()
    path = tmp_path / "rgba.png"
    rgba.save(path)
    for source in (path, str(path), encode(rgba), rgba):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (4, 4)
        assert image.getpixel((0, 0)) == (255, 255, 255)
        assert image.getpixel((1, 0)) == (255, 0, 0)
    assert load_image(np.full((3, 4, 4), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ValueError, match="Could not decode image"):
        load_image(b"not an image")


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


def test_corrupt_bytes_name_the_image():
    good = encode(Image.fromarray(random_rgb()))
    with pytest.raises(ValueError, match=r"Could not decode image 1: not a recognised image format"):
        GVTImageProcessor()([good, b"definitely not an image"])
    with pytest.raises(ValueError, match=r"Could not decode image 2: "):
        GVTImageProcessor()([good, good, b"\x89PNG\r\n\x1a\n garbage after a PNG signature"])
    with pytest.raises(ValueError, match="bytes are empty"):
        GVTImageProcessor()(b"")


def test_truncated_png_raises():
    png = encode(Image.fromarray(random_rgb(64, 64)))
    with pytest.raises(ValueError, match=r"Could not decode image 0: .*truncated"):
        GVTImageProcessor()(png[: len(png) // 2])


def test_missing_file_and_url(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        GVTImageProcessor()(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a URL and HF_HUB_OFFLINE is set"):
        GVTImageProcessor()("https://example.com/cat.png")


def test_urls_and_data_uris_are_read_when_online(tmp_path, monkeypatch):
    """An http URL (served from this machine) and a base64 data URI decode like the file they hold."""
    image = Image.fromarray(random_rgb(20, 30))
    (tmp_path / "scene.png").write_bytes(encode(image))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        expected = rgb_values(image)
        np.testing.assert_array_equal(rgb_values(f"{url}/scene.png"), expected)
        with pytest.raises(ValueError, match=r"Could not fetch image 0 from .*missing.png.*404"):
            GVTImageProcessor()(f"{url}/missing.png")
    finally:
        server.shutdown()
        server.server_close()
    data_uri = "data:image/png;base64," + base64.b64encode(encode(image)).decode()
    np.testing.assert_array_equal(rgb_values(data_uri), expected)
    assert load_image(data_uri).size == (30, 20)


@pytest.mark.parametrize(
    "image",
    [Image.new("RGB", (1, 1)), np.zeros((1, 1, 3), dtype=np.uint8), np.zeros((1, 5, 3), dtype=np.uint8)],
    ids=["pil-1x1", "array-1x1", "array-5x1"],
)
def test_too_small_image_raises(image):
    with pytest.raises(ValueError, match=r"image 0 is too small: \d+x1 pixels"):
        GVTImageProcessor()(image)


def test_min_size_is_configurable():
    GVTImageProcessor(min_size=1)(np.zeros((1, 1, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"at least 8x8"):
        GVTImageProcessor()(random_rgb(6, 6), min_size=8)
    with pytest.raises(ValueError, match="min_size"):
        GVTImageProcessor(min_size=0)


@pytest.mark.parametrize("factor", [1.5, 4.0], ids=["warning-band", "error-band"])
def test_decompression_bomb_limit_raises(monkeypatch, factor):
    png = encode(Image.fromarray(random_rgb(32, 32)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", int(32 * 32 / factor))
    with pytest.raises(ValueError, match=r"image too large .*decompression-bomb limit"):
        GVTImageProcessor()(png)
    with pytest.raises(ValueError, match="decompression-bomb limit"):
        load_image(png)


def test_nan_and_out_of_range_floats_raise():
    image = np.full((3, 8, 8), 0.5, dtype=np.float32)
    image[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        GVTImageProcessor()(image)
    with pytest.raises(ValueError, match="NaN or infinite"):
        GVTImageProcessor()(torch.from_numpy(image))
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        GVTImageProcessor()(np.full((8, 8, 3), 200.0, dtype=np.float32))
    # With do_rescale=False, floats pass through untouched.
    out = raw_processor(do_rescale=False)(np.full((8, 8, 3), 200.0, dtype=np.float32), return_tensors="np")
    np.testing.assert_allclose(out["pixel_values"], 200.0)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((8, 8, 2), dtype=np.uint8), "no channel axis of size 1, 3 or 4"),
        (np.zeros((2, 8, 8), dtype=np.uint8), "no channel axis of size 1, 3 or 4"),
        (np.zeros((1, 2, 8, 8, 3), dtype=np.uint8), "5 dimensions"),
        (np.zeros((8,), dtype=np.uint8), "1 dimensions"),
        (np.full((8, 8, 3), 70000, dtype=np.int32), r"integer dtype int32 .*bit depth is ambiguous"),
    ],
    ids=["two-channels-last", "two-channels-first", "5-D", "1-D", "int-range"],
)
def test_bad_arrays_raise(image, message):
    with pytest.raises(ValueError, match=message):
        GVTImageProcessor()(image)


def test_explicit_channel_format_with_wrong_channel_count_raises():
    with pytest.raises(ValueError, match="has 8 channels"):
        GVTImageProcessor()(np.zeros((3, 8, 8), dtype=np.uint8), input_data_format="channels_last")


def test_empty_inputs_and_bad_types_raise():
    with pytest.raises(ValueError, match="No images"):
        GVTImageProcessor()([])
    with pytest.raises(TypeError, match="unsupported type int"):
        GVTImageProcessor()([random_rgb(), 3])


def test_mismatched_sizes_without_resize_raise():
    with pytest.raises(ValueError, match="different sizes"):
        GVTImageProcessor(do_resize=False)([random_rgb(8, 8), random_rgb(8, 10)])


def test_do_convert_rgb_false_keeps_the_channels():
    processor = GVTImageProcessor(do_convert_rgb=False, size={"height": 8, "width": 8})
    assert processor(Image.fromarray(random_rgb()), return_tensors="pt")["pixel_values"].shape == (1, 3, 8, 8)
    rgba = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    four = processor(rgba, image_mean=[0.0] * 4, image_std=[1.0] * 4, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(four[0], rgba.transpose(2, 0, 1) / 255.0, atol=1e-6)  # alpha kept, not composited
    pil = processor(Image.fromarray(rgba), image_mean=[0.0] * 4, image_std=[1.0] * 4, return_tensors="np")
    np.testing.assert_allclose(pil["pixel_values"], four)
    gray = processor(Image.new("L", (8, 8), 51), image_mean=[0.0], image_std=[1.0], return_tensors="np")
    np.testing.assert_allclose(gray["pixel_values"], np.full((1, 1, 8, 8), 0.2), atol=1e-6)
    with pytest.raises(ValueError, match=r"one value per channel \(4\)"):
        processor(rgba)
    with pytest.raises(ValueError, match=r"different channel counts \[3, 4\]"):
        processor([random_rgb(8, 8), rgba], image_mean=[0.0] * 4, image_std=[1.0] * 4)
    with pytest.raises(ValueError, match="palette image"):
        processor(_palette_image(False))
    # Converted (the default), the same RGBA image is composited onto white.
    assert GVTImageProcessor(size={"height": 8, "width": 8})(rgba, return_tensors="pt")["pixel_values"].shape[1] == 3


# --------------------------------------------------------------------------------------------------------------
# Integer bit depth: from the dtype or the `input_bit_depth` argument, never from the values
# --------------------------------------------------------------------------------------------------------------


def test_bit_depth_comes_from_the_dtype_not_the_values():
    dark = np.full((4, 4, 3), 200, dtype=np.uint16)  # a dark 16-bit image, not a bright 8-bit one
    np.testing.assert_allclose(rgb_values(dark), 200 / 65535, atol=1e-7)
    np.testing.assert_allclose(rgb_values(Image.fromarray(dark[..., 0])), 200 / 65535, atol=1e-7)  # PIL "I;16"
    np.testing.assert_allclose(rgb_values(np.full((4, 4, 3), 200, dtype=np.uint8)), 200 / 255, atol=1e-6)


@pytest.mark.parametrize(
    "image",
    [
        np.full((4, 4, 3), 200, dtype=np.int32),
        np.full((4, 4, 3), 300, dtype=np.int64),
        torch.full((3, 4, 4), 200, dtype=torch.int64),
        Image.fromarray(np.full((4, 4), 200, dtype=np.int32)),  # PIL mode "I"
    ],
    ids=["int32", "int64", "torch-int64", "pil-I"],
)
def test_ambiguous_integer_images_are_refused_without_a_bit_depth(image):
    with pytest.raises(ValueError, match="bit depth is ambiguous: pass `input_bit_depth`"):
        GVTImageProcessor()(image)
    with pytest.raises(ValueError, match="bit depth is ambiguous"):
        load_image(image)


def test_explicit_bit_depth_for_integer_images():
    values = np.full((4, 4, 3), 200, dtype=np.int32)
    np.testing.assert_allclose(rgb_values(values, input_bit_depth=16), 200 / 65535, atol=1e-7)
    np.testing.assert_allclose(rgb_values(values, input_bit_depth=8), 200 / 255, atol=1e-6)
    np.testing.assert_allclose(rgb_values(values.astype(np.uint16), input_bit_depth=12), 200 / 4095, atol=1e-7)
    pil_i = Image.fromarray(np.full((4, 4), 300, dtype=np.int32))
    np.testing.assert_allclose(
        raw_processor()(pil_i, input_bit_depth=16, return_tensors="np")["pixel_values"], 300 / 65535
    )
    assert load_image(pil_i, input_bit_depth=16).getpixel((0, 0)) == (1, 1, 1)
    # 8-bit data read at 8 bits is bit-identical to uint8 input.
    np.testing.assert_array_equal(rgb_values(values, input_bit_depth=8), rgb_values(values.astype(np.uint8)))
    with pytest.raises(ValueError, match=r"outside the 8-bit range \[0, 255\]"):
        GVTImageProcessor(input_bit_depth=8)(np.full((4, 4, 3), 300, dtype=np.int32))
    with pytest.raises(ValueError, match=r"integer values in \[-1, 0\]"):
        GVTImageProcessor(input_bit_depth=16)(np.array([[-1, 0], [0, 0]], dtype=np.int32))
    with pytest.raises(ValueError, match="from 1 to 32"):
        GVTImageProcessor(input_bit_depth=0)
    with pytest.raises(StrictDataclassFieldValidationError, match="input_bit_depth"):  # transformers' kwarg typing
        GVTImageProcessor()(values, input_bit_depth=8.0)


def test_bit_depth_round_trips_through_save_pretrained(tmp_path):
    GVTImageProcessor(input_bit_depth=12).save_pretrained(tmp_path)
    assert GVTImageProcessor.from_pretrained(tmp_path).input_bit_depth == 12

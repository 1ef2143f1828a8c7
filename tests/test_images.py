"""The one preprocessing function: every format and colour mode becomes RGB in [0, 1]."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf import images

SIZE = 24
RED = (220, 30, 30)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def red_square(mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", (40, 30), RED).convert(mode)


def preprocess(data: bytes, grayscale: bool = False) -> np.ndarray:
    return images.decode_and_resize(tf.constant(data), images.Preprocessing(SIZE, grayscale)).numpy()


@pytest.mark.parametrize("fmt, mode", [
    ("JPEG", "RGB"), ("PNG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("PNG", "RGBA"), ("JPEG", "CMYK"),
])
def test_colour_formats_decode_to_the_same_rgb(fmt, mode):
    picture = preprocess(encode(red_square(mode), fmt))
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.float32
    # JPEG and GIF palettes are lossy; the colour must still be clearly red.
    np.testing.assert_allclose(picture.mean(axis=(0, 1)), np.array(RED) / 255, atol=0.06)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_greyscale_files_become_three_equal_channels(fmt):
    picture = preprocess(encode(Image.new("L", (20, 50), 100), fmt))
    assert picture.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(picture, 100 / 255, atol=0.01)


def test_transparent_pixels_become_white_not_black():
    image = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (0, 0, 30, 15))     # top half opaque black ink
    picture = preprocess(encode(image, "PNG"))
    assert picture[: SIZE // 2 - 2].max() < 0.05
    assert picture[SIZE // 2 + 2:].min() > 0.95


def test_grey_level_alpha_png_composites_onto_white():
    image = Image.new("LA", (10, 10), (0, 128))     # black at half opacity
    np.testing.assert_allclose(preprocess(encode(image, "PNG")), 127 / 255, atol=0.01)


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), colour).convert("P") for colour in (RED, (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_allclose(preprocess(buffer.getvalue()).mean(axis=(0, 1)), np.array(RED) / 255, atol=0.06)


def test_values_stay_in_unit_range_after_resizing_sharp_edges():
    stripes = Image.fromarray((np.indices((97, 61)).sum(axis=0) % 2 * 255).astype(np.uint8))
    picture = preprocess(encode(stripes, "PNG"))
    assert picture.min() >= 0.0 and picture.max() <= 1.0


def test_grayscale_option_removes_colour():
    picture = preprocess(encode(red_square(), "PNG"), grayscale=True)
    np.testing.assert_allclose(picture[..., 0], picture[..., 1], atol=1e-6)
    np.testing.assert_allclose(picture[..., 0], picture[..., 2], atol=1e-6)
    assert 0.1 < picture.mean() < 0.6


def test_batch_preprocessing_equals_one_by_one():
    options = images.Preprocessing(SIZE, grayscale=False)
    files = [encode(red_square(), "JPEG"), encode(Image.new("L", (50, 20), 30), "PNG"),
             encode(red_square("RGBA"), "PNG")]
    batch = images.preprocess_batch(tf.constant(files), options).numpy()
    single = np.stack([images.decode_and_resize(tf.constant(f), options).numpy() for f in files])
    np.testing.assert_array_equal(batch, single)


@pytest.mark.parametrize("data", [b"", b"not an image at all", encode(red_square(), "JPEG")[:200]])
def test_undecodable_bytes_raise_invalid_argument(data):
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess(data)


def test_cmyk_jpegs_of_the_shared_dataset_decode_like_pillow(shared_dir):
    found = 0
    for path in sorted((shared_dir / "datasets" / "pdf-first-pages").rglob("*.jpg")):
        with Image.open(path) as image:
            if image.mode != "CMYK":
                continue
            reference = np.asarray(image.convert("RGB"), np.float32) / 255
        picture = images.decode_and_resize(tf.constant(path.read_bytes()),
                                           images.Preprocessing(reference.shape[0])).numpy()
        assert np.abs(picture - reference).mean() < 0.01, path
        found += 1
        if found == 3:
            break
    assert found == 3

"""The one preprocessing function: every format and colour mode becomes RGB in [0, 1]."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf import contract, images

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


# --- dimensions from the header, checked before decoding ------------------------------------------
def with_dimensions(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """The same file with its header claiming another size (the pixels are never reached)."""
    data = bytearray(data)
    if fmt == "JPEG":
        sof = data.index(b"\xff\xc0")          # baseline frame header: length, precision, height, width
        data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    elif fmt == "PNG":
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    elif fmt == "GIF":
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    elif fmt == "WEBP":                       # extended (VP8X) canvas: 24-bit sizes minus one
        assert data[12:16] == b"VP8X"
        data[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    else:
        data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little", signed=True)
    return bytes(data)


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("JPEG", "CMYK"), ("PNG", "RGBA"), ("GIF", "P"),
                                       ("BMP", "RGB")])
def test_dimensions_are_read_from_the_header(fmt, mode):
    data = encode(Image.new("RGB", (37, 23), RED).convert(mode), fmt)
    assert images.encoded_dimensions(tf.constant(data)).numpy().tolist() == [23, 37]
    assert images.encoded_dimensions(tf.constant(b"not an image")).numpy().tolist() == [0, 0]


@pytest.mark.parametrize("mode, lossless, chunk", [("RGB", False, b"VP8 "), ("RGB", True, b"VP8L"),
                                                   ("RGBA", False, b"VP8X")])
def test_webp_dimensions_are_read_from_its_first_chunk(mode, lossless, chunk):
    """TensorFlow decodes WebP too: lossy (VP8), lossless (VP8L), extended (VP8X, here for alpha)."""
    data = encode(Image.new(mode, (37, 23), (*RED, 128)), "WEBP", lossless=lossless)
    assert data[12:16] == chunk
    assert images.encoded_dimensions(tf.constant(data)).numpy().tolist() == [23, 37]


def test_a_top_down_bmp_has_its_height_as_a_positive_number():
    data = with_dimensions(encode(red_square(), "BMP"), "BMP", 40, -30)
    assert images.encoded_dimensions(tf.constant(data)).numpy().tolist() == [30, 40]


@pytest.mark.parametrize("fmt, mode", [("JPEG", "L"), ("PNG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGBA")])
def test_an_oversized_image_is_refused_before_decoding_naming_the_limit(fmt, mode):
    # 60000 x 60000 would be 10.8 GB decoded: the refusal must come before any of it is allocated.
    small = Image.new("RGBA", (40, 30), (*RED, 128)) if fmt == "WEBP" else Image.new("RGB", (40, 30), RED)
    huge = with_dimensions(encode(small.convert(mode), fmt), fmt, 60000, 60000)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image too large: 60000x60000 pixels") as error:
        preprocess(huge)
    assert f"the limit is {contract.MAX_IMAGE_PIXELS} pixels" in error.value.message


def test_an_image_at_the_limit_passes_and_one_over_it_does_not():
    data = encode(red_square(), "PNG")    # 40 x 30 = 1200 pixels
    images.check_encoded(tf.constant(data), 1200)   # eagerly: raises at once, or passes
    with pytest.raises(tf.errors.InvalidArgumentError, match="40x30 pixels.*the limit is 1199 pixels"):
        images.check_encoded(tf.constant(data), 1199)


def test_an_empty_string_is_refused_by_name():
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty image: the instance holds 0 bytes"):
        preprocess(b"")
    options = images.Preprocessing(SIZE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty image"):
        images.preprocess_batch(tf.constant([encode(red_square(), "PNG"), b""]), options)


def test_a_refusal_reads_in_plain_words_and_other_errors_are_not_one():
    decode = tf.function(lambda data: images.decode_and_resize(data, images.Preprocessing(SIZE)))
    huge = with_dimensions(encode(red_square(), "PNG"), "PNG", 60000, 60000)
    for data, expected in ((huge, "image too large: 60000x60000 pixels (3600 MP); the limit is"),
                           (b"", "empty image: the instance holds 0 bytes")):
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            decode(tf.constant(data))
        assert images.refusal(error.value).startswith(expected)
        assert "node" not in images.refusal(error.value)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        decode(tf.constant(b"not an image"))
    assert images.refusal(error.value) is None

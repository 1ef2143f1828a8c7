"""The one preprocessing function: encoded image bytes -> float32 RGB [size, size, 3] in [0, 1].

Training's tf.data pipeline and the exported serving graph both call `decode_and_resize` (the
serving graph through `preprocess_batch`), so a model sees at serving time exactly the tensor it
was trained on. Only this module decodes or resizes images.

Before anything is decoded, the graph reads the image's dimensions from its header (JPEG SOF, PNG
IHDR, GIF screen, BMP info header, WebP first chunk) and refuses, with INVALID_ARGUMENT naming the
limit, an image of more than contract.MAX_IMAGE_PIXELS pixels, and an empty string. A 20000x20000
JPEG is 6 MB on the wire but 1.2 GB decoded and several GB as floats: the check is what keeps one
request from taking a server down, and being part of the exported graph it protects the official
tensorflow/serving too.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import tensorflow as tf

from imgclf import contract

# Transparent pixels are composited onto white: pages and scans are white underneath, and the
# black that dropping alpha leaves behind would look like ink.
_BACKGROUND = 255.0
_PNG_MAGIC = b"\x89PNG"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_GIF_MAGIC = b"GIF"
_BMP_MAGIC = b"BM"
DECODES_PER_BATCH = 4   # images of one request decoded at once inside the exported graph


@dataclass(frozen=True)
class Preprocessing:
    """Everything that decides the tensor an image becomes; part of the feature-cache key."""

    image_size: int
    # Drop colour (keeping three identical channels for the backbone): greyscale scans are commoner
    # among research pages, a cue a model would otherwise learn instead of the layout.
    grayscale: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, 3] from JPEG (grey, RGB, CMYK), PNG (grey, RGB, with or without alpha), GIF
    (first frame) or BMP."""

    def png_over_white():
        rgba = tf.cast(tf.io.decode_png(image_bytes, channels=4), tf.float32)
        alpha = rgba[..., 3:] / 255.0
        rgb = rgba[..., :3] * alpha + _BACKGROUND * (1.0 - alpha)
        return tf.cast(tf.round(rgb), tf.uint8)

    def any_other_format():
        # expand_animations=False gives a GIF's first frame as [H, W, 3], like every other format.
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    is_png = tf.equal(tf.strings.substr(image_bytes, 0, len(_PNG_MAGIC)), _PNG_MAGIC)
    image = tf.cond(is_png, png_over_white, any_other_format)
    image.set_shape([None, None, 3])
    return image


def _unsigned(data: tf.Tensor, offset: int, size: int, little_endian: bool) -> tf.Tensor:
    """int64 from `size` bytes of a string at `offset` (the caller makes sure they are there)."""
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, offset, size), tf.uint8), tf.int64)
    order = range(size) if little_endian else reversed(range(size))
    return tf.reduce_sum(tf.bitwise.left_shift(raw, tf.constant([8 * i for i in order], tf.int64)))


def encoded_dimensions(image_bytes: tf.Tensor) -> tf.Tensor:
    """int64 [height, width] read from the header of a JPEG, PNG, GIF, BMP or WebP file, without
    decoding it; [0, 0] for anything else (which the decoder refuses)."""
    length = tf.strings.length(image_bytes)

    def starts_with(magic: bytes, header_bytes: int) -> tf.Tensor:
        return tf.logical_and(length >= header_bytes,
                              tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic))

    def jpeg():   # libjpeg reads the markers up to the frame header (SOF), not the pixels
        return tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)

    def png():    # IHDR: width, height as big-endian 32-bit at bytes 16 and 20
        return tf.stack([_unsigned(image_bytes, 20, 4, False), _unsigned(image_bytes, 16, 4, False)])

    def gif():    # logical screen: width, height as little-endian 16-bit at bytes 6 and 8
        return tf.stack([_unsigned(image_bytes, 8, 2, True), _unsigned(image_bytes, 6, 2, True)])

    def bmp():    # info header: width, height as little-endian 32-bit at bytes 18 and 22;
        height = _unsigned(image_bytes, 22, 4, True)   # a negative height means top-down rows
        return tf.stack([tf.where(height >= 2**31, 2**32 - height, height), _unsigned(image_bytes, 18, 4, True)])

    is_webp = tf.logical_and(starts_with(b"RIFF", 30), tf.equal(tf.strings.substr(image_bytes, 8, 4), b"WEBP"))
    return tf.case([(starts_with(_JPEG_MAGIC, len(_JPEG_MAGIC)), jpeg),
                    (starts_with(_PNG_SIGNATURE, 24), png),
                    (starts_with(_GIF_MAGIC, 10), gif),
                    (starts_with(_BMP_MAGIC, 26), bmp),
                    (is_webp, lambda: _webp_dimensions(image_bytes))],
                   default=lambda: tf.zeros([2], tf.int64), exclusive=False)


def _webp_dimensions(image_bytes: tf.Tensor) -> tf.Tensor:
    """[height, width] of a WebP file (TensorFlow decodes those too), from its first chunk: VP8X
    canvas (24-bit sizes minus one), VP8L (14-bit sizes minus one, packed) or VP8 (14-bit sizes)."""
    chunk = tf.strings.substr(image_bytes, 12, 4)
    lossless = _unsigned(image_bytes, 21, 4, True)

    def extended():
        return tf.stack([_unsigned(image_bytes, 27, 3, True) + 1, _unsigned(image_bytes, 24, 3, True) + 1])

    def vp8l():
        return tf.stack([tf.bitwise.bitwise_and(tf.bitwise.right_shift(lossless, 14), 0x3FFF) + 1,
                         tf.bitwise.bitwise_and(lossless, 0x3FFF) + 1])

    def vp8():
        return tf.stack([tf.bitwise.bitwise_and(_unsigned(image_bytes, 28, 2, True), 0x3FFF),
                         tf.bitwise.bitwise_and(_unsigned(image_bytes, 26, 2, True), 0x3FFF)])

    return tf.case([(tf.equal(chunk, b"VP8X"), extended), (tf.equal(chunk, b"VP8L"), vp8l)], default=vp8)


def check_encoded(image_bytes: tf.Tensor, max_pixels: int = contract.MAX_IMAGE_PIXELS) -> tf.Operation:
    """An op failing with INVALID_ARGUMENT when the encoded image is empty or, by its header, has
    more than max_pixels pixels; make the decoding depend on it."""
    not_empty = tf.debugging.Assert(
        tf.strings.length(image_bytes) > 0,
        ["empty image: the instance holds 0 bytes; send the bytes of a JPEG, PNG, GIF or BMP file"])
    with tf.control_dependencies([not_empty]):
        height_width = encoded_dimensions(image_bytes)
    pixels = height_width[0] * height_width[1]
    message = tf.strings.format(
        "image too large: {}x{} pixels ({} MP); the limit is {} pixels ({} MP), read from the "
        "header before decoding (contract.MAX_IMAGE_PIXELS)",
        (height_width[1], height_width[0], pixels // 1_000_000, max_pixels, max_pixels // 1_000_000))
    return tf.debugging.Assert(pixels <= max_pixels, [message])


_REFUSAL = re.compile(r"assertion failed: \[((?:empty image|image too large): [^\]]*)\]")


def refusal(error: tf.errors.OpError) -> str | None:
    """check_encoded's own words when it is what failed (without TensorFlow's node decorations),
    else None."""
    found = _REFUSAL.search(error.message or "")
    return found.group(1) if found else None


def decode_and_resize(image_bytes: tf.Tensor, options: Preprocessing) -> tf.Tensor:
    """float32 [size, size, 3] in [0, 1] from one encoded image (a scalar string tensor); refuses an
    empty or oversized image before decoding it (check_encoded)."""
    with tf.control_dependencies([check_encoded(image_bytes)]):
        image_bytes = tf.identity(image_bytes)
    image = tf.image.convert_image_dtype(_decode_rgb(image_bytes), tf.float32)
    if options.grayscale:
        image = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    size = [options.image_size, options.image_size]
    # antialias keeps thin strokes of text from aliasing away when large pages shrink.
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_batch(image_bytes: tf.Tensor, options: Preprocessing) -> tf.Tensor:
    """float32 [N, size, size, 3] from a string tensor [N] of encoded images (the serving input).

    At most DECODES_PER_BATCH images of a request are decoded at once (map_fn's default in a graph
    is 10): each may be up to contract.MAX_IMAGE_PIXELS at full size, ~0.7 GB (JPEG) to ~1.4 GB
    (PNG) while it is decoded and resized."""
    size = options.image_size
    return tf.map_fn(
        lambda one: decode_and_resize(one, options),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
        parallel_iterations=DECODES_PER_BATCH,
    )

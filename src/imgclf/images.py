"""The one preprocessing function: encoded image bytes -> float32 RGB [size, size, 3] in [0, 1].

Training's tf.data pipeline and the exported serving graph both call `decode_and_resize` (the
serving graph through `preprocess_batch`), so a model sees at serving time exactly the tensor it
was trained on. Only this module decodes or resizes images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf

# Transparent pixels are composited onto white: pages and scans are white underneath, and the
# black that dropping alpha leaves behind would look like ink.
_BACKGROUND = 255.0
_PNG_MAGIC = b"\x89PNG"


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


def decode_and_resize(image_bytes: tf.Tensor, options: Preprocessing) -> tf.Tensor:
    """float32 [size, size, 3] in [0, 1] from one encoded image (a scalar string tensor)."""
    image = tf.image.convert_image_dtype(_decode_rgb(image_bytes), tf.float32)
    if options.grayscale:
        image = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    size = [options.image_size, options.image_size]
    # antialias keeps thin strokes of text from aliasing away when large pages shrink.
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def preprocess_batch(image_bytes: tf.Tensor, options: Preprocessing) -> tf.Tensor:
    """float32 [N, size, size, 3] from a string tensor [N] of encoded images (the serving input)."""
    size = options.image_size
    return tf.map_fn(
        lambda one: decode_and_resize(one, options),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
    )

"""Per-image decoding and geometry: the fused random-resized-crop and the eval centre crop.

Every function here maps encoded image bytes to float32 RGB pixels in [0, 255], channels
last, inside a ``tf.data`` graph. Every path (train, eval, the serving signature, ``zoo
predict``) decodes by one rule (see "The decode rule" below), with three decoders chosen
per file by ``kind``:

* ``KIND_JPEG``: a JPEG (RGB, grayscale or CMYK). The crop window is chosen from the
  header alone and only that window is decoded (``tf.io.decode_and_crop_jpeg``, as in
  TensorFlow's reference ResNet input pipeline); on the train path, when the window is at
  least twice the output size, libjpeg also downscales in the DCT domain (``ratio`` 2, 4 or
  8), which makes large phone photos cheap. EXIF orientation is applied after decoding,
  from a value read when the folder was scanned (or, for bytes, from the file itself).
* ``KIND_GRAPH``: PNG, GIF, BMP and WebP decoded in pure TensorFlow by
  :func:`graph_decode`, with transparency composited over white. A serving signature holds
  the same function, so it sees exactly the pixels training and evaluation saw.
* ``KIND_PIL``: the few files :func:`graph_decode` does not read (see
  :func:`graph_supported`), decoded by Pillow inside ``tf.numpy_function`` by the same rule.
  A serving signature refuses them with a clear error rather than decoding them otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

KIND_JPEG = 0
KIND_PIL = 1
KIND_GRAPH = 2

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")

# ImageNet-standard random-resized-crop ranges (Szegedy et al. 2015; timm, torchvision).
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)


def check_interpolation(interpolation: str) -> str:
    """Returns ``interpolation`` if ``tf.image.resize`` knows it, else raises a clear error."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation {interpolation!r}; use one of "
                         f"{', '.join(INTERPOLATIONS)}.")
    return interpolation


def check_crop_fraction(crop_fraction: float) -> float:
    """Returns ``crop_fraction`` as a float if it is in (0, 1], else raises a clear error."""
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction!r}.")
    return float(crop_fraction)


# --------------------------------------------------------------------------------------
# The decode rule
# --------------------------------------------------------------------------------------
#
# One rule for every path (train, eval, serving signature, zoo predict), so that a model is
# served the pixels it was trained and evaluated on: the first frame; 16-bit samples scaled
# to 8 bits with rounding; transparency (alpha, PNG tRNS, GIF transparent index) composited
# over white, because transparent regions are background and their stored colour is often
# black; EXIF orientation applied to JPEGs. It is written in TensorFlow (graph_decode), so
# that a SavedModel carries it; Pillow (pil_to_rgb) only decodes the few files TensorFlow
# cannot read (1-, 4- and 16-bit or compressed BMPs, animated WebP), following the same rule.

def composite_over_white(rgba: tf.Tensor) -> tf.Tensor:
    """Composites 8-bit RGBA over a white background: ``round((c*a + 255*(255 - a)) / 255)``.

    Args:
        rgba: ``[..., 4]`` pixels of any real dtype, integral values in [0, 255].

    Returns:
        ``uint8`` ``[..., 3]``.
    """
    color, alpha = rgba[..., :3], rgba[..., 3:]

    def blend():
        # float32 is exact here (every value is an integer below 2**24, and a correctly
        # rounded quotient never crosses the next integer), and measured faster than int32.
        c, a = tf.cast(color, tf.float32), tf.cast(alpha, tf.float32)
        return tf.cast(tf.floor((c * a + 255.0 * (255.0 - a) + 127.0) / 255.0), tf.uint8)

    # Most images with an alpha channel are opaque: one cheap reduction spares the blend.
    return tf.cond(tf.reduce_min(alpha) < 255, blend, lambda: tf.cast(color, tf.uint8))


def sixteen_to_eight(values):
    """Scales 16-bit samples to 8 bits with rounding, ``round(v / 257)`` (NumPy or TF)."""
    return (values + 128) // 257


def pil_to_rgb(image) -> np.ndarray:
    """Converts any Pillow image to an upright 8-bit RGB array by the decode rule.

    Args:
        image: An opened ``PIL.Image.Image``.

    Returns:
        A ``uint8`` array of shape ``[height, width, 3]``.
    """
    from PIL import Image, ImageOps

    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 65535).astype(np.int64)
        if mode.startswith("I;16") or array.max(initial=0) > 255:
            array = sixteen_to_eight(array)
        gray = np.clip(array, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if (mode == "P" and "transparency" in image.info) or mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        # Pillow's own compositing gives composite_over_white's values exactly (tested on
        # every colour and alpha).
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def pil_decode(data: bytes) -> np.ndarray:
    """Decodes encoded image bytes with Pillow into upright 8-bit RGB (see :func:`pil_to_rgb`)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return pil_to_rgb(image)


def _pil_decode_op(data: tf.Tensor) -> tf.Tensor:
    # numpy_function hands a scalar string over as a 0-d object array or as bytes.
    image = tf.numpy_function(lambda b: pil_decode(b.item() if isinstance(b, np.ndarray) else b),
                              [data], tf.uint8,
                              stateful=False, name="pil_decode")
    image.set_shape([None, None, 3])
    return image


class _Bytes:
    """Reads integers out of a scalar string tensor at (tensor) positions."""

    def __init__(self, data: tf.Tensor):
        self.data = data
        self.length = tf.strings.length(data)

    def byte(self, pos) -> tf.Tensor:
        return tf.cast(tf.io.decode_raw(tf.strings.substr(self.data, pos, 1), tf.uint8)[0],
                       tf.int32)

    def u16(self, pos, little) -> tf.Tensor:
        a, b = self.byte(pos), self.byte(pos + 1)
        return tf.where(little, a + b * 256, a * 256 + b)

    def u32(self, pos, little) -> tf.Tensor:
        lo, hi = self.u16(pos, little), self.u16(pos + 2, little)
        return tf.where(little, lo + hi * 65536, lo * 65536 + hi)

    def head(self, count: int) -> tf.Tensor:
        """The first ``count`` bytes, zero-padded when the data is shorter."""
        start = tf.strings.substr(self.data, 0, count)
        return tf.strings.substr(tf.strings.join([start, b"\x00" * count]), 0, count)


def _replace(data: tf.Tensor, offset: tf.Tensor, piece: tf.Tensor, size: int) -> tf.Tensor:
    """``data`` with the ``size`` bytes at ``offset`` replaced by ``piece``."""
    return tf.strings.join([tf.strings.substr(data, 0, offset), piece,
                            tf.strings.substr(data, offset + size, -1)])


GRAPH_FORMATS = ("jpeg", "png", "gif", "bmp", "webp")

# What the graph decoder refuses (and Pillow decodes on the folder path): the checks in
# graph_supported() and in the graph branches below say the same.
_BMP_BITS = (8, 24, 32)
_WEBP_ANIMATED = 0x02  # VP8X flags


def graph_supported(head: bytes) -> bool:
    """Whether :func:`graph_decode` reads a file, from its first 32 bytes.

    Args:
        head: The file's first bytes (at least 32 for BMP and WebP).

    Returns:
        False for BMPs other than uncompressed 8-, 24- and 32-bit ones and for animated
        WebP (which TensorFlow's WebP decoder does not take); True otherwise.
    """
    if head[:2] == b"BM":
        bits = int.from_bytes(head[28:30], "little")
        compression = int.from_bytes(head[30:34], "little")
        return bits in _BMP_BITS and compression == 0
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] == b"VP8X":
        return not head[20] & _WEBP_ANIMATED
    return True


def _png(data: tf.Tensor, reader: _Bytes) -> tf.Tensor:
    # Four channels always (tRNS transparency comes out as alpha): as fast as three here,
    # and composite_over_white skips opaque images (a chunk walk to find tRNS first was
    # twice as slow on small files).
    def sixteen():
        wide = tf.cast(tf.io.decode_png(data, channels=4, dtype=tf.uint16), tf.int32)
        return tf.cast(sixteen_to_eight(wide), tf.uint8)

    rgba = tf.cond(tf.equal(reader.byte(24), 16), sixteen,
                   lambda: tf.io.decode_png(data, channels=4))
    return composite_over_white(rgba)


def _gif(data: tf.Tensor, reader: _Bytes, max_blocks: int = 4096) -> tf.Tensor:
    """The first frame, its transparent colour index made opaque white before decoding.

    TensorFlow's GIF decoder writes black where the first frame is transparent, so the
    transparency cannot be told from black afterwards. Written by hand because no op reads
    GIF transparency: the blocks are walked up to the first image, and the last graphic
    control extension before it loses its transparency flag while the colour of the
    transparent index (in the frame's local table, else the global one) becomes white.
    """
    flags = reader.byte(10)
    global_table = tf.where(flags >= 128, 3 * tf.bitwise.left_shift(2, flags % 8), 0)

    def cond(pos, in_extension, control, image, step):
        return (image < 0) & (step < max_blocks) & (pos < reader.length)

    def body(pos, in_extension, control, image, step):
        value = reader.byte(pos)

        def introducer():
            is_extension = tf.equal(value, 0x21)
            is_control = is_extension & tf.equal(reader.byte(pos + 1), 0xF9)
            # Anything but an extension or an image (the trailer, garbage) ends the walk.
            found = tf.where(tf.equal(value, 0x2C), pos, tf.where(is_extension, -1, 0))
            return (tf.where(is_extension, pos + 2, pos), is_extension,
                    tf.where(is_control, pos, control), found)

        def sub_block():
            # A sub-block of `value` bytes; the empty one ends the extension.
            return pos + 1 + value, value > 0, control, tf.constant(-1)

        pos, in_extension, control, image = tf.cond(in_extension, sub_block, introducer)
        return pos, in_extension, control, image, step + 1

    _, _, control, image, _ = tf.while_loop(
        cond, body, [13 + global_table, tf.constant(False), tf.constant(-1), tf.constant(-1),
                     tf.constant(0)])

    def opaque_white():
        index = reader.byte(control + 6)
        local = reader.byte(image + 9)
        table = tf.where(local >= 128, image + 10, 13)
        entries = tf.where(local >= 128, tf.bitwise.left_shift(2, local % 8), global_table // 3)
        packed = reader.byte(control + 3)
        as_bytes = tf.constant([bytes([i]) for i in range(256)])
        cleared = _replace(data, control + 3, tf.gather(as_bytes, packed - packed % 2), 1)
        whitened = _replace(cleared, table + 3 * index, tf.constant(b"\xff\xff\xff"), 3)
        return tf.where(index < entries, whitened, cleared)

    transparent = (control > 0) & (image > 0)
    transparent &= tf.equal(reader.byte(tf.maximum(control, 0) + 3) % 2, 1)
    patched = tf.cond(transparent, opaque_white, lambda: data)
    return _on_canvas(patched, reader, image, transparent)


def _on_canvas(data: tf.Tensor, reader: _Bytes, image: tf.Tensor,
               transparent: tf.Tensor) -> tf.Tensor:
    """The first frame placed at its offset on a canvas of the logical screen's size.

    TensorFlow's decoder returns an image of the frame's size with the frame drawn at its
    offset inside it, so a frame smaller than the canvas comes out shifted, cut off and
    edged in black. Pillow shows the canvas; so does this: the frame is decoded at (0, 0)
    (its offset bytes zeroed) and put on a canvas grown as Pillow grows it when the frame
    reaches past the screen, filled as Pillow fills it: white where a transparent index
    is set (transparency composites over white), else colour 0 of the frame's palette.
    """
    little = tf.constant(True)
    found = image > 0
    at = tf.maximum(image, 0)
    left = tf.where(found, reader.u16(at + 1, little), 0)
    top = tf.where(found, reader.u16(at + 3, little), 0)
    moved = tf.cond(found & ((left > 0) | (top > 0)),
                    lambda: _replace(data, at + 1, tf.constant(b"\0\0\0\0"), 4),
                    lambda: data)
    frame = tf.io.decode_gif(moved)[0]
    height, width = tf.shape(frame)[0], tf.shape(frame)[1]
    canvas_height = tf.maximum(reader.u16(8, little), top + height)
    canvas_width = tf.maximum(reader.u16(6, little), left + width)
    padding = [[top, canvas_height - top - height], [left, canvas_width - left - width]]
    local = tf.where(found, reader.byte(at + 9), 0) >= 128
    table = tf.where(local, at + 10, 13)
    has_table = local | (reader.byte(10) >= 128)
    colour_0 = tf.stack([reader.byte(table + i) for i in range(3)])
    fill = tf.where(transparent, 255, tf.where(has_table, colour_0, 0))
    inside = tf.pad(tf.ones([height, width, 1], tf.bool), padding + [[0, 0]])
    return tf.where(inside, tf.pad(frame, padding + [[0, 0]]),
                    tf.cast(fill, tf.uint8)[tf.newaxis, tf.newaxis])


def _bmp(data: tf.Tensor, reader: _Bytes) -> tf.Tensor:
    little = tf.constant(True)
    bits, compression = reader.u16(28, little), reader.u32(30, little)
    supported = tf.reduce_any(tf.equal(bits, _BMP_BITS)) & tf.equal(compression, 0)
    check = tf.debugging.Assert(supported, [tf.strings.format(
        "Unsupported BMP ({} bits per pixel, compression {}): uncompressed 8-, 24- and 32-bit "
        "BMPs are decoded. Send it as PNG or JPEG.", [bits, compression])])

    def palette():
        # TensorFlow returns an 8-bit BMP's palette indices as gray levels; its palette
        # (B, G, R, 0 entries after the header) gives the colours, as Pillow shows them.
        entries = reader.u32(46, little)
        entries = tf.where((entries < 1) | (entries > 256), 256, entries)
        table = tf.io.decode_raw(tf.strings.substr(data, 14 + reader.u32(14, little),
                                                   4 * entries), tf.uint8)
        table = tf.reverse(tf.reshape(table, [-1, 4])[:, :3], [1])
        index = tf.io.decode_bmp(data, channels=0)[..., 0]
        return tf.gather(table, tf.minimum(tf.cast(index, tf.int32), tf.shape(table)[0] - 1))

    with tf.control_dependencies([check]):
        return tf.cond(tf.equal(bits, 8), palette, lambda: tf.io.decode_bmp(data, channels=3))


def _webp(data: tf.Tensor, reader: _Bytes) -> tf.Tensor:
    extended = tf.equal(tf.strings.substr(reader.head(16), 12, 4), b"VP8X")
    animated = extended & tf.equal(tf.bitwise.bitwise_and(reader.byte(20), _WEBP_ANIMATED),
                                   _WEBP_ANIMATED)
    # decode_webp(channels=0) crashed the process on an animated file here ("free(): invalid
    # next size"): such files are refused first.
    check = tf.debugging.Assert(~animated, [
        "Unsupported WebP: an animation. Send its first frame as PNG or JPEG."])
    with tf.control_dependencies([check]):
        # channels=0: the op takes only the file's own channel count (3, or 4 with alpha).
        image = tf.io.decode_webp(data, channels=0)[0]
    return tf.cond(tf.equal(tf.shape(image)[2], 4), lambda: composite_over_white(image),
                   lambda: image[..., :3])


def graph_format(data: tf.Tensor) -> tf.Tensor:
    """The index in ``GRAPH_FORMATS`` of encoded bytes from their signature (5: none)."""
    head = _Bytes(data).head(12)

    def starts(prefix: bytes) -> tf.Tensor:
        return tf.equal(tf.strings.substr(head, 0, len(prefix)), prefix)

    webp = starts(b"RIFF") & tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")
    checks = [tf.io.is_jpeg(data), starts(b"\x89PNG\r\n\x1a\n"),
              starts(b"GIF87a") | starts(b"GIF89a"), starts(b"BM"), webp]
    index = tf.constant(len(checks))
    for position in reversed(range(len(checks))):
        index = tf.where(checks[position], position, index)
    return index


def graph_decode(data: tf.Tensor, formats: Sequence[str] = GRAPH_FORMATS) -> tf.Tensor:
    """Decodes JPEG, PNG, GIF, BMP or WebP bytes to 8-bit RGB by the decode rule, in TensorFlow.

    No EXIF orientation is applied here (see :func:`apply_orientation`).

    Args:
        data: Encoded bytes (scalar string tensor).
        formats: The formats that can occur (names from ``GRAPH_FORMATS``); only their
            decoders enter the graph. Every decoder left in is graph nodes that a
            ``tf.data`` map still walks for each element: with all five, a 32x32 PNG
            decoded 2.2-2.8x slower than with the PNG decoder alone. Bytes of a format left
            out fail to decode.

    Returns:
        ``uint8`` ``[height, width, 3]``.

    Raises:
        tf.errors.InvalidArgumentError: At run time, for bytes of another format (the
            message is TensorFlow's "Unknown image file format") and for the BMP and WebP
            variants :func:`graph_supported` refuses.
    """
    unknown = set(formats) - set(GRAPH_FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats are some of {GRAPH_FORMATS}; got {tuple(formats)!r}.")
    reader = _Bytes(data)
    decoders = {
        "jpeg": lambda: tf.io.decode_jpeg(data, channels=3),
        "png": lambda: _png(data, reader),
        "gif": lambda: _gif(data, reader),
        "bmp": lambda: _bmp(data, reader),
        "webp": lambda: _webp(data, reader),
    }
    chosen = [name for name in GRAPH_FORMATS if name in formats]
    if len(chosen) == 1:
        image = decoders[chosen[0]]()
    else:
        # Bytes of no listed format go to decode_image, for its "Unknown image file format".
        branches = [decoders[name] for name in chosen] + [
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False)]
        index = graph_format(data)
        position = tf.constant(len(chosen))
        for i, name in enumerate(chosen):
            position = tf.where(tf.equal(index, GRAPH_FORMATS.index(name)), i, position)
        image = tf.switch_case(position, [_shaped(b) for b in branches])
    image.set_shape([None, None, 3])
    return image


def _shaped(branch):
    def run():
        image = branch()
        image.set_shape([None, None, 3])
        return image
    return run


# --------------------------------------------------------------------------------------
# EXIF orientation
# --------------------------------------------------------------------------------------

def transposes(orientation: tf.Tensor) -> tf.Tensor:
    """Whether an EXIF orientation (5 to 8) swaps height and width."""
    return orientation >= 5


def apply_orientation(image: tf.Tensor, orientation: tf.Tensor) -> tf.Tensor:
    """Turns a stored image upright according to its EXIF orientation tag (1 to 8).

    The mapping is the one of ``PIL.ImageOps.exif_transpose``; values outside 1..8 are
    treated as 1 (upright), as Pillow does.
    """
    orientation = tf.cast(orientation, tf.int32)
    branches = [
        lambda: image,                                          # 1 (and unknown)
        lambda: tf.reverse(image, [1]),                         # 2 mirror horizontally
        lambda: tf.reverse(image, [0, 1]),                      # 3 rotate 180
        lambda: tf.reverse(image, [0]),                         # 4 mirror vertically
        lambda: tf.transpose(image, [1, 0, 2]),                 # 5 transpose
        lambda: tf.image.rot90(image, k=3),                     # 6 rotate 90 clockwise
        lambda: tf.reverse(tf.transpose(image, [1, 0, 2]), [0, 1]),  # 7 transverse
        lambda: tf.image.rot90(image, k=1),                     # 8 rotate 90 anticlockwise
    ]
    index = tf.where((orientation >= 1) & (orientation <= 8), orientation - 1, 0)
    return tf.switch_case(index, branches)


# --------------------------------------------------------------------------------------
# Crop windows
# --------------------------------------------------------------------------------------

def center_crop_window(height: tf.Tensor, width: tf.Tensor, image_size: Sequence[int],
                       crop_fraction: float) -> tf.Tensor:
    """The window of an image that "resize shorter side, then centre-crop" keeps.

    The shorter side is resized to ``max(image_size) / crop_fraction`` (timm's rule) and the
    window is given in the image's own pixels.

    Resizing the whole image and then cropping equals cropping this window and resizing it
    to ``image_size``; the second is cheaper and lets a JPEG decode only the window.

    Args:
        height: Image height.
        width: Image width.
        image_size: Output ``(height, width)``.
        crop_fraction: Fraction of the resized shorter side that the crop keeps (timm's
            ``crop_pct``; 0.875 for most ImageNet models, 1.0 keeps the whole side).

    Returns:
        ``[offset_y, offset_x, crop_height, crop_width]`` as int32.
    """
    out_h, out_w = float(image_size[0]), float(image_size[1])
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    # timm: scale_size = floor(max(out) / crop_fraction) is the resized shorter side.
    scale_size = tf.floor(max(out_h, out_w) / crop_fraction)
    factor = tf.minimum(h, w) / scale_size
    crop_h = tf.minimum(tf.maximum(tf.round(out_h * factor), 1.0), h)
    crop_w = tf.minimum(tf.maximum(tf.round(out_w * factor), 1.0), w)
    offset_y = tf.floor((h - crop_h) / 2.0)
    offset_x = tf.floor((w - crop_w) / 2.0)
    return tf.cast(tf.stack([offset_y, offset_x, crop_h, crop_w]), tf.int32)


def center_crop(image: tf.Tensor, image_size: Sequence[int], crop_fraction: float) -> tf.Tensor:
    """Cuts :func:`center_crop_window` out of a decoded ``[H, W, C]`` image.

    Resizing the result to ``image_size`` is "resize the shorter side, then centre-crop".
    """
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], image_size, crop_fraction)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor,
                       scale: Sequence[float] = DEFAULT_SCALE,
                       ratio: Sequence[float] = DEFAULT_RATIO) -> tf.Tensor:
    """Samples a random-resized-crop window (Inception-style) from an image shape.

    Uses ``tf.image.stateless_sample_distorted_bounding_box`` so that the crop depends
    only on ``seed``, whatever the parallelism; after 10 failed attempts it keeps the whole
    image, as TensorFlow's reference pipeline does.

    Args:
        shape: ``[height, width, ...]`` of the image.
        seed: Shape ``[2]`` integer seed.
        scale: Range of the crop's area as a fraction of the image's.
        ratio: Range of the crop's width / height.

    Returns:
        ``[offset_y, offset_x, crop_height, crop_width]`` as int32.
    """
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape[:3] if shape.shape[0] >= 3 else tf.concat([shape[:2], [3]], 0),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=float(scale[0]),
        aspect_ratio_range=[float(ratio[0]), float(ratio[1])],
        area_range=[float(scale[0]), float(scale[1])],
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def _stored_window(window: tf.Tensor, orientation: tf.Tensor, height: tf.Tensor,
                   width: tf.Tensor) -> tf.Tensor:
    """Maps a window in upright coordinates to the stored (pre-EXIF) image, exactly.

    An upright crop then equals the crop of the upright image, pixel for pixel.
    """
    window = tf.where(transposes(orientation),
                      tf.stack([window[1], window[0], window[3], window[2]]), window)
    flip_y = tf.reduce_any(tf.equal(orientation, [3, 4, 6, 7]))
    flip_x = tf.reduce_any(tf.equal(orientation, [2, 3, 7, 8]))
    offset_y = tf.where(flip_y, height - window[0] - window[2], window[0])
    offset_x = tf.where(flip_x, width - window[1] - window[3], window[1])
    return tf.stack([offset_y, offset_x, window[2], window[3]])


# --------------------------------------------------------------------------------------
# Decoding a window
# --------------------------------------------------------------------------------------

_RATIOS = (1, 2, 4, 8)


def _jpeg_ratio(window: tf.Tensor, out_side: int) -> tf.Tensor:
    """The largest DCT downscale (1, 2, 4, 8) that keeps the window at least output-sized.

    Both sides of the window are compared with the output's larger side, which keeps this
    independent of orientation; quality is unchanged and libjpeg does far less work.
    """
    fit = tf.minimum(window[2], window[3]) // max(out_side, 1)
    return tf.constant(_RATIOS)[tf.cast(tf.where(fit >= 8, 3, tf.where(
        fit >= 4, 2, tf.where(fit >= 2, 1, 0))), tf.int32)]


def snap_window(window: tf.Tensor, ratio: tf.Tensor) -> tf.Tensor:
    """Moves a window's edges inwards onto multiples of ``ratio`` (at most ratio - 1 pixels).

    A window decoded at 1/ratio scale then covers exactly the same pixels as at full scale;
    without this the downscaled crop is shifted by up to ratio - 1 pixels.
    """
    top = (window[0] + ratio - 1) // ratio * ratio
    left = (window[1] + ratio - 1) // ratio * ratio
    bottom = (window[0] + window[2]) // ratio * ratio
    right = (window[1] + window[3]) // ratio * ratio
    return tf.stack([top, left, tf.maximum(bottom - top, ratio),
                     tf.maximum(right - left, ratio)])


def decode_jpeg_window(data: tf.Tensor, window: tf.Tensor, ratio: tf.Tensor | int = 1,
                       dct_method: str = "") -> tf.Tensor:
    """Decodes only ``window`` of a JPEG, at 1/``ratio`` scale.

    Args:
        data: JPEG bytes.
        window: ``[offset_y, offset_x, height, width]`` in stored pixels; with ``ratio`` > 1
            on multiples of it (:func:`snap_window`).
        ratio: 1, 2, 4 or 8: libjpeg downscales in the DCT domain, which costs a fraction
            of a full decode (a box filter over ratio x ratio pixels).
        dct_method: libjpeg's inverse DCT: ``""`` (accurate) or ``"INTEGER_FAST"``.

    Returns:
        ``uint8`` ``[h, w, 3]``.
    """
    if isinstance(ratio, int) and ratio == 1:
        return tf.io.decode_and_crop_jpeg(data, window, channels=3, dct_method=dct_method)

    def branch(r):
        # With ratio > 1 libjpeg takes the crop window in downscaled pixels.
        return lambda: tf.io.decode_and_crop_jpeg(data, window // r, channels=3, ratio=r,
                                                  dct_method=dct_method)

    index = tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0) + 0.5, tf.int32)
    image = tf.switch_case(index, [branch(r) for r in _RATIOS])
    image.set_shape([None, None, 3])
    return image


def resize_pixels(image: tf.Tensor, image_size: Sequence[int], interpolation: str,
                  antialias: bool) -> tf.Tensor:
    """``tf.image.resize`` to float32, kept in [0, 255] where the kernel overshoots.

    Args:
        image: [H, W, C] pixels, any numeric dtype.
        image_size: Output ``(height, width)``.
        interpolation: ``tf.image.resize`` method.
        antialias: Whether to antialias when downscaling (as Pillow does).

    Returns:
        float32 [height, width, C] in [0, 255].
    """
    image = tf.cast(tf.image.resize(image, image_size, method=interpolation,
                                    antialias=antialias), tf.float32)
    if interpolation in ("bilinear", "area", "nearest") and not antialias:
        return image  # convex combinations of the input: already in [0, 255]
    # Bicubic, Lanczos and antialiasing kernels overshoot; the contract is [0, 255].
    return tf.clip_by_value(image, 0.0, 255.0)


ALL_KINDS = (KIND_JPEG, KIND_PIL, KIND_GRAPH)


def _select(kind: tf.Tensor, branches: dict, kinds: Sequence[int]) -> tf.Tensor:
    # Only the decoders of kinds that occur are put in the graph: a folder of ordinary
    # JPEGs gets no Pillow branch, which keeps tracing and each step cheaper.
    kinds = sorted(set(kinds))
    if len(kinds) == 1:
        return branches[kinds[0]]()
    # switch_case wants branch indices 0..n-1: the position of `kind` among `kinds`.
    position = tf.argmax(tf.cast(tf.equal(tf.cast(kind, tf.int32), kinds), tf.int32),
                         output_type=tf.int32)
    return tf.switch_case(position, [branches[k] for k in kinds])


def decode_image(data: tf.Tensor, kind: tf.Tensor, kinds: Sequence[int] = ALL_KINDS,
                 formats: Sequence[str] = GRAPH_FORMATS) -> tf.Tensor:
    """Fully decodes bytes of any ``kind`` to 8-bit RGB (no EXIF applied for KIND_JPEG).

    Args:
        data: Encoded bytes.
        kind: The decoder to use.
        kinds: The kinds that can occur (the others are left out of the graph).
        formats: The formats ``KIND_GRAPH`` bytes can have (see :func:`graph_decode`).
    """
    image = _select(kind, {
        KIND_JPEG: lambda: tf.io.decode_jpeg(data, channels=3),
        KIND_PIL: lambda: _pil_decode_op(data),
        KIND_GRAPH: lambda: graph_decode(data, formats),
    }, kinds)
    image.set_shape([None, None, 3])
    return image


def decode_upright(data: tf.Tensor, kind: tf.Tensor, orientation: tf.Tensor,
                   kinds: Sequence[int] = ALL_KINDS, oriented: bool = True,
                   formats: Sequence[str] = GRAPH_FORMATS) -> tf.Tensor:
    """Fully decodes bytes to upright 8-bit RGB, applying the scanned EXIF orientation."""
    image = decode_image(data, kind, kinds, formats)
    if not oriented or KIND_JPEG not in kinds:
        return image
    return tf.cond(tf.equal(tf.cast(kind, tf.int32), KIND_JPEG),
                   lambda: apply_orientation(image, orientation), lambda: image)


def _jpeg_or_decoded(kind: tf.Tensor, fused_jpeg, decoded, kinds: Sequence[int]) -> tf.Tensor:
    others = [k for k in kinds if k != KIND_JPEG]
    if not others:
        return fused_jpeg()
    if KIND_JPEG not in kinds:
        return decoded()
    return tf.cond(tf.equal(kind, KIND_JPEG), fused_jpeg, decoded)


def train_crop(data: tf.Tensor, kind: tf.Tensor, orientation: tf.Tensor, seed: tf.Tensor,
               image_size: Sequence[int], *, scale: Sequence[float] = DEFAULT_SCALE,
               ratio: Sequence[float] = DEFAULT_RATIO, interpolation: str = "bilinear",
               antialias: bool = False, kinds: Sequence[int] = ALL_KINDS,
               oriented: bool = True, flip_seed: tf.Tensor | None = None,
               formats: Sequence[str] = GRAPH_FORMATS,
               dct_scaling: bool = True) -> tf.Tensor:
    """Random-resized-crop (and flip) of encoded bytes, fused with decoding for ordinary JPEGs.

    Args:
        data: Encoded image bytes (scalar string tensor).
        kind: ``KIND_JPEG``, ``KIND_PIL`` or ``KIND_GRAPH``.
        orientation: EXIF orientation of a ``KIND_JPEG`` file (1 when unknown).
        seed: Shape ``[2]`` seed; the crop depends on nothing else.
        image_size: Output ``(height, width)``.
        scale: Crop area range, as a fraction of the image.
        ratio: Crop aspect (width / height) range. The range is symmetric around 1 by
            default, so sampling in stored rather than upright coordinates changes nothing.
        interpolation: ``tf.image.resize`` method.
        antialias: Low-pass filter when downscaling; off by default on the train path, as in
            TensorFlow's and Keras' pipelines (it costs time and augmentation hides it).
        kinds: The kinds that can occur; the graph holds only their decoders.
        formats: The formats ``KIND_GRAPH`` bytes can have (see :func:`graph_decode`).
        oriented: Whether any JPEG has an EXIF orientation other than 1.
        flip_seed: Shape ``[2]`` seed of a random horizontal flip (None: no flip). The
            flip is done on the small uint8 crop, before resizing, where it is cheapest.
        dct_scaling: Let libjpeg downscale large windows; False leaves that machinery out
            of the graph (when no image is large enough for it to apply).

    Returns:
        float32 ``[height, width, 3]`` in [0, 255].
    """
    out_h, out_w = int(image_size[0]), int(image_size[1])
    kind = tf.cast(kind, tf.int32)
    orientation = tf.cast(orientation, tf.int32)

    def window_for(shape):
        window = random_crop_window(shape, seed, scale, ratio)
        if not dct_scaling:
            return window, 1
        factor = _jpeg_ratio(window, max(out_h, out_w))
        # Snapped for every kind, so that a file's crops do not depend on its format.
        return snap_window(window, factor), factor

    def fused_jpeg():
        window, factor = window_for(tf.io.extract_jpeg_shape(data))
        # (dct_method="INTEGER_FAST" measured no faster here than the accurate default.)
        crop = decode_jpeg_window(data, window, factor)
        return apply_orientation(crop, orientation) if oriented else crop

    def decoded():
        image = decode_image(data, kind, kinds, formats)
        window, _ = window_for(tf.shape(image))
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    crop = _jpeg_or_decoded(kind, fused_jpeg, decoded, kinds)
    if flip_seed is not None:
        # Upright pixels are flipped (after EXIF rotation): always a horizontal mirror.
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        crop = tf.cond(mirror, lambda: tf.reverse(crop, [1]), lambda: crop)
    if interpolation == "bilinear" and not antialias:
        # TensorFlow's bilinear kernel runs faster on float32 than on uint8 input, more than
        # the cast costs (about 9 % of the train path from a prepared store; the same
        # pixels exactly). See BENCHMARKS.md, The prepared store.
        crop = tf.cast(crop, tf.float32)
    return resize_pixels(crop, (out_h, out_w), interpolation, antialias)


def eval_crop(data: tf.Tensor, kind: tf.Tensor, orientation: tf.Tensor,
              image_size: Sequence[int], *, crop_fraction: float = 0.875,
              interpolation: str = "bilinear", kinds: Sequence[int] = ALL_KINDS,
              oriented: bool = True, formats: Sequence[str] = GRAPH_FORMATS) -> tf.Tensor:
    """Resize-shorter-side-then-centre-crop of encoded bytes, as one window decode and resize.

    The result is rounded to whole pixel values, as Pillow-based pipelines produce, so that
    a cached copy (kept as uint8) and a fresh one are identical.

    Args:
        data: Encoded image bytes.
        kind: ``KIND_JPEG``, ``KIND_PIL`` or ``KIND_GRAPH``.
        orientation: EXIF orientation of a ``KIND_JPEG`` file (1 when unknown).
        image_size: Output ``(height, width)``.
        crop_fraction: See :func:`center_crop_window`.
        interpolation: ``tf.image.resize`` method (antialiased, as Pillow resizes).
        kinds: The kinds that can occur; the graph holds only their decoders.
        formats: The formats ``KIND_GRAPH`` bytes can have (see :func:`graph_decode`).
        oriented: Whether any JPEG has an EXIF orientation other than 1.

    Returns:
        float32 ``[height, width, 3]`` with integral values in [0, 255].
    """
    out_h, out_w = int(image_size[0]), int(image_size[1])
    kind = tf.cast(kind, tf.int32)
    orientation = tf.cast(orientation, tf.int32)

    def fused_jpeg():
        shape = tf.io.extract_jpeg_shape(data)
        if not oriented:
            window = center_crop_window(shape[0], shape[1], (out_h, out_w), crop_fraction)
            return tf.cast(decode_jpeg_window(data, window), tf.float32)
        upright_h = tf.where(transposes(orientation), shape[1], shape[0])
        upright_w = tf.where(transposes(orientation), shape[0], shape[1])
        window = center_crop_window(upright_h, upright_w, (out_h, out_w), crop_fraction)
        window = _stored_window(window, orientation, shape[0], shape[1])
        # Full scale: the eval path must equal resize-then-crop, and a snapped window
        # would shift the centre by up to half an output pixel.
        crop = decode_jpeg_window(data, window)
        # Turned upright as float32, the dtype the resize takes anyway: in a serving graph,
        # oneDNN's graph pass logs an error line for a uint8 Transpose, even on AVX-512.
        return apply_orientation(tf.cast(crop, tf.float32), orientation)

    def decoded():
        crop = center_crop(decode_image(data, kind, kinds, formats), (out_h, out_w),
                           crop_fraction)
        return tf.cast(crop, tf.float32)

    crop = _jpeg_or_decoded(kind, fused_jpeg, decoded, kinds)
    image = resize_pixels(crop, (out_h, out_w), interpolation, True)
    return tf.round(image)


FIVE_CROP_VIEWS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")


def eval_resize_size(height: tf.Tensor, width: tf.Tensor, image_size: Sequence[int],
                     crop_fraction: float) -> tf.Tensor:
    """The size the eval path resizes an image to before its centre crop.

    The shorter side becomes ``floor(max(image_size) / crop_fraction)`` (timm's
    ``scale_size``, as in :func:`center_crop_window`) and the longer side keeps the aspect
    ratio, truncated as torchvision's ``Resize(int)`` does.

    Args:
        height: Image height.
        width: Image width.
        image_size: Output ``(height, width)`` of the crops.
        crop_fraction: See :func:`center_crop_window`.

    Returns:
        ``[resized_height, resized_width]`` as int32, each at least the crop's side.
    """
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    short = tf.floor(max(float(image_size[0]), float(image_size[1])) / crop_fraction)
    # The short side's own new length is exact; the long side's is truncated.
    new_h = tf.where(h <= w, short, tf.floor(short * h / w))
    new_w = tf.where(h <= w, tf.floor(short * w / h), short)
    return tf.cast(tf.stack([tf.maximum(new_h, float(image_size[0])),
                             tf.maximum(new_w, float(image_size[1]))]), tf.int32)


def five_crops(image: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
    """The four corner crops and the centre crop of an image, as torchvision's ``FiveCrop``.

    Args:
        image: ``[H, W, C]`` pixels, at least ``image_size``.
        image_size: The crops' ``(height, width)``.

    Returns:
        ``[5, height, width, C]`` in :data:`FIVE_CROP_VIEWS` order (top left, top right,
        bottom left, bottom right, centre).
    """
    out_h, out_w = int(image_size[0]), int(image_size[1])
    shape = tf.shape(image)
    bottom, right = shape[0] - out_h, shape[1] - out_w
    # torchvision centres with int(round((H - h) / 2)): half to even, as tf.round.
    centre_y = tf.cast(tf.round(tf.cast(bottom, tf.float32) / 2.0), tf.int32)
    centre_x = tf.cast(tf.round(tf.cast(right, tf.float32) / 2.0), tf.int32)
    corners = [(0, 0), (0, right), (bottom, 0), (bottom, right), (centre_y, centre_x)]
    return tf.stack([image[y:y + out_h, x:x + out_w] for y, x in corners])


def eval_five_crop(data: tf.Tensor, kind: tf.Tensor, orientation: tf.Tensor,
                   image_size: Sequence[int], *, crop_fraction: float = 0.875,
                   interpolation: str = "bilinear", kinds: Sequence[int] = ALL_KINDS,
                   oriented: bool = True,
                   formats: Sequence[str] = GRAPH_FORMATS) -> tf.Tensor:
    """The five-crop views of the eval geometry: cut from the resized, uncropped image.

    The image is decoded upright and resized (antialiased, rounded to whole pixel values,
    as :func:`eval_crop`) to :func:`eval_resize_size`, the size whose centre crop is the
    eval crop; :func:`five_crops` then cuts its corners and centre. The centre view is
    "resize, then centre-crop" done literally: it can differ from :func:`eval_crop`, which
    resizes the crop window alone, by resampling at the window's edges.

    Args:
        data: Encoded image bytes.
        kind: ``KIND_JPEG``, ``KIND_PIL`` or ``KIND_GRAPH``.
        orientation: EXIF orientation of a ``KIND_JPEG`` file (1 when unknown).
        image_size: The views' ``(height, width)``.
        crop_fraction: See :func:`center_crop_window`.
        interpolation: ``tf.image.resize`` method.
        kinds: The kinds that can occur; the graph holds only their decoders.
        oriented: Whether any JPEG has an EXIF orientation other than 1.
        formats: The formats ``KIND_GRAPH`` bytes can have (see :func:`graph_decode`).

    Returns:
        float32 ``[5, height, width, 3]`` with integral values in [0, 255].
    """
    image = decode_upright(data, tf.cast(kind, tf.int32), tf.cast(orientation, tf.int32),
                           kinds=kinds, oriented=oriented, formats=formats)
    shape = tf.shape(image)
    size = eval_resize_size(shape[0], shape[1], image_size, crop_fraction)
    resized = tf.round(resize_pixels(image, size, interpolation, True))
    return five_crops(resized, image_size)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Keeps RGB, or converts to one luminance channel for single-channel models (LeNet)."""
    if channels == 3:
        return image
    if channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"channels must be 1 or 3; got {channels!r}.")


def make_eval_transform(image_size: Sequence[int], crop_fraction: float = 0.875,
                        interpolation: str = "bilinear", channels: int = 3, *,
                        five_crop: bool = False):
    """Returns ``fn(image_bytes) -> float32 [H, W, C]``: the eval path in pure TensorFlow.

    Meant for a serving signature or ``zoo evaluate`` on raw bytes: JPEGs take the fused
    window decode, other formats ``tf.io.decode_image``. Bytes carry no scan, so EXIF
    orientation is read from the JPEG itself by :func:`jpeg_orientation`.

    Args:
        image_size: Output ``(height, width)``.
        crop_fraction: See :func:`center_crop_window`.
        interpolation: ``tf.image.resize`` method.
        channels: 3 for RGB, 1 for grayscale models.
        five_crop: Return the five views of :func:`eval_five_crop` instead of the centre
            crop: ``fn(image_bytes) -> float32 [5, H, W, C]`` (test-time augmentation).
    """
    check_interpolation(interpolation)
    check_crop_fraction(crop_fraction)
    size = (int(image_size[0]), int(image_size[1]))
    crop = eval_five_crop if five_crop else eval_crop

    def transform(image_bytes: tf.Tensor) -> tf.Tensor:
        is_jpeg = tf.io.is_jpeg(image_bytes)
        kind = tf.where(is_jpeg, KIND_JPEG, KIND_GRAPH)
        orientation = tf.cond(is_jpeg, lambda: jpeg_orientation(image_bytes),
                              lambda: tf.constant(1, tf.int32))
        image = crop(image_bytes, kind, orientation, size, crop_fraction=crop_fraction,
                     interpolation=interpolation, kinds=(KIND_JPEG, KIND_GRAPH))
        image = to_channels(image, channels)
        image.set_shape(([5] if five_crop else []) + [size[0], size[1], channels])
        return image

    return transform


def jpeg_orientation(data: tf.Tensor, max_segments: int = 16) -> tf.Tensor:
    """Reads the EXIF orientation tag (0x0112) of JPEG bytes in pure TensorFlow.

    Written by hand because no TensorFlow op reads EXIF, and a serving graph cannot call
    Pillow. Walks the JPEG marker segments up to the first APP1 "Exif" segment (or the start
    of scan), then the TIFF header and IFD0 entries, in either byte order.

    Args:
        data: JPEG bytes (scalar string tensor).
        max_segments: Marker segments to walk before giving up (APP1 comes first or
            second in practice).

    Returns:
        int32 orientation in 1..8; 1 when absent or unreadable.
    """
    reader = _Bytes(data)
    byte, u16, u32, length = reader.byte, reader.u16, reader.u32, reader.length

    def cond(pos, found, step):
        return (step < max_segments) & (found < 0) & (pos + 4 <= length)

    def body(pos, found, step):
        marker_ok = tf.equal(byte(pos), 0xFF)
        marker = byte(pos + 1)
        seg_len = u16(pos + 2, tf.constant(False))
        is_exif = (marker_ok & tf.equal(marker, 0xE1)
                   & tf.equal(tf.strings.substr(data, pos + 4, 6), b"Exif\x00\x00"))
        stop = (~marker_ok) | tf.equal(marker, 0xDA) | tf.equal(marker, 0xD9)
        found = tf.where(is_exif, pos + 10, tf.where(stop, 0, found))
        return pos + 2 + seg_len, found, step + 1

    _, tiff, _ = tf.while_loop(cond, body, [tf.constant(2), tf.constant(-1), tf.constant(0)])

    def read_ifd():
        little = tf.equal(tf.strings.substr(data, tiff, 2), b"II")
        ifd = tiff + u32(tiff + 4, little)
        count = tf.minimum(u16(ifd, little), 64)

        def entry_cond(i, value):
            return (i < count) & (value < 0) & (ifd + 2 + 12 * i + 10 <= length)

        def entry_body(i, value):
            entry = ifd + 2 + 12 * i
            value = tf.where(tf.equal(u16(entry, little), 0x0112), u16(entry + 8, little),
                             value)
            return i + 1, value

        _, value = tf.while_loop(entry_cond, entry_body, [tf.constant(0), tf.constant(-1)])
        return tf.where((value >= 1) & (value <= 8), value, 1)

    has_exif = (tiff > 0) & (tiff + 8 <= length)
    return tf.cond(has_exif, read_ifd, lambda: tf.constant(1, tf.int32))

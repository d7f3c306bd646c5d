"""Decoding and geometry: formats and modes to 8-bit RGB, EXIF orientation, the eval centre
crop against a Pillow reference, and the fused JPEG crop against decode-then-crop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps
from pipeline_helpers import jpeg_bytes, photo, png_bytes

import pipelines
from pipelines import transforms

SIZE = 48  # square test images, so that a crop fraction of 1 keeps every pixel


@pytest.fixture(scope="module")
def base():
    return photo("astronaut", (SIZE, SIZE))


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _formats(base):
    """name -> (file name, bytes, expected uint8 RGB, tolerance on the mean abs error)."""
    rgb = Image.fromarray(base)
    gray = rgb.convert("L")
    palette = rgb.quantize(64)
    rgba = rgb.convert("RGBA")
    alpha = np.full((SIZE, SIZE), 255, np.uint8)
    alpha[:, : SIZE // 2] = 0  # left half transparent -> white
    rgba.putalpha(Image.fromarray(alpha))
    rgba_expected = base.copy()
    rgba_expected[:, : SIZE // 2] = 255
    first, second = rgb.quantize(256, dither=Image.Dither.NONE), Image.new("P", rgb.size, 0)
    gif = _save(first, "GIF", save_all=True, append_images=[second], duration=100)
    gray16 = (np.asarray(gray).astype(np.uint16) * 257 + 100)[..., None]
    jpeg = jpeg_bytes(base, quality=95)
    gray_jpeg = _save(gray, "JPEG", quality=95)
    cmyk_jpeg = _save(rgb.convert("CMYK"), "JPEG", quality=95)
    rgb16 = base.astype(np.uint16) * 257 + 77
    return {
        # JPEGs: against what Pillow decodes from the same file (the two libjpeg-turbo builds
        # upsample chroma differently: about 2 levels on a detailed 48x48 photo).
        "jpeg": ("a.jpg", jpeg, _pil_rgb(jpeg), 2.5),
        "png": ("a.png", png_bytes(base), base, 0.0),
        "bmp": ("a.bmp", _save(rgb, "BMP"), base, 0.0),
        "gif_first_frame": ("a.gif", gif, np.asarray(first.convert("RGB")), 0.0),
        "webp": ("a.webp", _save(rgb, "WEBP", lossless=True), base, 0.0),
        "grayscale": ("a.png", _save(gray, "PNG"), np.asarray(gray.convert("RGB")), 0.0),
        "grayscale_jpeg": ("a.jpg", gray_jpeg, _pil_rgb(gray_jpeg), 2.5),
        "palette": ("a.png", _save(palette, "PNG"), np.asarray(palette.convert("RGB")), 0.0),
        "rgba": ("a.png", _save(rgba, "PNG"), rgba_expected, 0.0),
        # TensorFlow's CMYK conversion, which every path uses (a serving graph has no
        # other): about 2 levels from Pillow's on this photo.
        "cmyk_jpeg": ("a.jpg", cmyk_jpeg, _pil_rgb(cmyk_jpeg), 2.5),
        "gray16_png": ("a.png", tf.io.encode_png(gray16).numpy(),
                       np.repeat(np.asarray(gray)[..., None], 3, -1), 0.0),
        "rgb16_png": ("a.png", tf.io.encode_png(rgb16).numpy(), base, 0.0),
        "png_named_jpg": ("a.jpg", png_bytes(base), base, 0.0),
    }


@pytest.mark.parametrize("name", ["jpeg", "png", "bmp", "gif_first_frame", "webp", "grayscale",
                                  "grayscale_jpeg", "palette", "rgba", "cmyk_jpeg",
                                  "gray16_png", "rgb16_png", "png_named_jpg"])
def test_formats_and_modes_decode_to_8bit_rgb(tmp_path, base, name):
    filename, data, expected, tolerance = _formats(base)[name]
    path = tmp_path / filename
    path.write_bytes(data)
    result = pipelines.from_files([path], image_size=(SIZE, SIZE), crop_fraction=1.0,
                                  batch_size=1)
    assert result.paths == [str(path)] and not result.skipped
    (image,) = list(result.dataset)
    assert image.shape == (1, SIZE, SIZE, 3) and image.dtype == tf.float32
    error = np.abs(image.numpy()[0] - expected.astype(np.float32))
    assert error.mean() <= tolerance + 0.5, (name, error.mean())
    if tolerance == 0.0:
        assert error.max() <= 1.0, (name, error.max())


def test_jpegs_take_the_fused_path_others_the_graph_decoder_and_pillow_the_rest(tmp_path, base):
    kinds = {}
    for name, (filename, data, _, _) in _formats(base).items():
        path = tmp_path / f"{name}_{filename}"
        path.write_bytes(data)
        kinds[name] = pipelines.probe(str(path))[0]
    jpegs = ("jpeg", "grayscale_jpeg", "cmyk_jpeg")
    assert all(kinds[n] == transforms.KIND_JPEG for n in jpegs)
    assert all(kinds[n] == transforms.KIND_GRAPH for n in kinds if n not in jpegs)
    # What TensorFlow cannot decode goes to Pillow.
    one_bit = tmp_path / "one_bit.bmp"
    one_bit.write_bytes(_save(Image.fromarray(base).convert("1"), "BMP"))
    animated = tmp_path / "animated.webp"
    animated.write_bytes(_save(Image.fromarray(base), "WEBP", save_all=True,
                               append_images=[Image.fromarray(base[::-1])], duration=50))
    assert pipelines.probe(str(one_bit))[0] == pipelines.probe(str(animated))[0] \
        == transforms.KIND_PIL


# Stored image = upright image transformed by the inverse of each EXIF orientation.
_INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
            4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
            6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}


def _oriented_jpeg(upright: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(upright)
    if _INVERSE[orientation] is not None:
        image = image.transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(np.asarray(image), quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory):
    """A real photo (not square, so rotations show) stored in each EXIF orientation."""
    folder = tmp_path_factory.mktemp("exif")
    upright = photo("coffee", (60, 40))
    paths, references = [], []
    for orientation in range(1, 9):
        data = _oriented_jpeg(upright, orientation)
        path = folder / f"o{orientation}.jpg"
        path.write_bytes(data)
        paths.append(path)
        # What Pillow shows, saved losslessly: the reference for "upright".
        shown = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        reference = folder / f"o{orientation}_upright.png"
        reference.write_bytes(png_bytes(np.asarray(shown)))
        references.append(reference)
    return paths, references


def test_exif_orientation_is_respected_on_the_eval_path(phone_photos):
    paths, references = phone_photos
    assert [pipelines.probe(str(p))[1] for p in paths] == list(range(1, 9))
    size = dict(image_size=(24, 36), crop_fraction=0.9, batch_size=8)
    ours = np.concatenate([x.numpy() for x in pipelines.from_files(paths, **size).dataset])
    upright = np.concatenate([x.numpy() for x in
                              pipelines.from_files(references, **size).dataset])
    errors = np.abs(ours - upright).mean(axis=(1, 2, 3))
    assert errors.max() < 3.0, errors  # libjpeg-turbo vs Pillow's libjpeg: about 1
    # The stored pixels really are turned: read as stored, they would not match.
    stored = np.asarray(Image.open(paths[2]).convert("RGB"), np.float32)  # rotated 180
    upright_pixels = np.asarray(Image.open(references[0]).convert("RGB"), np.float32)
    assert np.abs(stored - upright_pixels).mean() > 20


def test_exif_orientation_is_respected_on_the_train_path(tmp_path):
    upright = photo("chelsea", (40, 40))
    reference = None
    for orientation in (1, 3, 6, 8, 5):
        data = tf.constant(_oriented_jpeg(upright, orientation))
        image = transforms.train_crop(data, transforms.KIND_JPEG, orientation,
                                      tf.constant([1, 2], tf.int64), (40, 40),
                                      scale=(1.0, 1.0), ratio=(1.0, 1.0)).numpy()
        reference = image if reference is None else reference
        assert np.abs(image - upright).mean() < 4.0, orientation
        assert np.abs(image - reference).mean() < 4.0, orientation


def test_graph_exif_reader_matches_pillow(phone_photos):
    paths, _ = phone_photos
    for orientation, path in enumerate(paths, start=1):
        assert int(transforms.jpeg_orientation(tf.constant(path.read_bytes()))) == orientation
    plain = jpeg_bytes(photo("coffee"))
    assert int(transforms.jpeg_orientation(tf.constant(plain))) == 1
    assert int(transforms.jpeg_orientation(tf.constant(b"\xff\xd8\xff"))) == 1


def test_serving_transform_on_bytes_equals_the_folder_eval_path(phone_photos):
    paths, _ = phone_photos
    kwargs = dict(image_size=(24, 36), crop_fraction=0.875)
    from_disk = np.concatenate([x.numpy() for x in
                                pipelines.from_files(paths, batch_size=8, **kwargs).dataset])
    transform = tf.function(pipelines.make_eval_transform((24, 36), 0.875))
    for i, path in enumerate(paths):
        on_bytes = transform(tf.constant(path.read_bytes())).numpy()
        np.testing.assert_array_equal(on_bytes, from_disk[i])


@pytest.mark.parametrize("name, size, fraction", [("coffee", (56, 56), 0.875),
                                                  ("rocket", (48, 64), 1.0),
                                                  ("astronaut", (40, 40), 0.95)])
def test_eval_path_is_resize_shorter_side_then_centre_crop(tmp_path, name, size, fraction):
    import skimage.data

    array = getattr(skimage.data, name)()
    path = tmp_path / f"{name}.png"
    path.write_bytes(png_bytes(array))
    (image,) = list(pipelines.from_files([path], image_size=size, crop_fraction=fraction,
                                         batch_size=1).dataset)
    # Pillow reference with timm's rule: shorter side to floor(max(size) / fraction).
    pil = Image.fromarray(array)
    short = int(np.floor(max(size) / fraction))
    w, h = pil.size
    new = (short, round(h * short / w)) if w <= h else (round(w * short / h), short)
    resized = pil.resize(new, Image.BILINEAR)
    left, top = (new[0] - size[1]) // 2, (new[1] - size[0]) // 2
    reference = np.asarray(resized.crop((left, top, left + size[1], top + size[0])), np.float32)
    assert np.abs(image.numpy()[0] - reference).mean() < 2.0


def test_fused_jpeg_crop_matches_decode_then_crop(tmp_path):
    # A large photo: most windows are decoded at 1/2 to 1/8 scale inside libjpeg.
    big = photo("astronaut", (1024, 768))
    data = tf.constant(jpeg_bytes(big, quality=95))
    for seed in range(6):
        seed = tf.constant([seed, 7], tf.int64)
        fused = transforms.train_crop(data, transforms.KIND_JPEG, 1, seed, (64, 64),
                                      antialias=True)
        decoded = transforms.train_crop(data, transforms.KIND_PIL, 1, seed, (64, 64),
                                        antialias=True)
        assert np.abs(fused.numpy() - decoded.numpy()).mean() < 4.0


def test_random_resized_crop_varies_with_the_seed_only(tmp_path):
    data = tf.constant(jpeg_bytes(photo("coffee", (200, 150))))
    seed = tf.constant([3, 4], tf.int64)

    def crop(s):
        return transforms.train_crop(data, transforms.KIND_JPEG, 1, s, (32, 32)).numpy()

    np.testing.assert_array_equal(crop(seed), crop(seed))
    assert not np.array_equal(crop(seed), crop(tf.constant([5, 6], tf.int64)))

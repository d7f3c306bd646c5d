"""One decode rule on every path: training, evaluation, the SavedModel's bytes signature and
``zoo predict`` see the same pixels, transparency composited over white, for the formats
and modes a folder of images really holds."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from pipeline_helpers import photo

import pipelines
import zoo
from pipelines import transforms
from zoo.predict import Predictor

WIDTH, HEIGHT = 40, 30
OUT = (24, 24)


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    return photo("chelsea", (WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def alpha() -> np.ndarray:
    """Left third transparent, a half-transparent band on top, the rest opaque."""
    mask = np.full((HEIGHT, WIDTH), 255, np.uint8)
    mask[:, : WIDTH // 3] = 0
    mask[:6] = 100
    return mask


def _rgba(base, alpha) -> Image.Image:
    image = Image.fromarray(base).convert("RGBA")
    image.putalpha(Image.fromarray(alpha))
    return image


@pytest.fixture(scope="module")
def transparent(base, alpha) -> dict[str, tuple[str, bytes]]:
    """Files with transparency: name -> (file name, bytes)."""
    rgba = _rgba(base, alpha)
    la = Image.fromarray(base).convert("L").convert("LA")
    la.putalpha(Image.fromarray(alpha))
    palette = Image.fromarray(base).quantize(16)
    first = int(np.asarray(palette)[HEIGHT // 2, WIDTH // 2])  # an index that occurs
    second = Image.fromarray(base[::-1].copy()).quantize(16)
    return {
        "rgba_png": ("rgba.png", _save(rgba, "PNG")),
        "la_png": ("la.png", _save(la, "PNG")),
        "palette_png_transparent_index": ("p1.png", _save(palette, "PNG", transparency=first)),
        "palette_png_alpha_table": ("p2.png", _save(palette, "PNG", transparency=bytes(
            [0, 60, 128, 200] + [255] * 12))),
        "gif_transparent_index": ("t.gif", _save(palette, "GIF", transparency=first)),
        "animated_gif_transparent_index": ("a.gif", _save(
            palette, "GIF", save_all=True, append_images=[second], transparency=first,
            duration=50, loop=0)),
        "webp_alpha_lossless": ("l.webp", _save(rgba, "WEBP", lossless=True)),
        "webp_alpha_lossy": ("y.webp", _save(rgba, "WEBP", quality=70)),
    }


@pytest.fixture(scope="module")
def opaque(base, alpha) -> dict[str, tuple[str, bytes]]:
    """Other files whose decoding differs between libraries unless it is one rule."""
    wide = np.dstack([base.astype(np.uint16) * 257 + 77, alpha.astype(np.uint16) * 257])
    return {
        "cmyk_jpeg": ("cmyk.jpg", _save(Image.fromarray(base).convert("CMYK"), "JPEG",
                                        quality=92)),
        "rgba16_png": ("rgba16.png", tf.io.encode_png(wide).numpy()),
        "palette_bmp": ("p.bmp", _save(Image.fromarray(base).quantize(50), "BMP")),
        "gray_bmp": ("g.bmp", _save(Image.fromarray(base).convert("L"), "BMP")),
        "rgb_webp": ("rgb.webp", _save(Image.fromarray(base), "WEBP", quality=70)),
    }


def _served_pixels(data: bytes, crop_fraction: float = 0.875) -> tf.Tensor:
    """The SavedModel's bytes path: pipelines.make_eval_transform, nothing else."""
    return pipelines.make_eval_transform(OUT, crop_fraction, "bilinear", 3)(tf.constant(data))


def _graph_decode(data: bytes) -> np.ndarray:
    return transforms.graph_decode(tf.constant(data)).numpy()


def test_our_composite_is_pillows_for_every_colour_and_alpha():
    colour, alpha = np.meshgrid(np.arange(256), np.arange(256))
    rgba = np.dstack([colour, 255 - colour, colour, alpha]).astype(np.uint8)
    white = Image.new("RGBA", (256, 256), (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")))[..., :3]
    np.testing.assert_array_equal(transforms.composite_over_white(rgba).numpy(), expected)
    # The Pillow fallback (files TensorFlow cannot read) composites by the same formula.
    np.testing.assert_array_equal(
        transforms.pil_to_rgb(Image.fromarray(rgba, "RGBA")), expected)


@pytest.mark.parametrize("name", [
    "rgba_png", "la_png", "palette_png_transparent_index", "palette_png_alpha_table",
    "gif_transparent_index", "animated_gif_transparent_index", "webp_alpha_lossless",
    "webp_alpha_lossy"])
def test_graph_decoder_composites_transparency_over_white_as_pillow(transparent, name):
    _, data = transparent[name]
    with Image.open(io.BytesIO(data)) as image:
        shown = image.convert("RGBA")
    assert np.asarray(shown)[..., 3].min() == 0  # the file really has transparent pixels
    white = Image.new("RGBA", shown.size, (255, 255, 255, 255))
    expected = np.asarray(Image.alpha_composite(white, shown).convert("RGB"))
    np.testing.assert_array_equal(_graph_decode(data), expected)


def test_sixteen_bit_samples_round_to_eight_bits_before_compositing(opaque, base, alpha):
    _, data = opaque["rgba16_png"]
    colour = np.round((base.astype(np.float64) * 257 + 77) / 257)  # = base
    a = alpha[..., None].astype(np.float64)
    expected = np.round((colour * a + 255 * (255 - a)) / 255).astype(np.uint8)
    np.testing.assert_array_equal(_graph_decode(data), expected)


@pytest.mark.parametrize("name", ["palette_bmp", "gray_bmp", "rgb_webp"])
def test_graph_decoder_reads_palette_bmps_and_webp_as_pillow_shows_them(opaque, name):
    _, data = opaque[name]
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(_graph_decode(data), expected)


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory, transparent, opaque):
    """Every variant as a file, in one folder."""
    folder = tmp_path_factory.mktemp("mixed")
    paths = []
    for name, (filename, data) in {**transparent, **opaque}.items():
        path = folder / f"{name}_{filename}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def _evaluated_pixels(paths, crop_fraction: float = 0.875) -> np.ndarray:
    """What ``zoo evaluate`` feeds the model (pipelines.from_files, the eval path)."""
    files = pipelines.from_files(paths, image_size=OUT, crop_fraction=crop_fraction,
                                 interpolation="bilinear", batch_size=64)
    assert files.paths == [str(p) for p in paths] and not files.skipped
    return np.concatenate([batch.numpy() for batch in files.dataset])


def test_served_pixels_are_the_evaluated_pixels(mixed_files):
    evaluated = _evaluated_pixels(mixed_files)
    for path, expected in zip(mixed_files, evaluated):
        served = _served_pixels(path.read_bytes(), 0.875)
        np.testing.assert_array_equal(served.numpy(), expected, err_msg=path.name)


def test_training_decodes_by_the_same_rule(tmp_path, mixed_files):
    # Without augmentation the train path centre-crops like the eval path: same pixels.
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for path in mixed_files:
            (root / label / path.name).write_bytes(path.read_bytes())
    data = pipelines.from_folder(root, image_size=OUT, validation_split=0.0, augment="none",
                                 shuffle=False, deterministic=True, cache=False,
                                 batch_size=64)
    trained_on = np.concatenate([x.numpy() for x, _ in data.train])
    evaluated = _evaluated_pixels([path for path, _ in data.train_files])
    np.testing.assert_array_equal(trained_on, evaluated)


def test_savedmodel_and_predict_answer_for_the_evaluated_pixels(tmp_path, mixed_files):
    model = zoo.build("lenet5", num_classes=3, input_shape=(*OUT, 3))
    result = zoo.export(model, tmp_path / "export", class_names=["cat", "dog", "owl"],
                        sample_images=[str(p) for p in mixed_files[:3]])
    served = tf.saved_model.load(result["savedmodel"])
    images = tf.constant([p.read_bytes() for p in mixed_files])
    from_bytes = served.signatures["serving_default"](image_bytes=images)["probabilities"]
    # The export takes the eval transform from lenet5's spec, as evaluate does.
    evaluated = _evaluated_pixels(mixed_files, zoo.describe("lenet5", measure=False)[
        "crop_fraction"])
    from_pixels = served.signatures["serving_pixels"](pixels=tf.constant(evaluated))
    np.testing.assert_allclose(from_bytes.numpy(), from_pixels["probabilities"].numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_bytes.numpy(), model(evaluated).numpy(), atol=1e-5)
    predictor = Predictor(result["savedmodel"])
    np.testing.assert_allclose(predictor.probabilities([p.read_bytes() for p in mixed_files]),
                               from_bytes.numpy(), atol=1e-6)


def test_files_tensorflow_cannot_read_train_with_pillow_and_are_refused_when_served(
        tmp_path, base):
    one_bit = tmp_path / "one_bit.bmp"
    one_bit.write_bytes(_save(Image.fromarray(base).convert("1"), "BMP"))
    animated = tmp_path / "animated.webp"
    animated.write_bytes(_save(Image.fromarray(base), "WEBP", save_all=True,
                               append_images=[Image.fromarray(base[::-1].copy())],
                               duration=50))
    files = pipelines.from_files([one_bit, animated], image_size=OUT, crop_fraction=1.0)
    assert files.paths == [str(one_bit), str(animated)]
    for path, message in ((one_bit, "Unsupported BMP (1 bits per pixel, compression 0)"),
                          (animated, "Unsupported WebP: an animation")):
        assert pipelines.probe(str(path))[0] == transforms.KIND_PIL
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
            _served_pixels(path.read_bytes())
    model_path = tmp_path / "lenet5.keras"
    zoo.build("lenet5", num_classes=2, input_shape=(*OUT, 3)).save(model_path)
    answers = Predictor(model_path, class_names=["a", "b"]).predict([one_bit, animated])
    assert [a["error"] for a in answers] == [
        "not a decodable image: Unsupported BMP (1 bits per pixel, compression 0): "
        "uncompressed 8-, 24- and 32-bit BMPs are decoded. Send it as PNG or JPEG.",
        "not a decodable image: Unsupported WebP: an animation. Send its first frame as PNG "
        "or JPEG."]

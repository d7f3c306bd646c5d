"""Export: the SavedModel's signatures, self-check, atomicity, TFLite variants, ONNX, the CLI.

One LeNet-5, trained for a few seconds on scikit-learn's digits written as PNG files, is
exported once per module in every format; the tests then probe the artifacts.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pipelines
import zoo
from pipelines import transforms
from zoo import deploy, rundir
from zoo.deploy import FORMATS, ExportCheckError, existing_versions, run_tflite

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
HAVE_ONNX = all(__import__("importlib").util.find_spec(m) for m in
                ("tf2onnx", "onnx", "onnxruntime"))
ALL_FORMATS = ["savedmodel", "tflite", "tflite-fp16", "tflite-dynamic", "tflite-int8"] + (
    ["onnx"] if HAVE_ONNX else [])


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels.astype("uint8"), mode).save(buffer, fmt)
    return buffer.getvalue()


def bytes_eval(data: bytes, size, crop_fraction: float = 0.875, interpolation: str = "bilinear",
               channels: int = 3) -> np.ndarray:
    """The bytes path: what the SavedModel's serving_default and zoo evaluate run."""
    transform = pipelines.make_eval_transform(size, crop_fraction, interpolation, channels)
    return transform(tf.constant(data)).numpy()


def pixels_eval(image: np.ndarray, size, crop_fraction: float = 0.875,
                interpolation: str = "bilinear") -> np.ndarray:
    """An independent eval crop of decoded pixels, from pipelines' public steps.

    No decoding, no JPEG window, no EXIF, no format dispatch: cut the centre window,
    resize it with antialiasing, round. The bytes path must agree with it on lossless files.
    """
    crop = transforms.center_crop(tf.constant(image), size, crop_fraction)
    resized = transforms.resize_pixels(tf.cast(crop, tf.float32), size, interpolation,
                                       antialias=True)
    return tf.round(resized).numpy()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Digits as 32x32 grayscale PNGs in class folders: (root, paths, labels, pixels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0 * 255).astype("uint8")
    root = tmp_path_factory.mktemp("digits")
    paths, pixels = [], []
    for i, (image, label) in enumerate(zip(images, data.target)):
        big = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(big).save(path)
        paths.append(path)
        pixels.append(big)
    return root, paths, data.target.astype("int32"), np.stack(pixels)[..., None].astype(
        "float32")


@pytest.fixture(scope="module")
def trained(digits):
    """LeNet-5 trained for a few epochs on 1,500 digits (about 95% on the other 297)."""
    _, _, labels, pixels = digits
    keras.utils.set_random_seed(0)
    model = zoo.build("lenet5", num_classes=10)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(pixels[:1500], labels[:1500], epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained, digits):
    """A run directory written by zoo.rundir, as the fine-tuning recipe writes it."""
    _, paths, _, _ = digits
    return rundir.write_run(
        tmp_path_factory.mktemp("run"), model=trained, model_name="lenet5",
        class_names=CLASS_NAMES, geometry=zoo.geometry("lenet5"),
        card="# LeNet-5 on digits\n\nA hand-written model card.\n",
        samples=paths[1500:1520], val_accuracy=0.95, status="finished")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, run_dir, digits):
    root, _, _, _ = digits
    out = tmp_path_factory.mktemp("export")
    return zoo.export(run_dir, out, formats=ALL_FORMATS, top_k=3, representative_images=root)


@pytest.fixture(scope="module")
def served(exported):
    return tf.saved_model.load(exported["savedmodel"])


# ----------------------------------------------------------------------- eval transform


def test_eval_transform_resizes_the_shorter_side_and_centre_crops():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3)).astype("uint8")
    # crop 0.5 of a 64-pixel shorter side resized to 64: the centre 32x32, pixel for pixel.
    out = bytes_eval(encode(image, "PNG"), (32, 32), crop_fraction=0.5)
    np.testing.assert_array_equal(out, image[16:48, 32:64].astype("float32"))
    # An image already at the input size, crop 1.0: unchanged.
    np.testing.assert_array_equal(bytes_eval(encode(image[:32, :32], "PNG"), (32, 32), 1.0),
                                  image[:32, :32].astype("float32"))


@pytest.mark.parametrize("shape,size,crop", [((97, 131), (56, 56), 0.875),
                                             ((131, 97), (56, 56), 0.875),
                                             ((300, 200), (64, 64), 1.0)])
def test_eval_transform_matches_pillow_resize_then_crop(shape, size, crop):
    """Against torchvision's recipe done with Pillow: Resize(size / crop), CenterCrop(size)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.clip(np.stack([255 * yy / h, 255 * xx / w, 128 + 90 * np.sin(xx / 5 + yy / 7)],
                             -1), 0, 255).astype("uint8")
    short = int(size[0] / crop)
    new = (short, w * short // h) if h <= w else (h * short // w, short)
    resized = np.asarray(Image.fromarray(image).resize(new[::-1], Image.BILINEAR), "float32")
    top, left = (new[0] - size[0]) // 2, (new[1] - size[1]) // 2
    expected = resized[top:top + size[0], left:left + size[1]]
    got = bytes_eval(encode(image, "PNG"), size, crop, "bilinear")
    assert got.shape == (*size, 3)
    # The window is cut in whole source pixels before the resize (the pipelines' way, which
    # lets a JPEG decode only the window): the grid moves by under half a source pixel.
    assert np.mean(np.abs(got - expected)) < 1.0
    assert np.all(np.isin(got, np.arange(256)))  # whole values, as Pillow gives


@pytest.mark.parametrize("shape,size,crop,channels", [((97, 131, 3), (56, 56), 0.875, 3),
                                                      ((131, 97, 3), (64, 48), 0.875, 3),
                                                      ((40, 48, 3), (32, 32), 1.0, 1)])
def test_bytes_path_equals_from_files_and_the_crop_of_decoded_pixels(tmp_path, shape, size,
                                                                     crop, channels):
    """The bytes path (the serving signature's) against two routes that share no decoder
    dispatch with it: pipelines.from_files on the file (the scan's kind and orientation,
    zoo evaluate's path), and the centre crop and resize of the array itself."""
    pixels = np.random.default_rng(1).integers(0, 256, shape)
    path = tmp_path / "image.png"
    path.write_bytes(encode(pixels, "PNG"))
    served = bytes_eval(path.read_bytes(), size, crop, "bilinear", channels)
    files = pipelines.from_files([path], image_size=size, crop_fraction=crop,
                                 interpolation="bilinear", channels=channels)
    evaluated = np.concatenate([batch.numpy() for batch in files.dataset])[0]
    on_pixels = pixels_eval(pixels.astype("uint8"), size, crop, "bilinear")
    if channels == 1:
        on_pixels = tf.image.rgb_to_grayscale(on_pixels).numpy()
    assert served.shape == (*size, channels)
    np.testing.assert_allclose(on_pixels, served, atol=1e-4)
    np.testing.assert_array_equal(served, evaluated)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_jpegs_are_turned_upright_by_their_exif_orientation(orientation):
    from PIL import ImageOps

    h, w = 60, 90
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([255 * yy / h, 255 * xx / w, 0 * xx], -1).astype("uint8")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", exif=exif, quality=95)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))),
                         "float32")
    # The serving path against the eval crop of Pillow's upright image: the same
    # geometry only if the orientation was applied (a sideways image is far off).
    size = upright.shape[:2]
    got = bytes_eval(buffer.getvalue(), size, 0.875)
    expected = pixels_eval(upright, size, 0.875)
    assert got.shape == expected.shape == upright.shape
    assert np.mean(np.abs(got - expected)) < 2.0  # two JPEG decoders, same geometry


# --------------------------------------------------------------------- the SavedModel


def test_export_layout_report_and_assets(exported, run_dir):
    version = Path(exported["savedmodel"])
    assert version.name == "1" and version.parent.name.startswith("export")
    for fmt in ALL_FORMATS:
        assert Path(exported[fmt]).exists(), fmt
    assert (version / "assets" / "class_names.txt").read_text().splitlines() == CLASS_NAMES
    assert (version / "assets" / "README.md").read_text() == (run_dir / "README.md").read_text()
    report = json.loads(Path(exported["report"]).read_text())
    assert report["model"] == "lenet5" and report["class_names"] == CLASS_NAMES
    assert report["eval_transform"] == {"crop_fraction": 1.0, "interpolation": "bilinear",
                                        "antialias": True}
    assert set(report["checks"]) == set(ALL_FORMATS)
    # Nothing but the version is left in the export directory.
    assert [p.name for p in version.parent.iterdir()] == ["1"]
    # No Python-only operation may sit in the graph: TF Serving (C++) could not load it.
    graph = (version / "saved_model.pb").read_bytes()
    assert b"PyFunc" not in graph


def test_export_and_predict_serve_the_geometry_the_run_recorded(tmp_path, trained, digits):
    """A run whose data used another crop than the spec's: export and predict use the run's."""
    from zoo.predict import Predictor

    _, paths, _, _ = digits
    geometry = zoo.geometry("lenet5", crop_fraction=0.75)
    assert zoo.geometry("lenet5").crop_fraction == 1.0
    run = rundir.write_run(tmp_path / "run", model=trained, model_name="lenet5",
                           class_names=CLASS_NAMES, geometry=geometry)
    result = zoo.export(run, tmp_path / "export")
    report = json.loads(Path(result["report"]).read_text())
    assert report["eval_transform"]["crop_fraction"] == 0.75
    image = paths[1550].read_bytes()
    served = tf.saved_model.load(result["savedmodel"]).signatures["serving_default"](
        image_bytes=tf.constant([image]))["probabilities"].numpy()

    def keras_at(crop_fraction):
        return trained(bytes_eval(image, (32, 32), crop_fraction, "bilinear", 1)[None],
                       training=False).numpy()

    np.testing.assert_allclose(served, keras_at(0.75), atol=1e-5)
    assert np.max(np.abs(served - keras_at(1.0))) > 1e-3  # the crop really matters here
    np.testing.assert_allclose(Predictor(run).probabilities([image]), served, atol=1e-5)


def test_savedmodel_stores_each_weight_once(exported, trained):
    # keras-team/keras#23553: ExportArchive.track(model) stores every weight twice.
    reader = tf.train.load_checkpoint(str(Path(exported["savedmodel"]) / "variables" /
                                          "variables"))
    stored = sum(int(np.prod(shape)) for name, shape in reader.get_variable_to_shape_map().items()
                 if name.endswith("VARIABLE_VALUE"))
    assert stored == trained.count_params()


def test_savedmodel_loads_without_zoo_and_matches_keras(exported, trained, digits):
    """In a fresh process with TensorFlow alone: every signature, every image format."""
    _, paths, _, pixels = digits
    rgb = np.repeat(pixels[1500:1504], 3, axis=-1)
    images = [paths[1500].read_bytes(),                               # grayscale PNG
              encode(rgb[1], "JPEG"), encode(rgb[2], "BMP"), encode(rgb[3], "GIF"),  # RGB
              encode(np.pad(pixels[1504, ..., 0], ((8, 8), (0, 0))), "PNG")]  # 48x32: cropped
    inputs = Path(exported["savedmodel"]).parent.parent / "inputs.json"
    inputs.write_text(json.dumps([base64.b64encode(b).decode() for b in images]))
    script = textwrap.dedent(f"""
        import base64, json, sys
        import tensorflow as tf
        images = [base64.b64decode(s) for s in json.load(open({str(inputs)!r}))]
        loaded = tf.saved_model.load({exported["savedmodel"]!r})
        sigs = loaded.signatures
        out = {{}}
        out["bytes"] = sigs["serving_default"](image_bytes=tf.constant(images))
        out["b64"] = sigs["serving_b64"](
            image_b64=tf.constant([base64.b64encode(b) for b in images]))
        specs = {{k: [[n, s.dtype.name, s.shape.as_list()]
                      for n, s in f.structured_input_signature[1].items()]
                 for k, f in sigs.items()}}
        result = {{k: {{n: t.numpy().tolist() if t.dtype != tf.string else
                       [[x.decode() for x in row] for row in t.numpy()]
                       for n, t in v.items()}} for k, v in out.items()}}
        print(json.dumps({{"specs": specs, "results": result,
                          "zoo_imported": "zoo" in sys.modules}}))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd="/", timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # A server's log shows no error line from TensorFlow for a good request (oneDNN once
    # logged one for a uint8 Transpose in the serving graph).
    assert not [line for line in proc.stderr.splitlines() if line.startswith("E0000")]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not answer["zoo_imported"]
    assert answer["specs"] == {
        "serving_default": [["image_bytes", "string", [None]]],
        "serving_b64": [["image_b64", "string", [None]]],
        "serving_pixels": [["pixels", "float32", [None, 32, 32, 1]]],
    }
    # The Keras model on the transform done in this process (the evaluation path).
    expected_pixels = np.stack([bytes_eval(b, (32, 32), 1.0, "bilinear", 1) for b in images])
    expected = trained(expected_pixels, training=False).numpy()
    for name in ("bytes", "b64"):
        result = answer["results"][name]
        assert np.max(np.abs(np.array(result["probabilities"]) - expected)) <= 1e-5
        top = np.argsort(-expected, axis=-1)[:, :3]
        assert result["labels"] == [[CLASS_NAMES[i] for i in row] for row in top]
        np.testing.assert_allclose(result["scores"], np.take_along_axis(expected, top, -1),
                                   atol=1e-5)
    # The grayscale PNG is a digit the model knows.
    assert answer["results"]["bytes"]["labels"][0][0] == CLASS_NAMES[int(paths[1500].parent.name)]


def test_pixels_signature_is_the_keras_model(served, trained, digits):
    _, _, _, pixels = digits
    batch = pixels[1600:1632]
    out = served.signatures["serving_pixels"](pixels=tf.constant(batch))
    expected = trained(batch, training=False).numpy()
    assert np.max(np.abs(out["probabilities"].numpy() - expected)) <= 1e-5
    np.testing.assert_array_equal(out["class_ids"].numpy()[:, 0], expected.argmax(-1))


def test_b64_signature_takes_every_common_spelling(served, digits):
    _, paths, _, _ = digits
    data = paths[1700].read_bytes()
    standard = base64.b64encode(data).decode()
    spellings = [standard, base64.urlsafe_b64encode(data).decode(), standard.rstrip("="),
                 "\n".join(standard[i:i + 76] for i in range(0, len(standard), 76)),
                 "data:image/png;base64," + standard]
    # As a REST client would send them: JSON text.
    body = json.loads(json.dumps({"instances": spellings}))
    out = served.signatures["serving_b64"](image_b64=tf.constant(body["instances"]))
    reference = served.signatures["serving_default"](image_bytes=tf.constant([data]))
    for row in out["probabilities"].numpy():
        # Same pixels; batch size 5 against 1 changes only the float summation order.
        np.testing.assert_allclose(row, reference["probabilities"].numpy()[0], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 33, 33, 1), (2, 32, 32, 3), (1, 64, 48, 1),
                                   (1, 32, 32, 2)])
def test_pixels_of_another_shape_are_refused_naming_the_expected_one(served, digits, shape):
    signature = served.signatures["serving_pixels"]
    pixels = np.full(shape, 128.0, dtype="float32")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"serving_pixels takes float32 pixels of shape \[batch, 32, 32, 1\]"):
        signature(pixels=tf.constant(pixels))
    _, _, _, good = digits
    assert signature(pixels=tf.constant(good[:1]))["labels"].shape == (1, 3)


def test_nan_pixels_are_refused(served, digits):
    _, _, _, pixels = digits
    batch = pixels[:2].copy()
    batch[1, 5, 7, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite pixels"):
        served.signatures["serving_pixels"](pixels=tf.constant(batch))


@pytest.mark.parametrize("bad,message", [
    ("truncated", "Invalid JPEG data"),
    ("text", "Unknown image file format"),
    ("empty", "Input is empty"),
])
def test_bad_image_is_a_clear_request_error_and_serving_goes_on(served, digits, bad, message):
    _, paths, _, pixels = digits
    good = paths[1].read_bytes()
    jpeg = encode(pixels[2, ..., 0], "JPEG")
    payload = {"truncated": jpeg[: len(jpeg) // 2], "text": b"Hello, I am a text file.\n",
               "empty": b""}[bad]
    serve = served.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(image_bytes=tf.constant([good, payload]))
    # The same loaded model answers the next request (as TF Serving answers 400 and goes on).
    assert serve(image_bytes=tf.constant([good]))["labels"].shape == (1, 3)


# ------------------------------------------------------------------ self-check, atomicity


def test_self_check_failure_is_loud_and_leaves_nothing(tmp_path, trained, monkeypatch):
    original = deploy.savedmodel.write

    def write_a_different_model(source, probability_model, target, top_k, scratch,
                                **options):
        # A SavedModel whose classifier bias differs from the Keras model it is checked on.
        bias = probability_model.get_layer("predictions").bias
        saved = bias.numpy()
        bias.assign(saved + np.linspace(0, 1, saved.size).astype("float32"))
        try:
            original(source, probability_model, target, top_k, scratch, **options)
        finally:
            bias.assign(saved)

    monkeypatch.setattr(deploy.savedmodel, "write", write_a_different_model)
    out = tmp_path / "out"
    with pytest.raises(ExportCheckError, match=r"Self-check failed for the SavedModel's "
                       r"serving_default signature.*\(tolerance 1e-05\)"):
        zoo.export(trained, out, class_names=CLASS_NAMES)
    assert list(out.iterdir()) == []


def test_crash_mid_export_never_leaves_a_version(tmp_path, trained):
    """The process dies (os._exit) after the SavedModel is written: no version appears."""
    model_path = tmp_path / "lenet.keras"
    trained.save(model_path)
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os
        import sys
        import zoo.deploy as deploy
        def crash(fmt, staging):
            assert (staging / "saved_model.pb").is_file()
            os._exit(3)
        deploy._after_format_hook = crash
        deploy.export({str(model_path)!r}, {str(out)!r}, formats="savedmodel,tflite")
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=240)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert existing_versions(out) == []
    leftovers = list(out.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".zoo-export-")


def test_versions_and_overwrite(tmp_path, trained, monkeypatch):
    out = tmp_path / "out"
    first = zoo.export(trained, out, class_names=CLASS_NAMES, formats="tflite")
    second = zoo.export(trained, out, class_names=CLASS_NAMES, formats="tflite")
    assert existing_versions(out) == [1, 2]
    assert Path(first["tflite"]).parent.name == "1" and Path(second["tflite"]).parent.name == "2"
    marker = out / "1" / "marker"
    marker.write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        zoo.export(trained, out, class_names=CLASS_NAMES, formats="tflite", version=1)
    assert marker.exists()

    # A failure while overwriting keeps the old version.

    def fail(fmt, staging):
        raise RuntimeError("disk full")

    monkeypatch.setattr(deploy, "_after_format_hook", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        zoo.export(trained, out, class_names=CLASS_NAMES, formats="tflite", version=1,
                   overwrite=True)
    assert marker.exists()
    monkeypatch.undo()

    zoo.export(trained, out, class_names=CLASS_NAMES, formats="tflite", version=1,
               overwrite=True)
    assert not marker.exists() and (out / "1" / "model.tflite").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]


# -------------------------------------------------------------------------------- TFLite


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_variants_sizes_and_accuracy(exported, trained, digits):
    _, _, labels, pixels = digits
    test_x, test_y = pixels[1500:], labels[1500:]
    keras_accuracy = np.mean(trained(test_x, training=False).numpy().argmax(-1) == test_y)
    assert keras_accuracy > 0.85
    sizes = {fmt: Path(exported[fmt]).stat().st_size for fmt in FORMATS
             if fmt.startswith("tflite")}
    assert sizes["tflite-fp16"] < 0.6 * sizes["tflite"]
    assert sizes["tflite-dynamic"] < 0.35 * sizes["tflite"]
    assert sizes["tflite-int8"] < 0.35 * sizes["tflite"]
    for fmt in sizes:
        probabilities = run_tflite(exported[fmt], test_x)
        accuracy = np.mean(probabilities.argmax(-1) == test_y)
        assert accuracy >= keras_accuracy - 0.03, (fmt, accuracy, keras_accuracy)
        check = exported.checks[fmt]
        assert check["bytes"] == sizes[fmt]
        assert ("tolerance" in check) == (fmt == "tflite")
    assert exported.checks["tflite"]["max_abs_diff"] <= 1e-4

    # Full integer: uint8 pixels in, and every convolution and dense layer computes in int8.
    interpreter = tf.lite.Interpreter(model_path=exported["tflite-int8"])
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    dtypes = {d["index"]: d["dtype"] for d in interpreter.get_tensor_details()}
    compute = [op for op in interpreter._get_ops_details()
               if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(compute) == 5  # c1, c3, c5, f6, predictions
    assert all(dtypes[op["inputs"][0]] == np.int8 and dtypes[op["inputs"][1]] == np.int8
               for op in compute)


def test_int8_needs_representative_images(tmp_path, trained):
    with pytest.raises(ValueError, match="representative"):
        zoo.export(trained, tmp_path / "out", class_names=CLASS_NAMES, formats="tflite-int8")
    assert not (tmp_path / "out").exists() or existing_versions(tmp_path / "out") == []


# ---------------------------------------------------------------------------------- ONNX


@pytest.mark.skipif(not HAVE_ONNX, reason="the onnx extra (tf2onnx, onnx, onnxruntime) is "
                    "not installed")
def test_onnx_matches_keras_in_onnxruntime(exported, trained, digits):
    import onnxruntime

    _, _, _, pixels = digits
    session = onnxruntime.InferenceSession(exported["onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    assert json.loads(session.get_modelmeta().custom_metadata_map["class_names"]) == CLASS_NAMES
    batch = pixels[1500:1564]
    got = session.run(None, {"pixels": batch})[0]
    assert np.max(np.abs(got - trained(batch, training=False).numpy())) <= 1e-4
    assert exported.checks["onnx"]["max_abs_diff"] <= 1e-4


# ----------------------------------------------------------------- contract, errors, CLI


def test_run_dir_contract_errors(tmp_path, run_dir):
    # Broken run directories, which write_run cannot make, so their run.json is hand-written.
    with pytest.raises(FileNotFoundError, match="run.json"):
        rundir.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"model": "lenet5"}))
    with pytest.raises(ValueError, match="class_names"):
        rundir.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"model": "lenet5", "class_names": ["a"]}))
    with pytest.raises(FileNotFoundError, match="best.keras"):
        rundir.read_run(tmp_path)
    (tmp_path / "best.keras").write_bytes((run_dir / "best.keras").read_bytes())
    with pytest.raises(ValueError, match="1 class names for a model with 10 outputs"):
        zoo.export(tmp_path, tmp_path / "out")
    run = rundir.read_run(run_dir)
    assert run.model_name == "lenet5" and run.class_names == CLASS_NAMES
    assert run.card_path.name == "README.md" and run.samples_dir.name == "samples"


def test_unregistered_model_needs_a_model_name(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)), name="mine")
    with pytest.raises(ValueError, match="model_name="):
        zoo.export(model, tmp_path, class_names=["a", "b"])


def test_logits_model_exports_probabilities_rgb(tmp_path):
    model = zoo.build("lenet5", num_classes=3, input_shape=(32, 32, 3),
                      classifier_activation=None)
    result = zoo.export(model, tmp_path, class_names=["cat", "dog", "owl"], formats="tflite")
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    probabilities = run_tflite(result["tflite"], pixels)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(model(pixels)).numpy(), atol=1e-5)


def test_unknown_format_names_the_choices(tmp_path, trained):
    with pytest.raises(ValueError, match="tflite-int8"):
        zoo.export(trained, tmp_path, formats="savedmodel,tflite8")


def test_cli_export_prints_the_checks(tmp_path, run_dir, capsys):
    from zoo.cli import main

    out = tmp_path / "out"
    assert main(["export", str(run_dir), "--out", str(out), "--format", "savedmodel"]) == 0
    text = capsys.readouterr().out
    assert "savedmodel" in text and "(<= 1e-05)" in text and "version 1 written" in text
    assert main(["export", str(run_dir), "--out", str(out), "--version", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ------------------------------------------------------------------------------- predict


def _predict_json(capsys, *argv):
    from zoo.cli import main

    code = main(["predict", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_predict_agrees_on_keras_file_run_dir_and_savedmodel(tmp_path, run_dir, exported,
                                                             digits, capsys):
    _, paths, _, _ = digits
    images = [paths[1510], paths[1511], paths[1512]]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(CLASS_NAMES) + "\n")
    # A .keras file away from its run directory, with its labels given.
    lonely = tmp_path / "lenet5.keras"
    lonely.write_bytes((run_dir / "best.keras").read_bytes())
    answers = {}
    for name, model, extra in [("keras", lonely, ["--labels", labels_file]),
                               ("run", run_dir, []),
                               ("export dir", Path(exported["savedmodel"]).parent, []),
                               ("version dir", exported["savedmodel"], [])]:
        code, answer, _ = _predict_json(capsys, model, *images, "--top-k", "2", *extra)
        assert code == 0, name
        answers[name] = answer
    reference = answers["run"]
    assert [r["image"] for r in reference] == [str(p) for p in images]
    truth = [CLASS_NAMES[int(p.parent.name)] for p in images]
    assert [r["predictions"][0]["label"] for r in reference] == truth
    for name, answer in answers.items():
        for got, want in zip(answer, reference):
            assert [p["label"] for p in got["predictions"]] == \
                [p["label"] for p in want["predictions"]], name
            np.testing.assert_allclose([p["score"] for p in got["predictions"]],
                                       [p["score"] for p in want["predictions"]], atol=1e-5)
            assert len(got["predictions"]) == 2


def test_predict_prints_a_readable_list(run_dir, digits, capsys):
    from zoo.cli import main

    _, paths, _, _ = digits
    assert main(["predict", str(run_dir), str(paths[1520]), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(paths[1520]) and len(lines) == 4
    label, score = lines[1].split()
    assert label == CLASS_NAMES[int(paths[1520].parent.name)] and 0.5 < float(score) <= 1.0


@pytest.mark.parametrize("which", ["run", "savedmodel"])
def test_predict_reports_a_bad_image_and_answers_the_others(tmp_path, run_dir, exported,
                                                            digits, capsys, which):
    _, paths, _, _ = digits
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    model = run_dir if which == "run" else exported["savedmodel"]
    code, answer, err = _predict_json(capsys, model, paths[1530], text, tmp_path / "missing.png")
    assert code == 1 and "2 of 3 image(s) could not be read" in err
    assert answer[0]["predictions"][0]["label"] == CLASS_NAMES[int(paths[1530].parent.name)]
    assert answer[1]["error"].startswith("not a decodable image: Unknown image file format")
    assert answer[2]["error"].startswith("cannot read")


def test_predict_on_something_else_says_what_it_takes(tmp_path, capsys):
    from zoo.cli import main

    assert main(["predict", str(tmp_path), "x.png"]) == 2
    assert "not a .keras file, a run directory" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["run", "model", "keras"])
def test_a_misspelt_model_name_is_named_with_the_closest_names(tmp_path, run_dir, trained,
                                                               which, capsys):
    source = {"run": run_dir, "model": trained, "keras": run_dir / "best.keras"}[which]
    with pytest.raises(ValueError, match=r"Unknown model 'resnt18'\. Closest: resnet18") as error:
        zoo.export(source, tmp_path / "out", model_name="resnt18", class_names=CLASS_NAMES)
    assert "lenet5" not in str(error.value)
    from zoo.cli import main

    if which != "model":
        assert main(["export", str(source), "--out", str(tmp_path / "out"),
                     "--model-name", "resnt18"]) == 2
        assert "Unknown model 'resnt18'. Closest: resnet18" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or existing_versions(tmp_path / "out") == []


def test_the_next_export_removes_what_a_killed_export_left(tmp_path, trained):
    """An export killed (SIGKILL) mid-way leaves its staging and scratch directories; the
    next export removes those, and nothing else: not a live export's, not the user's."""
    model_path = tmp_path / "lenet.keras"
    trained.save(model_path)
    out, temp = tmp_path / "out", tmp_path / "tmp"
    temp.mkdir()
    script = textwrap.dedent(f"""
        import os
        import signal
        import zoo.deploy as deploy
        def kill(fmt, staging):
            os.kill(os.getpid(), signal.SIGKILL)
        deploy._after_format_hook = kill
        deploy.export({str(model_path)!r}, {str(out)!r}, formats="tflite")
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    staging = [p for p in out.iterdir() if p.name.startswith(".zoo-export-")]
    scratch = [p for p in temp.iterdir() if p.name.startswith("zoo-export-scratch-")]
    assert len(staging) == 1 and len(scratch) == 1
    # What must stay: a user's folders with similar names, and a live export's staging.
    keep = [out / ".zoo-export-notes", temp / "zoo-export-scratch-mine", out / "1-draft"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    keep.append(out / f".zoo-export-1-p{live.pid}-abcd1234")
    try:
        for path in keep:
            path.mkdir()
            os.utime(path, (0, 0))  # older than the next export, like the killed export's
        # The next export, in a process of its own as a user's next command is.
        again = textwrap.dedent(f"""
            import zoo.deploy as deploy
            deploy.export({str(model_path)!r}, {str(out)!r}, formats="tflite")
        """)
        proc = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=240)
    finally:
        live.kill()
        live.wait()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not staging[0].exists() and not scratch[0].exists()
    assert all(path.is_dir() for path in keep)
    assert existing_versions(out) == [1] and (out / "1" / "model.tflite").is_file()

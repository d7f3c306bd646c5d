"""report.html in a real browser: headless Chromium (Debian's package) renders every image.

Two pages written by the real code: a run directory's (``reports.write_report`` on a
LeNet-5 trained one epoch on 200 scikit-learn digits, its run.json with the temperature
``calibrate.calibration_record`` fits, ``report_page.write_page``) and ``zoo evaluate
--tta flip`` on the same folder. A copy of each page beside it gets a script that writes,
once the page has loaded, each image's decoded size and each link's resolved address into
the DOM; ``chromium --dump-dom`` returns it.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import zoo
from zoo import rundir
from zoo.recipes import calibrate, report_page, reports

CLASS_NAMES = [str(i) for i in range(10)]
# The flags a sandbox-less container needs, and no network, sync or update traffic.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PROBE = """<script>
window.addEventListener("load", () => {
  const found = {
    images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight, file: i.dataset.file || null})),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent)};
  const out = document.createElement("pre");
  out.id = "zoo-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: this test renders report.html in a real "
                    "browser. Install Debian's package (apt-get install chromium); "
                    "`make test` does so on a machine without it.")
    return path


def render(page: Path, tmp_path: Path) -> dict:
    """Loads ``page`` in headless Chromium; returns what the probe script found."""
    probed = page.with_name(".probe-" + page.name)  # beside it: relative links as on the page
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    done = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180)
    probed.unlink()
    found = re.search(r'<pre id="zoo-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"Chromium gave no probe (exit {done.returncode}): {done.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """200 digits as 32x32 grayscale PNGs in class folders: (root, paths, labels, pixels)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    root = tmp_path_factory.mktemp("digits")
    paths, pixels = [], []
    for i, (image, label) in enumerate(zip(data.images[:200], data.target[:200])):
        big = Image.fromarray((image / 16.0 * 255).astype("uint8")).resize((32, 32),
                                                                            Image.BILINEAR)
        path = root / str(label) / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        big.save(path)
        paths.append(path)
        pixels.append(np.asarray(big))
    return root, paths, data.target[:200], np.stack(pixels)[..., None].astype("float32")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, folder):
    _, paths, labels, pixels = folder
    keras.utils.set_random_seed(0)
    model = zoo.build("lenet5", num_classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fitted = model.fit(pixels[:150], labels[:150], validation_data=(pixels[150:],
                                                                    labels[150:]),
                       epochs=2, batch_size=32, verbose=0)
    val = tf.data.Dataset.from_tensor_slices((pixels[150:], labels[150:])).batch(32)
    y_true, probs, _, _ = reports.collect_predictions(model, val, max_images=0)
    root = rundir.write_run(tmp_path_factory.mktemp("run"), model=model,
                            model_name="lenet5", class_names=CLASS_NAMES,
                            geometry=zoo.geometry("lenet5"), status="finished",
                            calibration=calibrate.calibration_record(probs, y_true))
    reports.write_report(root, model, val, CLASS_NAMES, fitted.history,
                         files=[str(p) for p in paths[150:]])
    report_page.write_page(root)
    return root


def check_page(page: Path, found: dict, expected_plots: set[str]) -> None:
    images = found["images"]
    assert images, f"{page} shows no image"
    for image in images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, \
            f"{page}: the image {image['alt']!r} did not decode in Chromium"
        if image["file"]:  # a plot inlined from the run's PNG: the same picture
            on_disk = png_size((page.parent / image["file"]).read_bytes())
            assert (image["width"], image["height"]) == on_disk, image
    assert expected_plots <= {i["alt"] for i in images}
    links = [Path(unquote(urlparse(href).path)) for href in found["links"]]
    assert all(link.is_file() for link in links), [str(x) for x in links if not x.is_file()]
    names = {link.name for link in links}
    assert {rundir.PER_CLASS_FILE, rundir.CONFUSED_PAIRS_FILE,
            rundir.SUSPECT_LABELS_FILE} <= names


def test_run_report_renders_every_image_and_link(run_dir, tmp_path):
    page = run_dir / rundir.REPORT_PAGE
    found = render(page, tmp_path)
    check_page(page, found, {"Training curves", "Confusion matrix", "Top losses",
                             "Misclassified images", "Grad-CAM", "Reliability diagram"})
    assert "Calibration" in found["headings"]
    assert "Test-time augmentation" not in found["headings"]  # the run measured none
    # The probe sees a picture that does not decode and a link to a missing file.
    text = page.read_text(encoding="utf-8")
    start = text.index("data:image/png;base64,") + len("data:image/png;base64,")
    broken = run_dir / "broken.html"
    broken.write_text(text[:start] + "AAAA" + text[start + 400:], encoding="utf-8")
    (run_dir / rundir.PER_CLASS_FILE).rename(run_dir / "moved.csv")
    try:
        damaged = render(broken, tmp_path)
        # Checked while the file is away: the link the page gives points at nothing.
        links = [Path(unquote(urlparse(h).path)) for h in damaged["links"]]
        missing = {link.name for link in links if not link.is_file()}
        with pytest.raises(AssertionError):
            check_page(broken, damaged, set())
    finally:
        (run_dir / "moved.csv").rename(run_dir / rundir.PER_CLASS_FILE)
        broken.unlink()
    assert [i["width"] for i in damaged["images"]].count(0) == 1
    assert missing == {rundir.PER_CLASS_FILE}


def test_evaluate_writes_the_same_page_with_tta_and_calibration(run_dir, folder, tmp_path):
    # The run's 50 validation images as a folder of their own: a small evaluation.
    root = tmp_path / "val"
    for path in folder[1][150:]:
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.parent.name / path.name)
    metrics = zoo.evaluate(run_dir, root, out_dir=tmp_path / "eval", tta="flip")
    page = tmp_path / "eval" / rundir.REPORT_PAGE
    assert page.is_file()
    text = page.read_text(encoding="utf-8")
    # Accuracy with and without TTA and the ECE with and without the temperature, as
    # metrics.json has them.
    for figure in (metrics["tta"]["accuracy"], metrics["tta"]["accuracy_without"]):
        assert f"<td>{figure:.3f}</td>" in text
    for figure in (metrics["calibration"]["ece_before"], metrics["calibration"]["ece_after"]):
        assert f"{figure:.4f}" in text
    assert f"Temperature {metrics['calibration']['temperature']:.3f}" in text
    assert str(root) in text  # the data evaluated on
    found = render(page, tmp_path)
    check_page(page, found, {"Confusion matrix", "Top losses", "Reliability diagram"})
    assert {"Test-time augmentation", "Calibration"} <= set(found["headings"])

"""Class imbalance in the recipe: class_weight, focal loss, balanced sampling (issue 16)."""

from __future__ import annotations

import json
import re
import shutil
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.recipes import finetune as ft
from zoo.recipes import stages as st
from zoo.recipes.demo import write_digits
from zoo.recipes.recipe import make_recipe, parse_class_weight

RARE = [str(d) for d in range(5, 10)]


@pytest.fixture(scope="module")
def skewed_digits(tmp_path_factory) -> Path:
    """scikit-learn's digits as a folder, digits 5-9 cut to 8% of their images (14 each)."""
    base = tmp_path_factory.mktemp("imbalance")
    full = write_digits(base / "full")
    root = base / "skewed"
    for folder in sorted(full.iterdir()):
        files = sorted(folder.glob("*.png"))
        kept = files if folder.name not in RARE else files[:len(files) * 8 // 100]
        (root / folder.name).mkdir(parents=True)
        for path in kept:
            shutil.copy(path, root / folder.name / path.name)
    return root


def _rare_recall(result) -> float:
    per_class = result.metrics["per_class"]
    return float(np.mean([per_class[d]["recall"] for d in RARE]))


@pytest.fixture(scope="module")
def natural_run(skewed_digits, tmp_path_factory):
    return ft.finetune("lenet5", skewed_digits, weights=None, epochs=6, verbose=0,
                       out_dir=tmp_path_factory.mktemp("natural") / "run")


@pytest.mark.filterwarnings("ignore:Classes are imbalanced")
@pytest.mark.parametrize("option", [{"class_weight": "balanced"}, {"sampling": "balanced"}])
def test_balancing_raises_the_recall_of_the_rare_classes(skewed_digits, natural_run,
                                                         tmp_path, option):
    # LeNet-5, 6 epochs, seed 0, the same split: the rare digits' mean recall was 0.40
    # without balancing and 0.87 with balanced class weights or balanced sampling (3
    # validation images per rare digit, so steps of 1/15).
    result = ft.finetune("lenet5", skewed_digits, weights=None, epochs=6, verbose=0,
                         out_dir=tmp_path / "run", **option)
    natural, balanced = _rare_recall(natural_run), _rare_recall(result)
    assert balanced >= 0.7 and balanced - natural >= 0.3, (natural, balanced)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    name, value = next(iter(option.items()))
    assert info["recipe"][name] == value
    card = (tmp_path / "run" / "README.md").read_text()
    assert re.search(rf"- class imbalance: .*{name} '?balanced", card)
    if name == "class_weight":
        weights = info["class_weights"]
        assert weights["9"] > 5 * weights["0"]  # the rare digits weigh about 13 times more


def test_recipe_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"loss \(--loss\) must be one of cross_entropy, "
                                         r"focal; got 'hinge'"):
        make_recipe("lenet5", loss="hinge")
    with pytest.raises(ValueError, match=r"sampling .* natural, balanced; got 'oversample'"):
        make_recipe("lenet5", sampling="oversample")
    with pytest.raises(ValueError, match=r"class_weight .* 'balanced', None, or a dict"):
        make_recipe("lenet5", class_weight="equal")
    with pytest.raises(ValueError, match=r"weight of class 'cat' must be a number of at "
                                         r"least 0; got '-2'"):
        make_recipe("lenet5", class_weight="cat=-2")


def test_class_weight_from_the_command_line_text():
    assert parse_class_weight("cat=3, dog=1") == {"cat": 3.0, "dog": 1.0}
    assert parse_class_weight('{"0": 2.5}') == {"0": 2.5}
    assert parse_class_weight("none") is None
    assert parse_class_weight("balanced") == "balanced"


def test_class_weights_by_name_or_index_for_keras():
    data = types.SimpleNamespace(counts={"train": {"cat": 30, "dog": 10}})
    names = ["cat", "dog"]
    assert ft.class_weights({"dog": 4.0}, data, names) == {0: 1.0, 1: 4.0}
    assert ft.class_weights({"0": 2.0}, data, names) == {0: 2.0, 1: 1.0}
    assert ft.class_weights("balanced", data, names) == {0: pytest.approx(0.6667, abs=1e-3),
                                                         1: 2.0}
    with pytest.raises(ValueError, match="class 'bird', which the data does not have; its "
                                         "classes are cat, dog"):
        ft.class_weights({"bird": 2.0}, data, names)
    with pytest.raises(ValueError, match=r"needs the training images per class"):
        ft.class_weights("balanced", types.SimpleNamespace(counts={"train": 40}), names)


def test_focal_loss_is_keras_focal_cross_entropy_for_both_heads():
    recipe = make_recipe("lenet5", loss="focal", label_smoothing=0.05)
    single = st.make_loss(recipe)
    multi = st.make_loss(recipe, multi_label=True)
    assert isinstance(single, keras.losses.CategoricalFocalCrossentropy)
    assert isinstance(multi, keras.losses.BinaryFocalCrossentropy)
    # An easy example costs less under focal loss than under cross-entropy.
    y, p = tf.constant([[0.0, 1.0]]), tf.constant([[0.1, 0.9]])
    plain = st.make_loss(make_recipe("lenet5", label_smoothing=0.05))
    assert float(single(y, p)) < 0.1 * float(plain(y, p))


def _digits(n=600, soft=False):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = tf.image.resize((digits.images[:n] / 16 * 255).astype("float32")[..., None],
                        (32, 32)).numpy()
    y = digits.target[:n].astype("int32")
    labels = np.eye(10, dtype="float32")[y] if soft else y
    return x, y, labels


def test_class_weight_trains_with_soft_labels_and_focal_loss(tmp_path):
    # Keras' fit takes class_weight with one-hot or soft labels (weighted by the label's
    # largest class); the recipe passes it through with the focal loss.
    x, y, soft = _digits(soft=True)
    soft = 0.8 * soft + 0.2 * np.roll(soft, 1, axis=0)
    counts = {str(c): int((y[:500] == c).sum()) for c in range(10)}
    data = types.SimpleNamespace(
        train=tf.data.Dataset.from_tensor_slices((x[:500], soft[:500])).batch(50),
        val=tf.data.Dataset.from_tensor_slices((x[500:], y[500:])).batch(50),
        class_names=[str(c) for c in range(10)], counts={"train": counts}, skipped=[],
        batch_size=50)
    result = ft.finetune("lenet5", data, weights=None, epochs=3, verbose=0, loss="focal",
                         class_weight={"3": 5.0}, out_dir=tmp_path / "run",
                         precision="float32")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["class_weights"]["3"] == 5.0 and info["recipe"]["loss"] == "focal"
    assert result.metrics["val_accuracy"] > 0.3


def test_sampling_against_the_callers_pipeline_is_refused(tmp_path):
    x, _, y = _digits(n=100)
    data = types.SimpleNamespace(
        train=tf.data.Dataset.from_tensor_slices((x, y)).batch(50), val=None,
        class_names=[str(c) for c in range(10)], counts={"train": {}}, skipped=[],
        batch_size=50, sampling="natural")
    with pytest.raises(ValueError, match=r"sampling='balanced' applies when finetune builds "
                                         r"the pipeline .* sampling='natural'\. Pass "
                                         r"sampling='balanced' to pipelines.from_folder"):
        ft.finetune("lenet5", data, weights=None, epochs=1, verbose=0, sampling="balanced",
                    out_dir=tmp_path / "run")


def test_the_options_are_zoo_train_flags(capsys):
    from zoo.cli import _recipe_options, build_parser

    args = build_parser().parse_args(["train", "--data", "d", "--model", "lenet5",
                                      "--class-weight", "cat=3,dog=1", "--loss", "focal",
                                      "--sampling", "balanced"])
    options = _recipe_options(args)
    recipe = make_recipe("lenet5", **options)
    assert (recipe.class_weight, recipe.loss, recipe.sampling) == (
        {"cat": 3.0, "dog": 1.0}, "focal", "balanced")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "d", "--model", "lenet5",
                                   "--loss", "hinge"])
    assert "invalid choice: 'hinge'" in capsys.readouterr().err

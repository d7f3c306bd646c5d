"""What the recipe tells a person at the console: strategy, replicas, batch, precision."""

from __future__ import annotations

from test_finetune import _run_workers, digits_data

from zoo.recipes import finetune as ft

PREFIX = "Training lenet5 on 10 classes: "


def _training_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(PREFIX)]


def test_one_device_fit_says_so_and_verbose_0_is_silent(tmp_path, capsys):
    data = digits_data(n_train=64, batch=32)
    ft.finetune("lenet5", data, weights=None, epochs=1, out_dir=tmp_path / "loud", verbose=2,
                precision="float32", strategy="one")
    # Printed as Keras prints its own progress (stdout), not only to the "zoo" logger.
    assert _training_lines(capsys.readouterr().out) == [
        PREFIX + "default strategy, 1 replica(s) in sync (device: CPU:0), global batch 32, "
                 "float32."]
    ft.finetune("lenet5", data, weights=None, epochs=1, out_dir=tmp_path / "quiet", verbose=0,
                precision="float32", strategy="one")
    assert capsys.readouterr().out == ""


def test_mirrored_fit_names_the_strategy_and_its_replicas(tmp_path):
    # Two logical CPU devices must be configured before TensorFlow starts: a fresh process.
    (result,) = _run_workers(tmp_path, [{"ZOO_TEST_LOGICAL_CPUS": "1", "ZOO_TEST_EPOCHS": "1",
                                         "ZOO_TEST_N_TRAIN": "128", "ZOO_TEST_VERBOSE": "2"}],
                             "auto", separate_stderr=True)
    assert result["strategy"] == "MirroredStrategy" and result["replicas"] == 2
    assert _training_lines(result["stdout"]) == [
        PREFIX + "MirroredStrategy, 2 replica(s) in sync (devices: CPU:0, CPU:1), "
                 "global batch 64, float32."], result["stdout"][-2000:]

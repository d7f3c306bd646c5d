"""Faults that used to lose a run: a second writer, a resume with other options, damaged
backups, Ctrl-C, a full disk, bad options. Each is made for real: killed and interrupted
processes, a second process, files truncated by the test."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import pytest
import training_process

import zoo
from zoo import rundir
from zoo.cli import main
from zoo.recipes import finetune as ft

REPO = training_process.REPO
ENV = training_process.ENV



def _killed_in_epoch_3(tmp_path) -> Path:
    return training_process.killed_in_epoch_3(tmp_path / "run")


class FirstEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def _digits(n_train=512, batch=64):
    sys.path.insert(0, str(REPO / "tests"))
    from test_finetune import digits_data

    return digits_data(n_train=n_train, batch=batch)


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("tiny_data", REPO / "examples" / "tiny_data.py")
    tiny_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_data)
    return tiny_data.digits_folder(tmp_path_factory.mktemp("small") / "digits", per_class=16)


# ------------------------------------------------------------------------- one writer


def test_a_second_process_is_refused_while_the_first_writes_the_run_dir(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(training_process.command(run, "hold"), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        for line in first.stdout:
            if line.strip() == "holding":
                break
        else:
            pytest.fail("the first run never got to epoch 1")
        (tmp_path / "images").mkdir()
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "zoo.cli", "train", "--data", str(tmp_path / "images"),
             "--model", "lenet5", "--weights", "none", "--epochs", "1", "--out", str(run)],
            capture_output=True, text=True, timeout=300, env=ENV)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"pid {first.pid}" in second.stderr and "one writer" in second.stderr
        assert "Traceback" not in second.stderr
        # Refused before it read any data or wrote anything.
        assert not (run / "split.json").exists()
        assert time.monotonic() - started < 120
        history = (run / "history.csv").read_text().splitlines()
        assert len(history) == 2 and history[0].startswith("epoch")  # the first run's epoch 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    assert first.returncode == -9
    # The kernel released the dead process's lock: the next run may start.
    rundir.RunLock(run).acquire().release()


# ---------------------------------------------------------------------- resume guards


def test_a_resume_with_other_options_is_refused_unless_asked_for(tmp_path):
    run = _killed_in_epoch_3(tmp_path)
    data = _digits()
    for options, named in [({"epochs": 7}, "scratch_epochs 5 then, 7 now"),
                           ({"epochs": 5, "scratch_lr": 0.01}, "scratch_lr 0.003 then, 0.01 now"),
                           ({"epochs": 5, "label_smoothing": 0.0}, "label_smoothing")]:
        with pytest.raises(ValueError) as refused:
            ft.finetune("lenet5", data, weights=None, out_dir=run, verbose=0, **options)
        message = str(refused.value)
        assert named in message, message
        assert "overwrite=True (--overwrite)" in message
        assert "resume='changed' (--resume-changed)" in message
    with pytest.raises(ValueError, match="data.fingerprint"):
        ft.finetune("lenet5", _digits(n_train=256), weights=None, epochs=5, out_dir=run,
                    verbose=0)
    # Another model in the same folder: the same short message, no layer list.
    with pytest.raises(ValueError) as other:
        ft.finetune("resnet18", data, weights=None, epochs=5, out_dir=run, verbose=0,
                    resume="changed")
    assert "model 'lenet5' then, 'resnet18' now" in str(other.value)
    assert len(str(other.value)) < 600 and "resume='changed'" not in str(other.value)
    # Nothing the run made was changed by the refusals.
    assert not (run / "run.json").exists()
    seen = FirstEpoch()
    result = ft.finetune("lenet5", data, weights=None, epochs=6, out_dir=run, verbose=0,
                         resume="changed", callbacks=[seen])
    assert seen.epochs == [3, 4, 5]  # epochs 0-2 kept, then on to the new total
    assert len(result.history["loss"]) == 6
    info = json.loads((run / "run.json").read_text())
    assert info["changes"] == [{"epoch": 3,
                                "options": {"recipe.scratch_epochs": [5, 6]}}]
    assert info["recipe"]["scratch_epochs"] == 6


def test_the_same_options_resume_without_a_word(tmp_path):
    run = _killed_in_epoch_3(tmp_path)
    seen = FirstEpoch()
    ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0,
                callbacks=[seen])
    assert seen.epochs == [3, 4]
    info = json.loads((run / "run.json").read_text())
    assert "changes" not in info and not (run / rundir.START_FILE).exists()


def test_a_run_from_before_the_start_record_resumes_only_on_purpose(tmp_path, capsys):
    # What zoo before the resume guard left: an interrupted run without start.json.
    run = _killed_in_epoch_3(tmp_path)
    (run / rundir.START_FILE).unlink()
    untouched = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ValueError) as refused:
        ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0)
    message = str(refused.value)
    assert "started before zoo recorded a run's options" in message, message
    assert "resume='changed' (--resume-changed)" in message
    assert "overwrite=True (--overwrite)" in message
    # The command line says the same in one line.
    code = main(["train", "--data", str(tmp_path / "any"), "--model", "lenet5", "--weights",
                 "none", "--epochs", "5", "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--resume-changed" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in run.rglob("*")) == untouched
    # On purpose: it resumes where it stopped, and run.json says the start was unchecked.
    seen = FirstEpoch()
    ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0,
                resume="changed", callbacks=[seen])
    assert seen.epochs == [3, 4]
    [change] = json.loads((run / "run.json").read_text())["changes"]
    assert change["epoch"] == 3 and "earlier options are unknown" in change["unchecked"]


# ------------------------------------------------------------------- crash-safe writes


def _backups(run: Path) -> list[Path]:
    """The backup weight files, newest first."""
    return sorted((run / "backup").rglob("*.weights.h5"), key=lambda p: p.stat().st_mtime,
                  reverse=True)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_backup_is_set_aside_and_the_run_goes_on(tmp_path, caplog):
    killed = _killed_in_epoch_3(tmp_path)
    for name in ("newest", "all", "overwrite"):
        shutil.copytree(killed, tmp_path / name)
    # The newest state cut in half: the one before it (end of epoch 1) is used.
    run = tmp_path / "newest"
    newest = _backups(run)[0]
    _truncate(newest)
    seen = FirstEpoch()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0,
                    callbacks=[seen])
    assert seen.epochs == [2, 3, 4]
    assert str(newest) in caplog.text and "set aside" in caplog.text
    assert list(run.glob(f"*{newest.name}.damaged-*"))
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 5
    # Every state damaged: the run starts again, and says so.
    run = tmp_path / "all"
    for path in _backups(run):
        _truncate(path)
    seen = FirstEpoch()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        result = ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run,
                             verbose=0, callbacks=[seen])
    assert seen.epochs == [0, 1, 2, 3, 4] and "starts again" in caplog.text
    assert result.metrics["val_accuracy"] > 0.5
    # --overwrite always works: the damaged run is set aside whole.
    run = tmp_path / "overwrite"
    for path in _backups(run):
        _truncate(path)
    seen = FirstEpoch()
    ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0,
                overwrite=True, callbacks=[seen])
    assert seen.epochs == [0, 1, 2, 3, 4]
    assert len(list(tmp_path.glob("overwrite.old-*"))) == 1


def test_a_backup_with_a_flipped_byte_fails_its_sha256_and_is_set_aside(tmp_path, caplog):
    # One byte of the weights' data changed: HDF5 has no checksum of it, and Keras loads
    # such a file without a word. Its recorded sha256 does not match: set aside.
    run = _killed_in_epoch_3(tmp_path)
    newest = _backups(run)[0]
    assert rundir.digest_path(newest).is_file()
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    seen = FirstEpoch()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        ft.finetune("lenet5", _digits(), weights=None, epochs=5, out_dir=run, verbose=0,
                    callbacks=[seen])
    assert seen.epochs == [2, 3, 4]  # from the backup before it
    assert str(newest) in caplog.text and "sha256" in caplog.text and "set aside" in caplog.text


def test_a_run_interrupted_under_keras_backup_and_restore_still_resumes(tmp_path):
    # What zoo before its crash-safe backup left: Keras' BackupAndRestore files, written
    # here by Keras itself, through the recipe's own compile.
    from zoo.recipes import stages as st

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise KeyboardInterrupt

    run, data = tmp_path / "run", _digits()
    recipe = ft.make_recipe("lenet5")
    ft.set_epochs(recipe, 5, pretrained=False)
    model = zoo.build("lenet5", num_classes=10, input_shape=(32, 32, 3))
    st.prepare_stage(model, ft.layer_stages(model, "lenet5"), "scratch", recipe,
                     steps_per_epoch=8, epochs=5)
    backup = keras.callbacks.BackupAndRestore(str(run / "backup" / "scratch"))
    with pytest.raises(KeyboardInterrupt):
        model.fit(st.one_hot(data.train, 10), epochs=5, verbose=0, callbacks=[backup, Stop()])
    assert (run / "backup" / "scratch" / "latest.weights.h5").is_file()
    # That zoo wrote no start record either: the resume is refused unless asked for.
    with pytest.raises(ValueError, match="started before zoo recorded a run's options"):
        ft.finetune("lenet5", data, weights=None, epochs=5, out_dir=run, verbose=0)
    seen = FirstEpoch()
    ft.finetune("lenet5", data, weights=None, epochs=5, out_dir=run, verbose=0,
                resume="changed", callbacks=[seen])
    assert seen.epochs == [2, 3, 4]


def test_a_full_disk_while_the_backup_is_written_is_one_line(tmp_path, small_digits):
    # The stand-in for a full disk: h5py's write fails as it does then, at epoch 2's end.
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO)!r}]
        import keras
        from zoo.cli import main

        save_weights, calls = keras.Model.save_weights, []
        def full(self, filepath, *args, **kwargs):
            calls.append(filepath)
            if len(calls) >= 2:
                raise OSError("Unable to synchronously write file (file write failed: "
                              "errno = 28, error message = 'No space left on device')")
            return save_weights(self, filepath, *args, **kwargs)
        keras.Model.save_weights = full
        sys.exit(main(sys.argv[1:]))
        """)
    run = tmp_path / "run"
    full = subprocess.run(
        [sys.executable, "-c", script, "train", "--data", str(small_digits), "--model",
         "lenet5", "--weights", "none", "--epochs", "4", "--out", str(run)],
        capture_output=True, text=True, timeout=300, env=ENV)
    assert full.returncode == 1, full.stderr[-3000:]
    last = full.stderr.strip().splitlines()[-1]
    assert "Traceback" not in full.stderr
    assert last.startswith("zoo train: no space left on the device writing ")
    assert str(run / "backup" / "scratch") in last and "MB free there" in last
    # The state of epoch 1 is whole, and no staging file was left: the run resumes.
    seen = FirstEpoch()
    ft.finetune("lenet5", str(small_digits), weights=None, epochs=4, out_dir=run, verbose=0,
                callbacks=[seen])
    assert seen.epochs == [1, 2, 3]
    assert not list(run.rglob(".tmp-*"))


# ------------------------------------------------------------------------ weak points


def test_ctrl_c_in_training_stops_cleanly_and_says_how_to_resume(tmp_path, small_digits,
                                                                  capsys):
    run = tmp_path / "run"
    # -u: the child's stdout is a pipe, which Python would buffer; "Epoch 3/" must arrive
    # while epoch 3 runs. --patience 400: on a quiet machine the tiny folder's epochs take
    # tens of milliseconds, and early stopping ended the run before the signal came.
    train = subprocess.Popen(
        [sys.executable, "-u", "-m", "zoo.cli", "train", "--data", str(small_digits), "--model",
         "lenet5", "--weights", "none", "--epochs", "400", "--patience", "400", "--out",
         str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring
        # it; a user's Ctrl-C reaches a foreground process, so the child gets the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in train.stdout:
            if line.startswith("Epoch 3/"):
                break
        assert train.poll() is None, "training ended before epoch 3 was seen"
        time.sleep(0.3)
        train.send_signal(signal.SIGINT)
        out, err = train.communicate(timeout=120)
    finally:
        train.kill()
    assert train.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert f"saved in {run}" in err and "run the same command again to resume" in err
    assert list((run / "backup" / "scratch").glob("epoch-*.weights.h5"))
    # The same command with another folder or batch size is refused, naming what differs.
    other = tmp_path / "other"
    shutil.copytree(small_digits, other)
    next(other.rglob("*.png")).unlink()
    command = ["train", "--model", "lenet5", "--weights", "none", "--epochs", "400",
               "--patience", "400", "--out", str(run)]
    for extra, named in [(["--data", str(other)], f"data folder {small_digits.resolve()}"),
                         (["--data", str(small_digits), "--batch-size", "16"],
                          "batch_size 64 then, 16 now")]:
        assert main(command + extra) == 2
        err = capsys.readouterr().err
        assert named in err and "--overwrite" in err and "--resume-changed" in err, err


def _read_only_mount_works() -> bool:
    # As root, chmod cannot make a folder read-only; a read-only bind mount in a private
    # mount namespace can (unshare -m needs CAP_SYS_ADMIN, which root has here).
    import tempfile

    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-m", "sh", "-c",
                                f"mount --bind -o ro {folder} {folder} && ! touch {folder}/x"],
                               capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_mount_works(), reason="no read-only bind mount here")
@pytest.mark.parametrize("where", ["new folder", "existing folder"])
def test_zoo_train_into_a_read_only_folder_is_one_line(tmp_path, small_digits, where):
    folder = tmp_path / "read-only"
    (folder / "existing").mkdir(parents=True)
    out = folder / ("run" if where == "new folder" else "existing")
    train = (f"{sys.executable} -m zoo.cli train --data {small_digits} --model lenet5 "
             f"--weights none --epochs 1 --out {out}")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind -o ro {folder} {folder} && exec {train}"],
        capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"zoo train: cannot write {out}") and "Read-only file system" in last
    assert "choose a folder you can write to (--out)" in last
    assert sorted(p.name for p in folder.rglob("*")) == ["existing"]  # nothing was written


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "float32"])
def test_the_report_says_which_precision_each_validation_figure_was_measured_in(tmp_path,
                                                                               precision):
    import numpy as np

    data = _digits(n_train=128)
    result = ft.finetune("lenet5", data, weights=None, epochs=1, out_dir=tmp_path / "run",
                         verbose=0, precision=precision)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["measured"] == {"report": "float32", "history": precision}
    # The report's figure is the saved model's, in float32.
    saved = rundir.load_model_file(tmp_path / "run" / rundir.MODEL_FILE)
    labels = np.concatenate([np.asarray(y) for _, y in data.val])
    predicted = np.concatenate([saved.predict(x, verbose=0) for x, _ in data.val]).argmax(1)
    assert result.metrics["val_accuracy"] == pytest.approx(float((predicted == labels).mean()))
    card = (tmp_path / "run" / rundir.CARD_FILE).read_text()
    named = "during training, under mixed_bfloat16" in card.replace("\n", " ")
    assert named == (precision == "mixed_bfloat16")


def test_a_negative_learning_rate_is_refused(tmp_path, small_digits, capsys):
    for flag, value in [("--scratch-lr", "-0.01"), ("--head-lr", "0"),
                        ("--batch-size", "0"), ("--validation-split", "1.5")]:
        code = main(["train", "--data", str(small_digits), "--model", "lenet5", "--weights",
                     "none", "--epochs", "1", flag, value, "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and flag.lstrip("-").replace("-", "_") in err, err
    with pytest.raises(ValueError, match=r"scratch_lr \(--scratch-lr\) must be a positive number"):
        ft.make_recipe("lenet5", scratch_lr=-1e-3)
    assert not (tmp_path / "run").exists()


def test_a_failed_command_leaves_no_empty_run_folder(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "no-such-folder"), "--model", "lenet5",
                 "--weights", "none", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 2 and "no-such-folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    code = main(["lr-find", "--data", str(tmp_path / "no-such-folder"), "--model", "lenet5",
                 "--weights", "none", "--out", str(tmp_path / "lr")])
    assert code == 2 and not (tmp_path / "lr").exists()
    # A folder that was there before is the user's: kept, even when empty.
    (tmp_path / "mine").mkdir()
    main(["train", "--data", str(tmp_path / "no-such-folder"), "--model", "lenet5",
          "--weights", "none", "--epochs", "1", "--out", str(tmp_path / "mine")])
    assert (tmp_path / "mine").is_dir()

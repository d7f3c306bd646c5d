"""Damaged weight files, written by the tests and then cut short or bit-flipped: each is a
WeightsFileError naming the file, what is wrong and what to do, from ``zoo.build`` and as
one line from the command line; the damaged file itself is never changed."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from twin_files import save_state_dict, torchvision_model

import zoo
from zoo.cli import main
from zoo.recipes.demo import write_digits
from zoo.weights import WeightsFileError

SHAPE = (32, 32, 3)
ADVICE = "replace it with a good copy"


def _lenet():
    return zoo.build("lenet5", num_classes=10)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, Path]:
    """Genuine files of every kind: Keras 3 .weights.h5, a legacy whole-model .h5, a .keras
    archive (all written by Keras from LeNet-5) and a torchvision ResNet-18 zip .pth."""
    folder = tmp_path_factory.mktemp("good")
    model = _lenet()
    files = {"weights.h5": folder / "lenet5.weights.h5", "h5": folder / "lenet5.h5",
             "keras": folder / "lenet5.keras", "pth": folder / "resnet18.pth"}
    model.save_weights(files["weights.h5"])
    model.save(files["h5"])  # the legacy HDF5 format (model_weights group, layer_names)
    model.save(files["keras"])
    save_state_dict(torchvision_model("resnet18"), files["pth"], "zip")
    return files


def _build(kind: str, path: Path):
    if kind == "pth":
        return zoo.build("resnet18", weights=str(path), num_classes=10, input_shape=SHAPE)
    return zoo.build("lenet5", weights=str(path), num_classes=10)


def _damaged(tmp_path: Path, good: Path, data: bytes) -> Path:
    path = tmp_path / f"damaged-{good.name}"
    path.write_bytes(data)
    return path


def _assert_named(error: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(error.value)
    assert repr(str(path)) in message, message
    assert "damaged" in message and ADVICE in message, message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("kind", ["weights.h5", "h5", "keras", "pth"])
def test_the_undamaged_files_load(good_files, kind):
    # The damage is the only difference in the tests below.
    _build(kind, good_files[kind])


@pytest.mark.parametrize("kind", ["weights.h5", "h5", "keras", "pth"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, -1])
def test_a_truncated_file_names_itself_and_says_it_is_cut_short(good_files, tmp_path, kind,
                                                               keep):
    data = good_files[kind].read_bytes()
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    path = _damaged(tmp_path, good_files[kind], data[:cut])
    with pytest.raises(WeightsFileError) as error:
        _build(kind, path)
    _assert_named(error, path, "truncated")
    if kind in ("weights.h5", "h5"):
        assert f"{cut:,} of the {len(data):,} bytes" in str(error.value)
    assert path.read_bytes() == data[:cut]  # the user's file is left as it was


def test_an_empty_file_is_named_as_empty(good_files, tmp_path):
    path = _damaged(tmp_path, good_files["weights.h5"], b"")
    with pytest.raises(WeightsFileError, match="is empty") as error:
        _build("weights.h5", path)
    assert repr(str(path)) in str(error.value)


def _member_data_offsets(path: Path) -> dict[str, int]:
    """The offset of the middle byte of each non-empty member's stored data."""
    out = {}
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_size < 4:
                continue
            start = info.header_offset
            # The local header: 30 bytes, then the name and the extra field (sizes at 26..30).
            name_length = int.from_bytes(data[start + 26:start + 28], "little")
            extra_length = int.from_bytes(data[start + 28:start + 30], "little")
            out[info.filename] = (start + 30 + name_length + extra_length
                                  + info.compress_size // 2)
    return out


@pytest.mark.parametrize("kind", ["keras", "pth"])
def test_a_bit_flip_inside_a_zip_member_names_the_file_and_the_member(good_files, tmp_path,
                                                                       kind):
    good = good_files[kind]
    offsets = _member_data_offsets(good)
    members = [m for m in offsets if m.endswith(("model.weights.h5", "data.pkl", "data/0",
                                                 "data/1"))]
    assert len(members) >= (1 if kind == "keras" else 3)
    for member in members:
        data = bytearray(good.read_bytes())
        data[offsets[member]] ^= 0x10
        path = _damaged(tmp_path, good, bytes(data))
        with pytest.raises(WeightsFileError) as error:
            _build(kind, path)
        _assert_named(error, path, "CRC-32", repr(member))


@pytest.mark.parametrize("kind", ["weights.h5", "h5"])
@pytest.mark.parametrize("offset", [8, 16, 64])
def test_a_bit_flip_in_the_hdf5_structure_names_the_file(good_files, tmp_path, kind, offset):
    # Offsets in the superblock (8, 16) and the root group's object header (64): HDF5 cannot
    # open the file. (A flip inside the weights' own data cannot be seen: HDF5 keeps no
    # checksum of it.)
    data = bytearray(good_files[kind].read_bytes())
    data[offset] ^= 0xFF
    path = _damaged(tmp_path, good_files[kind], bytes(data))
    with pytest.raises(WeightsFileError) as error:
        _build(kind, path)
    _assert_named(error, path)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits(tmp_path_factory.mktemp("data") / "digits")


@pytest.mark.parametrize("command", ["evaluate", "train"])
@pytest.mark.parametrize("kind", ["weights.h5", "keras"])
def test_the_command_line_prints_one_line_and_fails(good_files, digits, tmp_path, capsys,
                                                    command, kind):
    data = good_files[kind].read_bytes()
    path = _damaged(tmp_path, good_files[kind], data[: len(data) // 2])
    common = ["--data", str(digits), "--weights", str(path), "--out", str(tmp_path / "out")]
    args = (["evaluate", "lenet5", *common] if command == "evaluate"
            else ["train", "--model", "lenet5", *common, "--epochs", "1"])
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"zoo {command}: Weight file {str(path)!r}") and "truncated" in err
    assert "Traceback" not in err


def test_a_flipped_byte_that_hangs_hdf5_is_a_clear_error(good_files, tmp_path, monkeypatch):
    # Byte 2056 of LeNet's .weights.h5 (Keras' own file) flipped: HDF5 never returns from
    # reading an attribute. The metadata is read in a child process first, so the hang is
    # a WeightsFileError after the timeout instead of a process that never ends.
    import time

    from zoo.weights import readers

    data = bytearray(good_files["weights.h5"].read_bytes())
    data[2056] ^= 0xFF
    path = _damaged(tmp_path, good_files["weights.h5"], bytes(data))
    monkeypatch.setattr(readers, "PROBE_TIMEOUT", 8.0)
    started = time.monotonic()
    with pytest.raises(WeightsFileError) as error:
        _build("weights.h5", path)
    assert time.monotonic() - started < 60
    _assert_named(error, path, "did not finish reading its metadata in 8 s")


def test_a_file_zoo_wrote_is_checked_against_its_recorded_sha256(tmp_path):
    import hashlib
    import subprocess

    from zoo import rundir

    path = rundir.save_weights(_lenet(), tmp_path / "lenet5.weights.h5")
    record = tmp_path / "lenet5.weights.h5.sha256"
    # The record is sha256sum's format: the tool itself checks it.
    assert record.read_text() == f"{hashlib.sha256(path.read_bytes()).hexdigest()}  " \
                                 f"{path.name}\n"
    assert subprocess.run(["sha256sum", "-c", record.name], cwd=tmp_path).returncode == 0
    _build("weights.h5", path)
    data = bytearray(path.read_bytes())
    data[2056] ^= 0xFF  # the flip that hangs HDF5: refused before HDF5 reads a byte
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsFileError, match="sha256") as error:
        _build("weights.h5", path)
    assert repr(str(path)) in str(error.value) and "when zoo wrote it" in str(error.value)

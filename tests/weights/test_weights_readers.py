"""The readers: torch state dicts without torch (and never running their pickles),
safetensors, Keras legacy and Keras 3 HDF5, .keras archives."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import h5py
import keras
import numpy as np
import pytest
from twin_files import import_torchvision

from zoo.weights import UnsafePickleError, WeightsFileError, detect_format, read_torch
from zoo.weights.readers import read_keras_archive, read_keras_h5, read_safetensors


@pytest.fixture(scope="module")
def torch():
    return import_torchvision()[0]


def _state_dict(torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.Flatten(), torch.nn.Linear(4, 5))
    model[1].running_mean.uniform_()
    model[1].num_batches_tracked += 7
    state = model.state_dict()
    # The dtypes and layouts a state dict can hold: half, bfloat16, int, a strided view.
    state["half"] = torch.randn(3, 2).half()
    state["bf16"] = torch.randn(3, 2).bfloat16()
    state["ints"] = torch.arange(6, dtype=torch.int32)
    state["strided"] = torch.arange(24.0).reshape(2, 3, 4).transpose(0, 2)
    state["scalar"] = torch.tensor(3.5)
    return state


def _numpy(tensor):
    return tensor.float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.numpy()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_read_torch_equals_torch_load(torch, tmp_path, legacy):
    state = _state_dict(torch)
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert detect_format(path) == "torch"
    read = read_torch(path)
    assert list(read) == list(state)
    for key, tensor in state.items():
        expected = _numpy(tensor)
        assert read[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(read[key], expected, err_msg=key)


def test_read_torch_unwraps_checkpoints_and_data_parallel(torch, tmp_path):
    state = {f"module.{k}": v for k, v in _state_dict(torch).items()}
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": state}, path)
    read = read_torch(path)
    assert "0.weight" in read and not any(k.startswith("module.") for k in read)


class _RunsCode:
    """Unpickling this calls exec(): what a malicious .pth does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("kind", ["zip", "legacy", "plain pickle"])
def test_malicious_pickle_is_refused_and_never_run(torch, tmp_path, kind):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    payload = {"conv.weight": torch.zeros(2, 2), "trap": _RunsCode(marker)}
    if kind == "plain pickle":
        with open(path, "wb") as f:
            pickle.dump(_RunsCode(marker), f)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=kind == "zip")
    # The file is genuinely malicious: unpickling it with pickle runs the code.
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match=r"builtins\.exec.*Nothing from the file was run"):
        read_torch(path)
    assert not marker.exists()

    import zoo

    with pytest.raises(UnsafePickleError, match="Refused to load"):
        zoo.build("resnet18", weights=str(path), input_shape=(32, 32, 3))
    assert not marker.exists()


def test_the_malicious_file_would_run_with_plain_pickle(tmp_path):
    # The control for the test above: the same payload does run under pickle.load.
    marker = tmp_path / "pwned.txt"
    data = pickle.dumps(_RunsCode(marker))
    pickle.loads(data)
    assert marker.read_text() == "pwned"


def test_whole_pickled_model_is_refused_with_a_hint(torch, tmp_path):
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafePickleError, match=r"state_dict\(\)"):
        read_torch(path)


def test_truncated_legacy_file_is_an_error(torch, tmp_path):
    # Cut anywhere: inside a storage's data or its element count, or inside the pickled
    # records before the data. Each is a clear error, never a struct or pickle traceback.
    source = tmp_path / "state.pth"
    torch.save(_state_dict(torch), source, _use_new_zipfile_serialization=False)
    data = source.read_bytes()
    cuts = sorted({len(data) - 2, len(data) - 9, *range(1, len(data), 7)})
    for keep in cuts:
        path = tmp_path / "cut.pth"
        path.write_bytes(data[:keep])
        with pytest.raises(WeightsFileError, match="truncated|not a torch state dict"):
            read_torch(path)


def test_tensor_outside_its_storage_is_an_error(torch, tmp_path):
    # A crafted file whose tensor claims more elements than its storage holds must not
    # make the reader look past the buffer.
    path = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = members[pkl].replace(b"K\x04\x85", b"K\x40\x85", 1)  # size (4,) -> (64,)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(WeightsFileError, match="does not fit its storage"):
        read_torch(path)


def test_safetensors_including_bfloat16(torch, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _state_dict(torch).items()}
    path = tmp_path / "state.safetensors"
    save_file(state, str(path), metadata={"source": "test"})
    assert detect_format(path) == "safetensors"
    read, metadata = read_safetensors(path)
    assert metadata == {"source": "test"}
    for key, tensor in state.items():
        np.testing.assert_array_equal(read[key], _numpy(tensor), err_msg=key)


def test_unknown_file_kind_is_named(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"GIF89a not weights at all")
    with pytest.raises(WeightsFileError, match="Cannot tell what kind"):
        detect_format(path)
    with pytest.raises(FileNotFoundError):
        detect_format(tmp_path / "missing.pth")


def _small_keras_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="predictions")(x))


def test_keras_legacy_and_keras3_layouts(tmp_path):
    from twin_files import save_keras_legacy_h5

    model = _small_keras_model()
    expected = {layer.name: [np.asarray(v) for v in layer.weights]
                for layer in model.layers if layer.weights}

    legacy = save_keras_legacy_h5(model, tmp_path / "legacy.h5", keras2_names=True)
    v3 = tmp_path / "model.weights.h5"
    model.save_weights(v3)
    archive = tmp_path / "model.keras"
    model.save(archive)
    # A whole Keras 2 model file keeps the same groups under "model_weights".
    whole = tmp_path / "whole.h5"
    with h5py.File(legacy, "r") as src, h5py.File(whole, "w") as dst:
        src.copy(src["/"], dst, "model_weights")
        for key, value in src.attrs.items():
            dst["model_weights"].attrs[key] = value

    for path, layout in [(legacy, "legacy"), (whole, "legacy"), (v3, "keras3")]:
        assert detect_format(path) == "keras_h5"
        read = read_keras_h5(path)
        assert read.layout == layout
        assert {entry.name for entry in read.layers} == set(expected)
        for entry in read.layers:
            for got, want in zip(entry.arrays, expected[entry.name]):
                np.testing.assert_array_equal(got, want)
    read = read_keras_h5(legacy)
    assert read.keras_version == "2.2.4"
    assert read.layers[0].variable_names == ["conv/kernel:0", "conv/bias:0"]

    assert detect_format(archive) == "keras"
    read = read_keras_archive(archive)
    assert read.config["class_name"] == "Functional"
    assert {entry.name for entry in read.layers} == set(expected)
    assert os.path.getsize(archive) > 0


def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path):
    # A header of 0x180 bytes begins with the byte 0x80, as a pickle does.
    values = np.arange(6, dtype="<f4").reshape(2, 3)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})
    header = header.ljust(0x180).encode()
    path = tmp_path / "w.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + values.tobytes())
    assert detect_format(path) == "safetensors"
    np.testing.assert_array_equal(read_safetensors(path)[0]["w"], values)


def test_torchscript_archive_is_named_as_such(torch, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(WeightsFileError, match="TorchScript"):
        read_torch(path)


def test_reading_needs_no_torch(torch, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "state.pth"
    torch.save(_state_dict(torch), path, _use_new_zipfile_serialization=False)
    # torch is made unimportable in a fresh interpreter: zoo must not reach for it.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('torch', 'torchvision'):\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from zoo.weights import read_torch\n"
            f"print(sorted(read_torch({str(path)!r}))[0])\n"
            "assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0.bias"

"""ONNX through tf2onnx (Keras' own ONNX export), checked with onnxruntime.

The file takes pixels (input ``pixels``, batch axis ``batch``) and gives ``probabilities``;
the class names travel as JSON in its metadata (``class_names``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from zoo.deploy.quiet import quiet_call


def write(probability_model, target: Path, class_names: Sequence[str]) -> None:
    """Converts the probability model to ONNX, with our input/output names and class names.

    Raises:
        ImportError: Without the ``onnx`` extra (tf2onnx, onnx, onnxruntime).
    """
    try:
        import onnx
        import tf2onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the optional extra: pip install 'zoo[onnx]' "
                          "(tf2onnx, onnx, onnxruntime).") from None
    # Keras' own ONNX export drives tf2onnx (and patches it for NumPy 2).
    quiet_call(lambda: probability_model.export(str(target), format="onnx", verbose=False))
    # tf2onnx names the output after the graph tensor ("Identity:0") and the batch axis
    # "unk__N"; give them the names the other formats use, and carry the class names.
    graph_model = onnx.load(str(target))
    graph = graph_model.graph
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["probabilities" if o == old else o for o in node.output]
    graph.output[0].name = "probabilities"
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    entry = graph_model.metadata_props.add()
    entry.key, entry.value = "class_names", json.dumps(list(class_names))
    onnx.checker.check_model(graph_model)
    onnx.save(graph_model, str(target))


def run_onnx(path: str | os.PathLike, pixels):
    """Runs an exported ONNX classifier with onnxruntime.

    Args:
        path: The ``.onnx`` file.
        pixels: float32 [N, H, W, C] in [0, 255].

    Returns:
        Probabilities, float32 [N, C].
    """
    import numpy as np

    try:
        import onnxruntime
    except ImportError:
        raise ImportError("Checking ONNX needs onnxruntime: pip install 'zoo[onnx]'.") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(pixels, dtype="float32")})[0]

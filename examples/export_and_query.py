"""Export a run as a SavedModel and a TFLite file, then query them as a client would.

    python examples/export_and_query.py --run runs/photos --images cat.jpg dog.jpg
    python examples/export_and_query.py --small --out /tmp/export   # CI: trains LeNet-5 first

Three ways to ask the exported model about image files:

1. **The SavedModel with TensorFlow alone** (no zoo import needed where it is served): its
   ``serving_default`` signature takes the encoded file bytes and does the decoding,
   resizing, cropping and normalisation itself, and answers with ``labels``, ``scores``,
   ``class_ids`` (top k, best first) and ``probabilities``.
2. **TensorFlow Serving's REST API.** The request body is written to ``request.json``:
   ``{"signature_name": "serving_default", "instances": [{"b64": "..."}]}``; TF Serving
   turns each ``{"b64": ...}`` back into bytes. With ``--server URL`` the body is POSTed to
   ``URL/v1/models/NAME:predict``; without, the example decodes the body the same way and
   calls the signature locally, to show the answer's shape (TF Serving itself is not run).
3. **TFLite** with ``tf.lite.Interpreter``: the file takes pixels, so the client resizes
   and crops first; here with ``pipelines.make_eval_transform``, the same evaluation
   transform the SavedModel runs inside, configured from the export's ``export.json``.

``--small`` writes 600 handwritten digits, trains LeNet-5 on them for five epochs from
scratch and exports that run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import urllib.request
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def rest_request(images: list[bytes]) -> dict:
    """The body of a TF Serving REST ``:predict`` call with the images' bytes."""
    return {"signature_name": "serving_default",
            "instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}


def answer_locally(savedmodel: Path, body: dict) -> dict:
    """What TF Serving answers to ``body``, computed with the same signature in-process."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(savedmodel)).signatures[body["signature_name"]]
    images = [base64.b64decode(instance["b64"]) for instance in body["instances"]]
    outputs = signature(image_bytes=tf.constant(images))
    rows = [{} for _ in images]
    for name, value in outputs.items():
        for row, item in zip(rows, value.numpy().tolist()):
            row[name] = [v.decode() if isinstance(v, bytes) else v for v in item]
    return {"predictions": rows}  # TF Serving's "row" format: one object per instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run directory written by zoo.finetune / zoo train")
    parser.add_argument("--images", nargs="*", default=[], help="image files to ask about")
    parser.add_argument("--out", default="runs/export-example")
    parser.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    parser.add_argument("--name", default="model", help="the model's name in TF Serving")
    parser.add_argument("--small", action="store_true", help="tiny offline run for CI")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    import pipelines
    import zoo

    out = Path(args.out)
    if args.small:
        from tiny_data import digits_folder

        digits = digits_folder(out / "digits", per_class=60)
        result = zoo.finetune("lenet5", digits, weights=None, epochs=5, out_dir=out / "run",
                              verbose=2)
        args.run = str(result.run_dir)
        args.images = [str(sorted((digits / d).glob("*.png"))[-1]) for d in ("3", "7")]
    if not args.run or not args.images:
        parser.error("--run and --images are required (or --small)")

    # One version directory in TF Serving's layout: out/export/<version>/.
    exported = zoo.export(args.run, out / "export", formats=("savedmodel", "tflite"))
    savedmodel = Path(exported["savedmodel"])
    print(f"exported version {savedmodel.name} to {savedmodel.parent}: "
          f"{', '.join(sorted(exported.checks))}")
    images = [Path(p).read_bytes() for p in args.images]

    # 1. The SavedModel, with TensorFlow alone.
    serve = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    outputs = serve(image_bytes=tf.constant(images))
    for path, labels, scores in zip(args.images, outputs["labels"].numpy(),
                                    outputs["scores"].numpy()):
        print(f"SavedModel: {path} -> {labels[0].decode()} ({scores[0]:.3f})")

    # 2. TF Serving's REST API.
    body = rest_request(images)
    (out / "request.json").write_text(json.dumps(body))
    if args.server:
        request = urllib.request.Request(
            f"{args.server.rstrip('/')}/v1/models/{args.name}:predict",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        print("TF Serving answered:")
    else:
        answer = answer_locally(savedmodel, body)
        print(f"request body in {out / 'request.json'}; TF Serving would answer "
              "(computed locally):")
    for row in answer["predictions"]:
        print(f"  labels {row['labels']}, scores {[round(s, 3) for s in row['scores']]}")

    # 3. TFLite: pixels in, probabilities out; the client crops as the export says.
    spec = json.loads((savedmodel / "export.json").read_text())
    transform = pipelines.make_eval_transform(
        (spec["input"]["height"], spec["input"]["width"]),
        spec["eval_transform"]["crop_fraction"], spec["eval_transform"]["interpolation"],
        spec["input"]["channels"])
    pixels = np.stack([transform(tf.constant(image)).numpy() for image in images])
    with warnings.catch_warnings():
        # TF 2.21 warns that tf.lite.Interpreter moves to the ai_edge_litert package, which
        # has the same API (from ai_edge_litert.interpreter import Interpreter).
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=exported["tflite"])
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], pixels.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], pixels)
    interpreter.invoke()
    probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    names = spec["class_names"]
    for path, row in zip(args.images, probabilities):
        print(f"TFLite: {path} -> {names[int(row.argmax())]} ({row.max():.3f})")
    served = outputs["probabilities"].numpy()
    print(f"largest difference between TFLite and SavedModel probabilities: "
          f"{np.abs(probabilities - served).max():.2e}")


if __name__ == "__main__":
    main()

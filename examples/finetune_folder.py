"""Fine-tune a pretrained network on a folder of your own images, then export it.

    python examples/finetune_folder.py --data photos/ --model resnet50 --out runs/photos
    python examples/finetune_folder.py --small --out /tmp/finetune   # CI: tiny, offline

``photos/`` holds one sub-folder per class (``photos/cat/*.jpg``, ``photos/dog/*.jpg``), or
``photos/train/<class>/`` beside ``photos/val/<class>/``. Broken files are skipped and
listed; nothing is written inside ``photos/``.

The run directory (``--out``/run) ends up with ``best.keras``, ``metrics.json``, plots, a
model card and ``run.json``; ``--out``/export/1 is a SavedModel that takes JPEG bytes.

``--small`` writes 400 of scikit-learn's handwritten digits as an image folder and
fine-tunes ResNet-18 at 32x32 for two epochs. Pretrained weights cannot be downloaded in CI, so a
randomly initialised ResNet-18 saved to a file stands in for them: the recipe (new head
first, then the whole network, batch norm frozen) runs exactly as with real weights, but
the accuracy is that of two epochs from scratch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder: <data>/<class>/*.jpg")
    parser.add_argument("--model", default="resnet50", help="a name from `zoo list`")
    parser.add_argument("--weights", default="imagenet", help="catalog tag or file")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", default="runs/finetune-example")
    parser.add_argument("--small", action="store_true", help="tiny offline run for CI")
    args = parser.parse_args()

    import pipelines
    import zoo

    out = Path(args.out)
    image_size = None  # the model's own input size
    if args.small:
        from tiny_data import digits_folder

        args.data = digits_folder(out / "digits", per_class=40)
        args.model, args.epochs, image_size = "resnet18", 2, 32
        stand_in = zoo.build("resnet18", input_shape=(32, 32, 3))
        args.weights = str(out / "stand_in.weights.h5")
        stand_in.save_weights(args.weights)
    elif args.data is None:
        parser.error("--data is required (or --small)")

    run_dir = out / "run"
    # The pipeline takes the input size, crop and interpolation from the model's spec.
    data = pipelines.from_folder(args.data, model=args.model, image_size=image_size,
                                 augment="light" if args.small else "standard",
                                 out_dir=run_dir)
    print(data.summary())
    for path, reason in data.skipped:
        print(f"skipped {path}: {reason}")

    result = zoo.finetune(args.model, data, weights=args.weights, epochs=args.epochs,
                          out_dir=run_dir, verbose=2)
    print(f"validation accuracy: {result.metrics['val_accuracy']:.4f}")
    print(f"run directory: {result.run_dir}")

    exported = zoo.export(result.run_dir, out / "export")
    print(f"SavedModel: {exported['savedmodel']}")

    # Ask the export (TensorFlow alone, no zoo code in the graph) about a validation image.
    from zoo.predict import predict

    image, label = data.val_files[0]
    (answer,) = predict(exported["savedmodel"], [image], top_k=3)
    best = answer["predictions"][0]
    print(f"{image} (class {data.class_names[label]}): the export says {best['label']} "
          f"({best['score']:.3f})")


if __name__ == "__main__":
    main()

"""Fine-tune on a TensorFlow Datasets (TFDS) image-classification dataset.

    python examples/tfds_dataset.py --dataset tf_flowers --model resnet50 --out runs/flowers
    python examples/tfds_dataset.py --small --out /tmp/tfds   # CI: TFDS mock data, offline

``pipelines.from_tfds`` reads the images undecoded and sends them through the same decode,
crop and augmentation path as image folders, so a JPEG dataset such as ``tf_flowers``
gets the fused crop-and-decode. When the dataset has no validation split (``tf_flowers``
has only ``train``), the last 20% of ``train`` is held out; pass ``--split`` (for example
``train[:90%],train[90%:]``) to choose. The first run downloads and prepares the dataset
into ``--data-dir`` (TFDS' default: ``~/tensorflow_datasets``).

``--small`` runs on ``tfds.testing.mock_data``: random images with the real dataset's
features and class names, nothing downloaded. It trains ResNet-18 at 32x32 for one epoch
from scratch, so its accuracy means nothing; what it checks is that the whole path runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="tf_flowers", help="a TFDS name")
    parser.add_argument("--split", help="train split, or 'train,val' split strings")
    parser.add_argument("--data-dir", help="TFDS data directory")
    parser.add_argument("--model", default="resnet50", help="a name from `zoo list`")
    parser.add_argument("--weights", default="imagenet", help="catalog tag, file or 'none'")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", default="runs/tfds-example")
    parser.add_argument("--small", action="store_true", help="mock data for CI")
    args = parser.parse_args()

    import tensorflow_datasets as tfds

    import pipelines
    import zoo

    out = Path(args.out)
    weights = None if args.weights == "none" else args.weights
    image_size, context = None, contextlib.nullcontext()
    if args.small:
        args.model, weights, args.epochs, image_size = "resnet18", None, 1, 32
        context = tfds.testing.mock_data(num_examples=48)
    split = args.split.split(",") if args.split and "," in args.split else args.split

    # The mock replaces TFDS' reading, so everything that reads (training too) stays inside.
    with context:
        data = pipelines.from_tfds(args.dataset, split, data_dir=args.data_dir,
                                   model=args.model, image_size=image_size,
                                   batch_size=16 if args.small else 32, out_dir=out / "run")
        print(f"{args.dataset}: {data.num_classes} classes ({', '.join(data.class_names)}), "
              f"splits {data.manifest['splits']}")
        result = zoo.finetune(args.model, data, weights=weights, epochs=args.epochs,
                              out_dir=out / "run", verbose=2)
    print(f"validation accuracy: {result.metrics['val_accuracy']:.4f}")
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()

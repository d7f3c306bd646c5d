"""Train with an albumentations pipeline instead of zoo's built-in augmentation presets.

    python examples/albumentations_pipeline.py --data photos/ --model resnet50 --out runs/albu
    python examples/albumentations_pipeline.py --small --out /tmp/albu   # CI: tiny, offline

An ``albumentations.Compose`` passed as ``augment=`` runs per image inside ``tf.data``
(through ``tf.numpy_function``, in parallel): it receives the whole decoded image as uint8
RGB and must itself crop or resize to the model's input size, which is why the pipeline
below starts with ``RandomResizedCrop``. The validation images never see it: they take the
model's evaluation path (resize, centre crop). The example saves a grid of augmented
training images, times one pass over the training set, then fine-tunes.

``--small`` cuts 48 JPEGs from scikit-image's sample photographs (four classes) and trains
ResNet-18 at 64x64 for one epoch from scratch (pretrained weights cannot be downloaded in
CI).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def save_grid(images, path: Path, columns: int = 8) -> None:
    """Writes a batch of float pixels in [0, 255] as one PNG grid."""
    import numpy as np
    from PIL import Image

    images = np.clip(np.asarray(images), 0, 255).astype("uint8")[: columns * 2]
    rows = -(-len(images) // columns)
    height, width = images.shape[1:3]
    grid = np.zeros((rows * height, columns * width, 3), "uint8")
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = image
    Image.fromarray(grid).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder: <data>/<class>/*.jpg")
    parser.add_argument("--model", default="resnet50", help="a name from `zoo list`")
    parser.add_argument("--weights", default="imagenet", help="catalog tag, file or 'none'")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", default="runs/albumentations-example")
    parser.add_argument("--small", action="store_true", help="tiny offline run for CI")
    args = parser.parse_args()

    import albumentations as A

    import pipelines
    import zoo

    args.weights = None if args.weights == "none" else args.weights
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_size = None
    if args.small:
        from tiny_data import photo_folder

        args.data = photo_folder(out / "photos", per_class=12)
        # Nothing can be downloaded in CI: one epoch from scratch instead of fine-tuning.
        args.model, args.weights, args.epochs, image_size = "resnet18", None, 1, (64, 64)
    elif args.data is None:
        parser.error("--data is required (or --small)")

    height, width = image_size or zoo.describe(args.model, measure=False)["input_size"][:2]
    augment = A.Compose([
        A.RandomResizedCrop(size=(height, width), scale=(0.25, 1.0)),
        A.HorizontalFlip(p=0.5),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8),
        A.ToGray(p=0.1),
    ], seed=0)
    data = pipelines.from_folder(args.data, model=args.model, image_size=image_size,
                                 augment=augment, batch_size=16 if args.small else 32,
                                 out_dir=out / "run")
    print(data.summary())

    pixels, _ = next(iter(data.train))
    save_grid(pixels, out / "augmented.png")
    print(f"augmented batch: {tuple(pixels.shape)}, pixel range "
          f"[{float(pixels.numpy().min()):.0f}, {float(pixels.numpy().max()):.0f}]; "
          f"grid saved to {out / 'augmented.png'}")

    start, seen = time.perf_counter(), 0
    for batch, _ in data.train:
        seen += int(batch.shape[0])
    print(f"one pass over the training set: {seen} images, "
          f"{seen / (time.perf_counter() - start):.0f} images/s")

    result = zoo.finetune(args.model, data, weights=args.weights, epochs=args.epochs,
                          out_dir=out / "run", verbose=2)
    print(f"validation accuracy: {result.metrics['val_accuracy']:.4f}")
    print(f"run directory: {result.run_dir}")


if __name__ == "__main__":
    main()

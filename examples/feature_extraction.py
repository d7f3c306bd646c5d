"""Use a pretrained network as a fixed feature extractor, and fit a linear classifier on top.

    python examples/feature_extraction.py --data photos/ --model resnet50 --out runs/features
    python examples/feature_extraction.py --small --out /tmp/features   # CI: tiny, offline

The network is built without its classifier (``include_top=False, pooling="avg"``): one
vector per image (2048 numbers for ResNet-50). The images go through the evaluation path
(centre crop, no augmentation), the vectors are saved to ``features.npz``, and a
scikit-learn logistic regression is fitted on the training vectors and scored on the
validation ones. With good pretrained weights this is a strong, cheap baseline for a
small data set, and the vectors serve search and clustering as they are.

``--small`` uses 400 handwritten digits, ResNet-18 at 32x32 and, since nothing can be
downloaded in CI, a randomly initialised ResNet-18 saved to a file in place of pretrained
weights (random convolutional features still separate digits better than chance).
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
    parser.add_argument("--out", default="runs/features-example")
    parser.add_argument("--small", action="store_true", help="tiny offline run for CI")
    args = parser.parse_args()

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import pipelines
    import zoo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_size = None  # the model's own input size
    if args.small:
        from tiny_data import digits_folder

        args.data = digits_folder(out / "digits", per_class=40)
        args.model, image_size = "resnet18", 32
        args.weights = str(out / "stand_in.weights.h5")
        zoo.build("resnet18", input_shape=(32, 32, 3)).save_weights(args.weights)
    elif args.data is None:
        parser.error("--data is required (or --small)")

    # No augmentation and no shuffling: every image is seen once, centre-cropped.
    data = pipelines.from_folder(args.data, model=args.model, image_size=image_size,
                                 augment="none", shuffle=False, out_dir=out)
    extractor = zoo.build(args.model, weights=args.weights, include_top=False,
                          pooling="avg", input_shape=data.input_shape)

    def features(dataset):
        vectors, labels = [], []
        for pixels, label in dataset:
            vectors.append(np.asarray(extractor(pixels, training=False)))
            labels.append(label.numpy())
        return np.concatenate(vectors), np.concatenate(labels)

    x_train, y_train = features(data.train)
    x_val, y_val = features(data.val)
    print(f"{len(x_train)} training and {len(x_val)} validation images -> "
          f"{x_train.shape[1]} features each")
    np.savez(out / "features.npz", x_train=x_train, y_train=y_train, x_val=x_val,
             y_val=y_val, class_names=np.array(data.class_names))

    classifier = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    accuracy = classifier.score(x_val, y_val)
    print(f"logistic regression on {args.model} features: validation accuracy "
          f"{accuracy:.4f} (chance {1 / data.num_classes:.4f})")
    print(f"features saved to {out / 'features.npz'}")


if __name__ == "__main__":
    main()

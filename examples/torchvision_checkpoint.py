"""Load a torchvision checkpoint (a PyTorch state dict) into the zoo model of the same name.

    python examples/torchvision_checkpoint.py --checkpoint my_resnet50.pth --model resnet50
    python examples/torchvision_checkpoint.py --small --out /tmp/tv   # CI: makes a checkpoint

zoo reads ``.pth``/``.pt`` files (``torch.save`` of a ``state_dict``, zip or legacy
format) and ``.safetensors`` without PyTorch: the pickle is read by a restricted
unpickler that refuses anything a state dict does not need. Kernels are transposed to
Keras' layout, batch-norm statistics carried over, and the model's input normalisation is
set to torchvision's (ImageNet mean and std), so the Keras model takes raw pixels in
[0, 255] like every zoo model. A checkpoint fine-tuned to another number of classes loads
with ``num_classes`` set to it; a checkpoint for 1000 classes loaded with another
``num_classes`` loads all but the classifier.

**torch is only needed to make the checkpoint in ``--small`` mode** (and to compare the
two frameworks' outputs there). In small mode the example builds torchvision's
``resnet18`` with random weights (and random batch-norm statistics, so that their
conversion counts), saves its ``state_dict()`` with ``torch.save``, loads the file with
``zoo.build("resnet18", weights=path)`` and checks that both give the same logits on the
same raw pixels, each with its own preprocessing.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TORCH_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCH_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def make_checkpoint(path: Path, num_classes: int):
    """Saves a randomly initialised torchvision ResNet-18's state dict; returns the model."""
    import torch

    # torchvision's compiled ops do not match the CPU-only torch wheel; its model
    # definitions are pure Python and import once this module is stubbed out.
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=num_classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def torch_logits(model, pixels):
    """torchvision's logits on raw pixels, normalised as torchvision documents."""
    import numpy as np
    import torch

    x = (pixels - np.array(TORCH_MEAN, "float32")) / np.array(TORCH_STD, "float32")
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a torchvision state dict: .pth, .pt, .safetensors")
    parser.add_argument("--model", default="resnet50", help="the zoo name of its architecture")
    parser.add_argument("--num-classes", type=int, default=1000, dest="num_classes")
    parser.add_argument("--image", help="an image to classify with the loaded model")
    parser.add_argument("--out", default="runs/torchvision-example")
    parser.add_argument("--small", action="store_true", help="make a checkpoint (needs torch)")
    args = parser.parse_args()

    import numpy as np

    import zoo

    out = Path(args.out)
    reference = None
    if args.small:
        args.model, args.num_classes = "resnet18", 10
        args.checkpoint = str(out / "resnet18_10_classes.pth")
        reference = make_checkpoint(Path(args.checkpoint), args.num_classes)
        print(f"wrote a torchvision resnet18 state dict to {args.checkpoint}")
        from PIL import Image
        from skimage.data import astronaut

        args.image = str(out / "astronaut.jpg")
        Image.fromarray(astronaut()).save(args.image)
    elif args.checkpoint is None:
        parser.error("--checkpoint is required (or --small)")

    shape = (64, 64, 3) if args.small else None  # small mode: a small input is enough
    model = zoo.build(args.model, weights=args.checkpoint, num_classes=args.num_classes,
                      input_shape=shape)
    print(f"loaded {args.checkpoint} into {model.name}: {zoo.count_params(model):,} params, "
          f"input {model.input_shape[1:]}, raw pixels in [0, 255]")
    model.save(out / f"{args.model}.keras")
    print(f"saved the Keras model to {out / f'{args.model}.keras'}")

    if reference is not None:
        pixels = np.random.default_rng(0).uniform(0, 255, (4, *shape)).astype("float32")
        ours = np.asarray(model(pixels, training=False))
        zoo_logits = np.log(ours)  # softmax output; compare in log space
        theirs = torch_logits(reference, pixels)
        theirs = theirs - np.log(np.exp(theirs).sum(axis=1, keepdims=True))
        print(f"largest difference from torchvision (log-probabilities): "
              f"{np.abs(zoo_logits - theirs).max():.2e}")
        print(f"same top-1 as torchvision on {len(pixels)} inputs: "
              f"{bool((ours.argmax(1) == theirs.argmax(1)).all())}")

    if args.image:
        import tensorflow as tf

        import pipelines

        # The evaluation transform of the model with these weights (resize, centre crop,
        # no normalising: that is the model's first layer), at the model's input size.
        geometry = zoo.geometry(args.model, args.checkpoint,
                                image_size=tuple(model.input_shape[1:3]),
                                channels=model.input_shape[3])
        transform = pipelines.make_eval_transform(
            geometry.image_size, geometry.crop_fraction, geometry.interpolation,
            geometry.channels)
        pixels = transform(tf.constant(Path(args.image).read_bytes()))[None]
        probabilities = np.asarray(model(pixels, training=False))[0]
        print(f"{args.image}: class {int(probabilities.argmax())} "
              f"({probabilities.max():.3f})")


if __name__ == "__main__":
    main()

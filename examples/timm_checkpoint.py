"""Load a timm checkpoint into its zoo twin, and write the zoo model back as one.

    python examples/timm_checkpoint.py --checkpoint hf://timm/resnet50.a1_in1k --model resnet50
    python examples/timm_checkpoint.py --checkpoint my_timm_folder --model resnet50 --image cat.jpg
    python examples/timm_checkpoint.py --small --out /tmp/timm   # CI: makes a checkpoint

A timm checkpoint is a folder in the Hugging Face Hub's layout: ``config.json`` (the
architecture, the class count and ``pretrained_cfg``: mean, std, interpolation, crop and
input size) beside ``model.safetensors`` or ``pytorch_model.bin``. zoo reads it without
PyTorch; the architecture picks the zoo twin, ``pretrained_cfg`` sets the model's
normalisation and its eval geometry (``zoo.geometry``), and ``zoo.export(...,
formats=("timm",))`` writes a zoo model back in that layout for ``timm.create_model``.

**timm (and torch) are only needed in ``--small`` mode**, to make a genuine checkpoint with
timm's own ``save_for_hf`` (a random-init ``resnet18`` for 10 classes, with random
batch-norm statistics) and to compare: the zoo model and timm give the same logits on a
real photo through timm's eval transform, then timm loads zoo's export with the same logits.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_timm():
    """timm, importable beside the CPU torch wheel (torchvision's compiled ops stubbed)."""
    sys.modules.setdefault("torchvision._meta_registrations",
                           types.ModuleType("torchvision._meta_registrations"))
    import timm

    return timm


def make_checkpoint(folder: Path, num_classes: int):
    """Saves a random-init timm resnet18 in the Hub layout; returns the timm model."""
    import torch
    from timm.models import save_for_hf

    timm = import_timm()
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    save_for_hf(model, str(folder), safe_serialization=True)
    return model


def timm_inputs(timm_model, image, size: int):
    """The photo through timm's eval transform: 0..255 pixels for zoo, normalised for timm."""
    timm = import_timm()
    config = timm.data.resolve_data_config({"input_size": (3, size, size)}, model=timm_model)
    *geometry, normalise = timm.data.create_transform(**config).transforms
    for transform in geometry:
        image = transform(image)
    pixels = (image.numpy().transpose(1, 2, 0)[None] * 255).astype("float32")
    return pixels, normalise(image)[None]


def largest_difference(zoo_model, timm_model, image, size: int) -> float:
    """Largest logit difference between zoo and timm on ``image``, relative to the logits."""
    import keras
    import numpy as np
    import torch

    pixels, normalised = timm_inputs(timm_model, image, size)
    logits = keras.Model(zoo_model.input, zoo_model.get_layer("predictions").output)
    ours = np.asarray(logits(pixels))
    with torch.no_grad():
        theirs = timm_model(normalised).numpy()
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def small(out: Path) -> None:
    """Checkpoint by timm -> zoo -> timm export -> timm, compared at each crossing."""
    from PIL import Image
    from skimage import data

    import zoo

    timm = import_timm()
    photo = Image.fromarray(data.astronaut())
    folder = str(out / "resnet18_timm")
    reference = make_checkpoint(Path(folder), num_classes=10)
    model = zoo.build("resnet18", weights=folder, input_shape=(96, 96, 3))
    print(f"loaded: {model.name}, {model.output_shape[-1]} classes")
    print(f"eval geometry from pretrained_cfg: {zoo.geometry('resnet18', folder)}")
    print(f"zoo vs timm, largest logit difference (relative): "
          f"{largest_difference(model, reference, photo, 96):.2e}")
    exported = zoo.export(model, out / "export", formats=("timm",),
                          class_names=[f"class {i}" for i in range(10)])
    back = timm.create_model(f"local-dir:{exported['timm']}", pretrained=True).eval()
    print(f"exported to {exported['timm']}")
    print(f"timm on zoo's export, largest logit difference (relative): "
          f"{largest_difference(model, back, photo, 96):.2e}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="timm folder or hf://owner/repo[@revision]")
    parser.add_argument("--model", default="resnet50", help="the zoo twin")
    parser.add_argument("--image", help="an image to classify")
    parser.add_argument("--export", help="write the model back as a timm checkpoint here")
    parser.add_argument("--small", action="store_true", help="CI mode: makes a checkpoint")
    parser.add_argument("--out", default="timm_checkpoint_out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.small:
        small(out)
        return
    if not args.checkpoint:
        parser.error("--checkpoint is required (or --small)")
    import numpy as np
    import tensorflow as tf

    import pipelines
    import zoo

    # The checkpoint's eval geometry (timm's test size, crop and interpolation) sets the
    # input size; the normalisation is the model's first layer.
    geometry = zoo.geometry(args.model, args.checkpoint)
    model = zoo.build(args.model, weights=args.checkpoint,
                      input_shape=(*geometry.image_size, geometry.channels))
    print(f"{args.model}: eval geometry {geometry}")
    if args.image:
        transform = pipelines.make_eval_transform(
            geometry.image_size, geometry.crop_fraction, geometry.interpolation,
            geometry.channels)
        pixels = transform(tf.constant(Path(args.image).read_bytes()))[None]
        probabilities = np.asarray(model(pixels, training=False))[0]
        print(f"{args.image}: class {int(probabilities.argmax())} ({probabilities.max():.3f})")
    if args.export:
        print(zoo.export(model, args.export, formats=("timm",))["timm"])


if __name__ == "__main__":
    main()

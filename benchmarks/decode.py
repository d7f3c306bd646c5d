"""Train-path throughput on non-JPEG files: TensorFlow's decoders (the decode rule every path
uses) against decoding with Pillow inside ``tf.numpy_function``.

Builds a folder of real photos cut from scikit-image's samples (about 500x375, 10 classes)
saved as PNG with transparency, palette PNG, GIF and WebP in turn, and measures images per
second of one epoch of ``pipelines.from_folder(augment="standard")`` twice in one process:
once as zoo decodes them (``transforms.graph_decode``, the function a SavedModel carries) and
once with every file sent to Pillow instead (what zoo did before, and what a PyTorch-style
loader does). Both produce the same pixels. Rounds alternate; medians are reported.

    .venv/bin/python benchmarks/decode.py                  # 1000 images, 5 rounds
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from pipeline import common_parser, measure, medians, photo_crops  # noqa: E402

FORMATS = ("rgba.png", "palette.png", "gif", "webp")


def build_folder(root: Path, count: int, classes: int = 10, seed: int = 0,
                 size: tuple[int, int] = (500, 375)) -> Path:
    """Writes ``count`` photo crops into ``root/<class>/``, cycling through FORMATS."""
    from PIL import Image

    marker = root / f".complete-{count}-{classes}-{seed}"
    if marker.exists():
        return root
    for i, image, _ in photo_crops(count, seed, size):
        image = image.convert("RGB")
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        kind = FORMATS[i % len(FORMATS)]
        if kind == "rgba.png":
            alpha = np.full((image.height, image.width), 255, np.uint8)
            alpha[:, : image.width // 4] = 0
            image = image.convert("RGBA")
            image.putalpha(Image.fromarray(alpha))
            image.save(folder / f"{i:05d}.png")
        elif kind == "palette.png":
            image.quantize(128).save(folder / f"{i:05d}.png", transparency=0)
        elif kind == "gif":
            image.quantize(128).save(folder / f"{i:05d}.gif", transparency=0)
        else:
            image.save(folder / f"{i:05d}.webp", quality=85)
    marker.touch()
    return root


def train_dataset(root: Path, batch: int, size: int, pillow: bool):
    import pipelines
    from pipelines import transforms

    with warnings.catch_warnings(), mock.patch.object(
            transforms, "graph_supported", lambda head: not pillow):
        warnings.simplefilter("ignore")
        data = pipelines.from_folder(root, image_size=size, batch_size=batch,
                                     validation_split=0, cache=False, augment="standard")
        expected = transforms.KIND_PIL if pillow else transforms.KIND_GRAPH
        assert all(pipelines.probe(path)[0] == expected for path, _ in data.train_files[:8])
    return data.train


def main(argv=None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.set_defaults(images=1000, workdir=Path("/tmp/zoo-bench-decode"))
    args = parser.parse_args(argv)

    root = build_folder(args.workdir / f"mixed-{args.images}", args.images)
    datasets = {
        "ours: TensorFlow decoders (graph_decode)": train_dataset(root, args.batch, args.size,
                                                                  pillow=False),
        "Pillow in tf.numpy_function": train_dataset(root, args.batch, args.size, pillow=True),
    }
    rates = measure(datasets, args.images, args.rounds)
    names = list(datasets)
    wall = {n: medians(rates[n])[0] for n in names}
    cpu = {n: medians(rates[n])[1] for n in names}
    print(f"\n{args.images} images of about 500x375 (RGBA PNG, palette PNG with transparency, "
          f"GIF, WebP in turn), batch {args.batch}, output {args.size}x{args.size}, "
          f"augment='standard', {os.cpu_count()} cores, medians of {args.rounds} alternating "
          f"rounds; load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| train path | img/s (wall) | img per CPU-second |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {wall[name]:.0f} | {cpu[name]:.0f} |")
    ours, pillow = names
    print()
    print("| ratio | wall | CPU time |")
    print("|---|---:|---:|")
    print(f"| ours / Pillow | {wall[ours] / wall[pillow]:.2f}x | "
          f"{cpu[ours] / cpu[pillow]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

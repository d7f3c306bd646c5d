"""Start-up at scale: time to the first training batch, Keras' loader against from_folder.

Writes a folder of small real-photo JPEGs (crops of scikit-image's samples, 10 classes)
under a temporary directory, then runs, alternating, each in a fresh process so that its
peak memory is its own:

- ``keras``: ``keras.utils.image_dataset_from_directory`` (training subset);
- ``zoo-first``: ``pipelines.from_folder`` with an empty check index (a new ``ZOO_HOME``);
- ``zoo-again``: the same call on the unchanged folder, the index of ``zoo-first`` kept;
- ``zoo-again-nocache``: as ``zoo-again`` with ``cache=False``.

Each figure is the seconds from before the call (imports done) to the first batch, and the
process's peak resident memory. Ratios are to the Keras run of the same round.

    .venv/bin/python benchmarks/startup.py --files 30000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
root, which = sys.argv[1], sys.argv[2]
if which == "keras":
    import keras
    start = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        root, image_size=(32, 32), batch_size=64, validation_split=0.2,
        subset="training", seed=0, verbose=False)
else:
    import pipelines
    start = time.perf_counter()
    data = pipelines.from_folder(root, image_size=32, batch_size=64,
                                 cache=which != "zoo-again-nocache")
    ds = data.train
next(iter(ds))
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak}))
"""


def write_folder(root: Path, files: int, classes: int = 10) -> None:
    """``root/class_<c>/<i>.jpg``: 64x48 crops of scikit-image's photographs."""
    import numpy as np
    import skimage.data
    from PIL import Image

    names = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")
    rng = np.random.default_rng(0)
    for c in range(classes):
        base = np.asarray(getattr(skimage.data, names[c % len(names)])())[..., :3]
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(files // classes):
            y, x = rng.integers(0, base.shape[0] - 96), rng.integers(0, base.shape[1] - 128)
            crop = Image.fromarray(base[y:y + 96, x:x + 128]).resize((64, 48))
            crop.save(folder / f"{i:06d}.jpg", quality=90)


def run(root: Path, which: str, home: Path) -> dict:
    env = dict(os.environ, ZOO_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), which], env=env,
                         capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=None, help="where to write (a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        root = Path(scratch) / "photos"
        start = time.perf_counter()
        write_folder(root, args.files)
        print(f"wrote {args.files} files in {time.perf_counter() - start:.0f} s", flush=True)
        time.sleep(3)  # files this new are not recorded by the check index
        ratios: dict[str, list[float]] = {}
        for r in range(args.rounds):
            home = Path(scratch) / f"home{r}"
            base = run(root, "keras", home)
            print(f"round {r} keras: {base['seconds']:.2f} s, "
                  f"{base['peak_bytes'] / 2**20:.0f} MiB", flush=True)
            for which in ("zoo-first", "zoo-again", "zoo-again-nocache"):
                got = run(root, which, home)
                ratios.setdefault(which, []).append(got["seconds"] / base["seconds"])
                ratios.setdefault(which + " memory", []).append(
                    got["peak_bytes"] / base["peak_bytes"])
                print(f"round {r} {which}: {got['seconds']:.2f} s, "
                      f"{got['peak_bytes'] / 2**20:.0f} MiB "
                      f"({ratios[which][-1]:.2f}x time, "
                      f"{ratios[which + ' memory'][-1]:.2f}x memory)", flush=True)
        for name, values in ratios.items():
            print(f"median {name}: {statistics.median(values):.2f}x of keras "
                  f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()

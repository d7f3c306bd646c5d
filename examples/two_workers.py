"""Synchronous training on two workers with ``MultiWorkerMirroredStrategy`` and ``TF_CONFIG``.

On one machine, this script starts both workers itself, on two loopback ports::

    python examples/two_workers.py --data photos/ --model resnet50 --out runs/photos
    python examples/two_workers.py --small --out /tmp/two    # CI: digits, LeNet-5, offline

On several hosts, run it on each with ``--worker`` and that host's ``TF_CONFIG``: the same
cluster everywhere, a different ``task.index`` per host (index 0 is the chief, the only
worker that writes the run directory). The image folder must be readable at the same path
on every host::

    export TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                       "task": {"type": "worker", "index": 0}}'
    python examples/two_workers.py --worker --data /shared/photos --model resnet50 \\
        --out /shared/runs/photos

``zoo.select_strategy()`` is the first thing a worker does: ``MultiWorkerMirroredStrategy``
must exist before TensorFlow runs any operation. With ``TF_CONFIG`` naming two workers it
returns that strategy, and ``zoo.finetune`` then trains under it: the global batch is the
per-worker batch times the number of workers, and the learning rates scale with it.

``--small`` trains LeNet-5 from scratch for three epochs on 600 handwritten digits; each
worker is given ``--timeout`` seconds (default 600) before both are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def free_ports(count: int) -> list[int]:
    """Ports that are free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(args: argparse.Namespace) -> int:
    """Starts two worker processes of this script on loopback ports and waits for both."""
    if args.small:
        from tiny_data import digits_folder  # writes PNGs; TensorFlow is not imported here

        args.data = str(digits_folder(Path(args.out) / "digits", per_class=60))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    command = [sys.executable, __file__, "--worker", "--data", str(args.data),
               "--model", args.model, "--weights", args.weights, "--out", args.out]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    if args.small:
        command.append("--small")
    workers = []
    for index in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        print(f"worker {index}: TF_CONFIG={json.dumps(tf_config)}")
        workers.append(subprocess.Popen(command, env={**os.environ,
                                                      "TF_CONFIG": json.dumps(tf_config)},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
    codes = []
    try:
        for index, worker in enumerate(workers):
            try:
                output, _ = worker.communicate(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                for other in workers:
                    other.kill()
                output, _ = worker.communicate()
                print(f"worker {index} did not finish within {args.timeout} s; stopped both.")
            for line in output.splitlines():
                print(f"[worker {index}] {line}")
            codes.append(worker.returncode)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return 0 if codes == [0, 0] else 1


def work(args: argparse.Namespace) -> int:
    """One worker: the strategy first, then the usual fine-tuning call."""
    import zoo

    strategy = zoo.select_strategy()  # before any TensorFlow operation
    from zoo.distribute import is_chief, strategy_name, worker_index

    print(f"worker {worker_index()}: {strategy_name(strategy)}, "
          f"{strategy.num_replicas_in_sync} replicas in sync, chief: {is_chief()}")
    weights = None if args.weights == "none" else args.weights
    result = zoo.finetune(args.model, args.data, weights=weights, epochs=args.epochs,
                          out_dir=args.out + "/run", verbose=2, precision="float32",
                          batch_size=32 if args.small else None)
    print(f"validation accuracy: {result.metrics['val_accuracy']:.4f} "
          f"over {result.metrics['num_images']} images")
    if is_chief():
        print(f"run directory: {result.run_dir}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="image folder: <data>/<class>/*.jpg")
    parser.add_argument("--model", default="resnet50", help="a name from `zoo list`")
    parser.add_argument("--weights", default="imagenet", help="catalog tag, file or 'none'")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--out", default="runs/two-workers-example")
    parser.add_argument("--worker", action="store_true",
                        help="be one worker (TF_CONFIG set); without it, start two")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per worker")
    parser.add_argument("--small", action="store_true", help="tiny offline run for CI")
    args = parser.parse_args()
    if args.small:
        args.model, args.weights, args.epochs = "lenet5", "none", 3
    if args.worker:
        if "TF_CONFIG" not in os.environ:
            parser.error("--worker needs TF_CONFIG (see the top of this file)")
        return work(args)
    if args.data is None and not args.small:
        parser.error("--data is required (or --small)")
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())

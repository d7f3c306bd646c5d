"""The file check (``pipelines.probe.check_files``) against an earlier version of probe.py.

Builds (once) a folder of real-photo JPEGs cut from scikit-image's sample photographs
(``benchmarks/pipeline.py``'s folder, about 500x375) and times the fast and the full check
of every file with this tree's ``pipelines/probe.py`` and with another version of that file
(``--against``, e.g. one written by ``git show <commit>:pipelines/probe.py``), in
alternating order, several rounds; the medians are reported. The content hash a file
cache's key takes (``pipelines.cache.files_cache_key``, paid only with a file cache) is
timed too.

    git show a14dbd4:pipelines/probe.py > /tmp/probe_before.py
    .venv/bin/python benchmarks/check.py --against /tmp/probe_before.py --images 2000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    """Prints the medians of the check's wall time per version and check."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, required=True, help="another probe.py")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/zoo-bench-check"))
    args = parser.parse_args(argv)

    from pipeline import build_folder

    from pipelines import cache
    from pipelines.probe import ImageFile

    probe = importlib.import_module("pipelines.probe")  # pipelines.probe is also a function

    root = build_folder(args.folder, args.images)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[: args.images]
    versions = {"this tree": probe, str(args.against): _module(args.against, "probe_other")}
    times: dict[tuple[str, bool], list[float]] = {}
    for version in versions.values():
        version.check_files(paths, full=False)  # warm the page cache and the traced decoder
    for _ in range(args.rounds):
        for full in (False, True):
            for name, version in versions.items():
                times.setdefault((name, full), []).append(
                    _timed(lambda v=version, f=full: v.check_files(paths, full=f)))
    files = [ImageFile(p, 0, 0) for p in paths]
    key = [_timed(lambda: cache.files_cache_key(files)) for _ in range(args.rounds)]
    print(f"{len(paths)} JPEGs in {root}, {os.cpu_count()} cores, medians of {args.rounds}")
    for (name, full), values in times.items():
        median = statistics.median(values)
        print(f"  {'full' if full else 'fast'} check, {name}: {median:.2f} s "
              f"({len(paths) / median:.0f} files/s; runs {', '.join(f'{v:.2f}' for v in values)})")
    print(f"  files_cache_key (content hash; with a file cache only): "
          f"{statistics.median(key):.2f} s")


if __name__ == "__main__":
    main()

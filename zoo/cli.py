"""The ``zoo`` command line."""

from __future__ import annotations

import argparse
import os
import sys


def _quiet_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up banner silenced (``ZOO_VERBOSE=1`` keeps it).

    The banner (oneDNN and CPU-feature notices) is written to file descriptor 2 by C++ code
    before logging is configured, so neither ``TF_CPP_MIN_LOG_LEVEL`` nor Python's logging
    reaches it; it would drown the tables the CLI prints. Python exceptions still surface.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("ZOO_VERBOSE") or "tensorflow" in sys.modules:
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _format_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    """Prints registered models, one a line, with family, year, input size and twins."""
    import zoo
    from zoo.registry import get_spec

    names = zoo.list_models(args.pattern, pretrained=args.pretrained)
    if not names:
        print(f"No model matches {args.pattern!r}.", file=sys.stderr)
        return 1
    rows = []
    for name in names:
        spec = get_spec(name)
        twins = ", ".join(f"{lib}:{tw}" for lib, tw in spec.twins.items()) or "-"
        size = "x".join(str(s) for s in spec.input_size)
        rows.append([name, spec.family, spec.year, size, ", ".join(spec.weights) or "-", twins])
    print(_format_table(rows, ["model", "family", "year", "input", "weights", "twins"]))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Prints one model's description as a readable table."""
    import zoo

    info = zoo.describe(args.name)
    twin_counts = ", ".join(f"{lib} {n:,}" for lib, n in info["twin_params"].items())
    published = (f"{info['published_gmacs']} ({info['gmacs_source']})"
                 if info["published_gmacs"] else "-")
    rows = [
        ["family", info["family"]],
        ["paper", f"{info['paper']} ({info['year']})"],
        ["params", f"{info['params']:,} (Keras count_params: {info['keras_params']:,})"],
        ["twins' params", twin_counts or "-"],
        ["GMACs", f"{info['gmacs']} at {'x'.join(map(str, info['input_size'][:2]))}"],
        ["published GMACs", published],
        ["input size", "x".join(map(str, info["input_size"]))
         + f" (minimum {'x'.join(map(str, info['min_input_size']))})"],
        ["eval transform", f"crop fraction {info['crop_fraction']}, {info['interpolation']}"],
        ["preprocessing", str(info["preprocessing"])],
        ["twins", ", ".join(f"{lib}: {tw}" for lib, tw in info["twins"].items()) or "-"],
        ["options", ", ".join(f"{k}={v!r}" for k, v in info["family_options"].items()) or "-"],
    ]
    if info["weights"]:
        for tag, meta in info["weights"].items():
            top1 = meta.get("top1")
            rows.append([f"weights:{tag}",
                         f"{meta.get('source', '?')}"
                         + (f", top-1 {top1}" if top1 is not None else "")
                         + (f", {meta.get('preprocessing')}" if meta.get("preprocessing") else "")])
    else:
        rows.append(["weights", "none"])
    print(_format_table(rows, ["", args.name]))
    if info["notes"]:
        print("\n" + info["notes"])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Runs the main job on the embedded default data."""
    import zoo

    print(_format_table([[n] for n in zoo.list_models()], ["registered models"]))
    model = zoo.build("lenet5", num_classes=10)
    model.summary()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser of the ``zoo`` command."""
    parser = argparse.ArgumentParser(
        prog="zoo", description="Classic image networks for Keras 3: build, fine-tune, export.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.add_argument("--pretrained", action="store_true", help="only models with weights")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="describe one model: params, GMACs, paper, twins, weights")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="run the main job on the embedded default data")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``zoo`` command.

    Args:
        argv: Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The process exit code.
    """
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        # Errors of the user's making get one clear line, not a traceback.
        print(f"zoo {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

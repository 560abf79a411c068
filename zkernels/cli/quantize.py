"""`zkernels quantize MODEL OUT`: SmoothQuant calibration of a checkpoint, written as a folder that
`from_pretrained` (and every command's --model) loads quantized."""
from __future__ import annotations

import argparse

from .documents import read_documents
from .options import add_progress


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quantize", help="calibrate a checkpoint for int8/fp8 and write it as a quantized checkpoint folder",
        description="Run MODEL in float32 over calibration texts, compute SmoothQuant scales for the inputs of "
                    "q|k|v and gate|up, and write OUT: MODEL's files (hard-linked where possible), the scales, "
                    "and the recipe in config.json. Loading OUT quantizes at load (--quantize none loads the "
                    "original model).")
    p.add_argument("model", metavar="MODEL", help="checkpoint folder or Hugging Face hub id")
    p.add_argument("out", metavar="OUT", help="output folder (new, or empty)")
    p.add_argument("--calibration", metavar="FILE", default=None,
                   help="calibration texts, one per line (or .jsonl); default: a small built-in set")
    p.add_argument("--alpha", type=_alpha, default=0.5, metavar="A",
                   help="SmoothQuant's migration strength in [0, 1] (default: 0.5)")
    p.add_argument("--quantize", choices=("int8", "fp8"), default="int8",
                   help="the mode OUT loads in (default: int8)")
    add_progress(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ..calibration import write_quantized_checkpoint

    texts = read_documents(args.calibration) if args.calibration else None
    out = write_quantized_checkpoint(args.model, args.out, quantize=args.quantize, texts=texts,
                                     calibration_name=args.calibration, alpha=args.alpha,
                                     show_progress=args.progress)
    print(f"wrote {out} ({args.quantize}, SmoothQuant alpha {args.alpha}); load it with --model {out}")
    return 0

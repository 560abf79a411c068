"""`zkernels rerank-dataset` / `zkernels embed-dataset`: Parquet or JSON Lines in, the same rows plus a
score / embedding column out, scored on Ray (a local Ray by default, the cluster RAY_ADDRESS names
otherwise)."""
from __future__ import annotations

import re
import time

from .. import formats
from ..binary.quantize import BINARY_PRECISIONS
from .options import add_device, add_progress


def _common(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or Hugging Face hub id (each actor loads it)")
    p.add_argument("--input", required=True, help="input file: .parquet or .jsonl (or a folder with --input-format)")
    p.add_argument("--output", required=True,
                   help="output file (.parquet or .jsonl), written in input order; the input's columns are kept")
    p.add_argument("--input-format", choices=["parquet", "jsonl"], default=None, help="default: from the suffix")
    p.add_argument("--output-format", choices=["parquet", "jsonl"], default=None, help="default: from the suffix")
    p.add_argument("--concurrency", type=int, default=None,
                   help="number of actors (default: one per GPU of the cluster, or 1 without GPUs)")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs per actor (default: 1)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per Ray batch (default: sized from the token budget and a sample of the rows)")
    add_device(p, default=None, default_help="cuda in an actor that has a GPU, else cpu")
    add_progress(p)
    p.add_argument("--num-local-cpus", type=int, default=None,
                   help="CPUs of the local Ray started when RAY_ADDRESS is unset (default: all)")


def add_parser(sub) -> None:
    """Registers rerank-dataset and embed-dataset on an argparse subparsers object."""
    r = sub.add_parser("rerank-dataset", help="score (query, document) rows of a Parquet/JSONL file on Ray")
    _common(r)
    r.add_argument("--query-column", default="query", help="input column holding the query (default: query)")
    r.add_argument("--document-column", default="document",
                   help="input column holding the document (default: document)")
    r.add_argument("--score-column", default="score", help="output column for the score (default: score)")
    r.add_argument("--format", choices=formats.FORMATS, default=None,
                   help="scoring recipe (default: detected from the checkpoint)")
    r.add_argument("--max-length", type=int, default=None, help="prompt tokens (default: the model's maximum)")
    r.set_defaults(func=run_rerank_dataset)

    e = sub.add_parser("embed-dataset", help="embed the text rows of a Parquet/JSONL file on Ray")
    _common(e)
    e.add_argument("--text-column", default="text", help="input column holding the text (default: text)")
    e.add_argument("--embedding-column", default="embedding",
                   help="output column for the embedding (default: embedding)")
    e.add_argument("--input-type", choices=["document", "query"], default="document",
                   help="which prompt the checkpoint prepends (default: document)")
    e.add_argument("--dimensions", type=int, default=None,
                   help="output dimensions: one the checkpoint's projections offer (default: the hidden size)")
    e.add_argument("--precision", choices=("float32", *BINARY_PRECISIONS), default="float32",
                   help="float32 vectors, or packed sign bits (binary: int8, ubinary: uint8) (default: float32)")
    e.add_argument("--max-seq-length", type=int, default=None, help="tokens per text (default: the checkpoint's)")
    e.set_defaults(func=run_embed_dataset)


def _start_ray(args) -> None:
    import os

    import ray
    if not ray.is_initialized():
        # With RAY_ADDRESS set, ray.init() joins that cluster; num_cpus only applies to a new local one.
        local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": args.num_local_cpus, "include_dashboard": False}
        ray.init(**local)


def _load_kwargs(args, *names) -> dict:
    return {n: getattr(args, n) for n in ("device", "dtype", "backend", *names) if getattr(args, n) is not None}


def _actor_error(error: BaseException) -> str:
    """The line naming the error an actor raised (e.g. "TypeError: column 'document' must hold strings..."),
    out of Ray's remote traceback; Ray's whole message when there is none."""
    lines = str(error).strip().splitlines()
    for line in reversed(lines):
        match = re.match(r"(\w+(?:Error|Exception)): \S", line.strip())
        if match and not match.group(1).startswith(("Ray", "UserCode")):
            return line.strip()
    return " ".join(lines)


def _run(args, build) -> int:
    try:
        import ray.data
        from ray.exceptions import RayError
    except ImportError:
        raise RuntimeError("Ray is not installed; install it with pip install 'zkernels[ray]'") from None

    from ..ray import read_dataset, write_dataset
    _start_ray(args)
    if args.progress is not None:  # --progress / --no-progress: Ray Data's own progress bars
        ray.data.DataContext.get_current().enable_progress_bars = args.progress
    start = time.perf_counter()
    ds = read_dataset(args.input, args.input_format)
    try:
        rows = write_dataset(build(ds), args.output, args.output_format)
    except RayError as e:
        # An error in an actor (a null cell, a bad checkpoint) arrives wrapped in Ray's remote traceback;
        # the CLI reports the error itself, in one line.
        raise RuntimeError(_actor_error(e)) from None
    elapsed = time.perf_counter() - start
    print(f"wrote {rows} rows to {args.output} in {elapsed:.1f} s ({rows / elapsed:.1f} rows/s)")
    return 0


def run_rerank_dataset(args) -> int:
    from ..ray import rerank_dataset
    return _run(args, lambda ds: rerank_dataset(
        ds, args.model, query_column=args.query_column, document_column=args.document_column,
        score_column=args.score_column, concurrency=args.concurrency,
        num_gpus=args.num_gpus, num_cpus=args.num_cpus, batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch, **_load_kwargs(args, "format", "max_length")))


def run_embed_dataset(args) -> int:
    from ..ray import embed_dataset
    return _run(args, lambda ds: embed_dataset(
        ds, args.model, input_type=args.input_type, text_column=args.text_column,
        embedding_column=args.embedding_column, dimensions=args.dimensions, precision=args.precision,
        concurrency=args.concurrency, num_gpus=args.num_gpus, num_cpus=args.num_cpus, batch_size=args.batch_size,
        max_tokens_per_batch=args.max_tokens_per_batch, **_load_kwargs(args, "max_seq_length")))

"""`zkernels rerank-dataset` / `zkernels embed-dataset`: Parquet or JSON Lines in, the same rows plus a
score / embedding column out, scored on Ray (a local Ray by default, the cluster RAY_ADDRESS names
otherwise)."""
from __future__ import annotations

import re
import time

from .. import formats
from ..binary.quantize import BINARY_PRECISIONS
from ..ray.columns import ON_INVALID
from ..ray.retries import DEFAULT_MAX_RETRIES
from .options import add_device, add_progress, engine_options, non_negative_int


def _common(p) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder or Hugging Face hub id (each actor loads it)")
    p.add_argument("--input", required=True, help="input file: .parquet or .jsonl (or a folder with --input-format)")
    p.add_argument("--output", required=True,
                   help="output file (.parquet or .jsonl), written in input order; or a folder (a path ending in "
                        "/, an existing directory, or a URI such as s3://bucket/out/), absent or empty, that Ray's "
                        "workers fill with many files. The input's columns are kept with their types; JSON Lines "
                        "output is strict JSON (NaN and infinite floats are written as null)")
    p.add_argument("--input-format", choices=["parquet", "jsonl"], default=None, help="default: from the suffix")
    p.add_argument("--output-format", choices=["parquet", "jsonl"], default=None,
                   help="default: from the suffix (a folder without one: parquet)")
    p.add_argument("--on-invalid", choices=ON_INVALID, default="error",
                   help="a row whose input text is null or not a string: 'error' stops the job naming the row "
                        "(no output is left); 'null' scores the other rows and gives it a null (default: error)")
    p.add_argument("--max-retries", type=non_negative_int, default=DEFAULT_MAX_RETRIES, metavar="N",
                   help="times a batch whose scoring kills its actor (out of memory, a crash) is tried again before "
                        f"the job stops, naming the batch (default: {DEFAULT_MAX_RETRIES})")
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
    """The job's keyword arguments every command shares, then `names` of `args` that are set."""
    return dict(concurrency=args.concurrency, num_gpus=args.num_gpus, num_cpus=args.num_cpus,
                batch_size=args.batch_size, on_invalid=args.on_invalid, max_retries=args.max_retries,
                # The options carry --device, --dtype, --backend and the token budget; without --device
                # each actor picks its own (cuda where Ray gave it a GPU, else cpu).
                options=engine_options(args),
                **{n: getattr(args, n) for n in names if getattr(args, n) is not None})


def _actor_error(error: BaseException) -> str:
    """The line naming the error an actor raised (e.g. "TypeError: column 'document' must hold strings..."),
    out of Ray's remote traceback, without the error's module path; Ray's whole message when there is none."""
    lines = str(error).strip().splitlines()
    for line in reversed(lines):
        match = re.match(r"(?:[\w.]+\.)?(\w+(?:Error|Exception)): (\S.*)", line.strip())
        if match and not match.group(1).startswith(("Ray", "UserCode")):
            return f"{match.group(1)}: {match.group(2)}"
    return " ".join(lines)


def _raised(error: BaseException, kind: type) -> bool:
    """Whether an error out of Ray is, or wraps, an exception of type `kind` raised in an actor."""
    seen = error
    while seen is not None:
        if isinstance(seen, kind) or isinstance(getattr(seen, "cause", None), kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return f"{kind.__name__}: " in str(error)


def _invalid_row_message(args, columns: list[str], what: str) -> str | None:
    """Where the first invalid row of the input is, found by reading its text columns again (a Ray batch
    does not know its offset in the input)."""
    from ..ray import read_dataset
    from ..ray.columns import first_invalid_row
    found = first_invalid_row(read_dataset(args.input, args.input_format), columns)
    if found is None:
        return None
    row, column, cell = found
    return (f"row {row} of the input (counting from 0) holds {cell} in column {column!r}, where a string belongs; "
            f"pass --on-invalid null to score the other rows and give such rows a null {what}")


def _died_message(error: BaseException, args) -> str:
    """Ray's limit on restarts ran out (the actor's own count of a batch that kills it could not work,
    e.g. it was restarted on another node): say so, with Ray's reason for the death."""
    detail = re.search(r"Worker exit detail: ([^.]*\.)", str(error))
    reason = detail.group(1) if detail else _actor_error(error)
    return (f"a scoring actor died more often than --max-retries {args.max_retries} allows (Ray stopped restarting "
            f"it): {reason} A batch that kills its actor every time usually holds a row too long for the host's "
            f"memory: lower --batch-size or --max-tokens-per-batch")


def _run(args, build, columns: list[str], what: str) -> int:
    try:
        import ray.data
        from ray.exceptions import RayActorError, RayError
    except ImportError:
        raise RuntimeError("Ray is not installed; install it with python3 -m pip install -e '.[ray]' in the "
                           "zkernels checkout") from None

    from ..ray import read_dataset
    from ..ray.columns import InvalidRowError
    from ..ray.io import write_output
    from ..ray.retries import BatchKeepsFailingError
    _start_ray(args)
    if args.progress is not None:  # --progress / --no-progress: Ray Data's own progress bars
        ray.data.DataContext.get_current().enable_progress_bars = args.progress
    start = time.perf_counter()
    ds = read_dataset(args.input, args.input_format)
    try:
        written = write_output(build(ds), args.output, args.output_format, null_column=_output_column(args))
    except RayError as e:
        # An error in an actor (an invalid row, a bad checkpoint) arrives wrapped in Ray's remote
        # traceback; the CLI reports the error itself, in one line.
        if _raised(e, InvalidRowError):
            message = _invalid_row_message(args, columns, what)
            raise RuntimeError(message or _actor_error(e)) from None
        if _raised(e, BatchKeepsFailingError):  # its message is the whole story
            raise RuntimeError(_actor_error(e).removeprefix(f"{BatchKeepsFailingError.__name__}: ")) from None
        if isinstance(e, RayActorError):  # (ActorDiedError on newer Ray)
            raise RuntimeError(_died_message(e, args)) from None
        raise RuntimeError(_actor_error(e)) from None
    elapsed = time.perf_counter() - start
    files = f" ({written.files} files)" if written.files != 1 else ""
    print(f"wrote {written.rows} rows to {args.output}{files} in {elapsed:.1f} s "
          f"({written.rows / elapsed:.1f} rows/s)")
    if args.on_invalid == "null":
        print(f"{written.null_rows} rows had a null or non-string {' or '.join(columns)}: their {what} is null")
    return 0


def _output_column(args) -> str:
    return getattr(args, "score_column", None) or args.embedding_column


def run_rerank_dataset(args) -> int:
    from ..ray import rerank_dataset
    columns = [args.query_column, args.document_column]
    return _run(args, lambda ds: rerank_dataset(
        ds, args.model, query_column=args.query_column, document_column=args.document_column,
        score_column=args.score_column, **_load_kwargs(args, "format", "max_length")), columns, "score")


def run_embed_dataset(args) -> int:
    from ..ray import embed_dataset
    return _run(args, lambda ds: embed_dataset(
        ds, args.model, input_type=args.input_type, text_column=args.text_column,
        embedding_column=args.embedding_column, dimensions=args.dimensions, precision=args.precision,
        **_load_kwargs(args, "max_seq_length")), [args.text_column], "embedding")

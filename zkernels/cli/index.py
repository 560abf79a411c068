"""`zkernels index build` / `zkernels index search`: the retrieve-then-rerank pipeline on a folder.

Without --model / --reranker, the demo models are used: a tiny embedder and a tiny reranker trained offline
to match words and phrases (zkernels.demo_models), built once under the zkernels cache folder. They show
the machinery runs with rankings that make sense on plain English; they are no substitute for real models.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .checkpoints import EMBEDDER, RERANKER, check_checkpoint
from .documents import print_ranked, read_numbered_documents
from .messages import UsageError
from .options import (
    add_documents,
    add_engine_flags,
    add_query,
    add_ranked_output,
    engine_options,
    positive_int,
)
from .rerank import note_query_clipping

CHUNK = 2048  # documents per add_documents call: bounds memory and drives the progress bar
DEMO_EMBEDDER, DEMO_RERANKER = "demo-embedder", "demo-reranker"
LINES_FILE = "source_lines.npy"  # the documents file's line number of each corpus id (the CLI's, not Pipeline's)
DEFAULT_CANDIDATES = 100


def _demo_folder(name: str) -> Path:
    """The built-in demo model's checkpoint folder (built once in the zkernels cache)."""
    from ..demo_models import demo_checkpoint, demo_embedder_checkpoint
    return demo_checkpoint() if name == DEMO_RERANKER else demo_embedder_checkpoint()


def _resolve_model(value: str | None, demo: str, flag: str, kind: str, other_flag: str) -> str:
    if value in (None, "demo"):
        print(f"using the built-in {demo} (a tiny model trained to match words and phrases, for trying the "
              f"machinery: not a substitute for a real model)", file=sys.stderr)
        return str(_demo_folder(demo))
    check_checkpoint(value, flag, kind, other_flag)
    return value


def _model_paths(args, meta: dict | None = None) -> tuple[str, str | None]:
    """(embedder, reranker or None), checked to be checkpoints of the right kind; nothing loaded yet."""
    meta = meta or {}
    model = _resolve_model(args.model or meta.get("model"), DEMO_EMBEDDER, "--model", EMBEDDER, "--reranker")
    reranker = None
    if not args.no_reranker:
        reranker = _resolve_model(args.reranker or meta.get("reranker"), DEMO_RERANKER, "--reranker", RERANKER,
                                  "--model")
    return model, reranker


def _load_models(args, model: str, reranker_path: str | None):
    from ..embedder import Embedder
    from ..reranker import Reranker

    options = engine_options(args)
    embedder = Embedder.from_pretrained(model, options=options)
    reranker = Reranker.from_pretrained(reranker_path, options=options) if reranker_path else None
    return embedder, reranker


def _check_out_folder(out: str) -> None:
    """--out must be a folder, new or existing, that can be written: checked before hours of embedding."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {out} is an existing file; pass a folder (new, or one to write into)")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: no permission to write in {parent}")


def _build(args) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from ..pipeline import Pipeline

    if args.reranker and args.no_reranker:
        raise UsageError("--reranker and --no-reranker exclude each other")
    _check_out_folder(args.out)
    numbered = read_numbered_documents(args.documents)
    model, reranker_path = _model_paths(args)
    embedder, reranker = _load_models(args, model, reranker_path)
    pipe = Pipeline(embedder, reranker=reranker, dimensions=args.dimensions,
                    metadata={"model": model, "reranker": reranker_path})
    docs = [text for _, text in numbered]
    # --progress forces the bar, --no-progress hides it, default: tqdm shows it on a terminal only.
    disable = {None: None, True: False, False: True}[args.progress]
    with tqdm(total=len(docs), desc="Indexing", unit="doc", disable=disable) as bar:
        for start in range(0, len(docs), CHUNK):
            chunk = docs[start:start + CHUNK]
            pipe.add_documents(chunk, show_progress_bar=False)
            bar.update(len(chunk))
    out = pipe.save(args.out)
    np.save(out / LINES_FILE, np.array([n for n, _ in numbered], dtype=np.int64))
    print(f"indexed {len(pipe)} documents ({pipe.dimensions}-bit codes) into {args.out}", file=sys.stderr)
    return 0


def _source_lines(folder: Path, n: int):
    import numpy as np
    path = folder / LINES_FILE
    if not path.is_file():  # a folder saved through the Python API
        return None
    lines = np.load(path, mmap_mode="r")
    return lines if lines.shape == (n,) else None


def _search(args) -> int:
    from ..pipeline import Pipeline

    candidates = args.candidates if args.candidates is not None else max(DEFAULT_CANDIDATES, args.top_k)
    if candidates < args.top_k:
        raise UsageError(f"--candidates ({candidates}) must be at least --top-k ({args.top_k})")
    if args.rerank is not None and not args.top_k <= args.rerank <= candidates:
        raise UsageError(f"--rerank ({args.rerank}) must lie between --top-k ({args.top_k}) and "
                         f"--candidates ({candidates})")
    if args.reranker and args.no_reranker:
        raise UsageError("--reranker and --no-reranker exclude each other")
    meta = Pipeline.read_metadata(args.dir)
    model, reranker_path = _model_paths(args, meta)
    embedder, reranker = _load_models(args, model, reranker_path)
    pipe = Pipeline.load(args.dir, embedder, reranker)
    if reranker is not None:
        note_query_clipping(reranker, args.query)
    results = pipe.search(args.query, k=args.top_k, candidates=candidates, rerank=args.rerank,
                          show_progress_bar=args.progress)
    lines = _source_lines(Path(args.dir), len(pipe))
    if lines is not None:
        results = [{"corpus_id": r["corpus_id"], "line": int(lines[r["corpus_id"]]), **r} for r in results]
    print_ranked(results, args.json)
    return 0


def _bits(text: str) -> int:
    """argparse type for --dimensions: binary codes pack 8 dimensions per byte."""
    value = positive_int(text)
    if value % 8:
        raise argparse.ArgumentTypeError(f"must be a multiple of 8 (codes pack 8 bits a byte), got {value}")
    return value


def _model_arguments(p: argparse.ArgumentParser, defaults_from: str):
    p.add_argument("--model", default=None,
                   help=f"embedding checkpoint folder or hub id (default: {defaults_from})")
    p.add_argument("--reranker", default=None, help=f"reranker checkpoint folder or hub id (default: {defaults_from})")
    p.add_argument("--no-reranker", action="store_true", help="rank by the float-rescored embedding score only")
    add_engine_flags(p)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Adds `index build` and `index search` to the main parser's subparsers."""
    index = subparsers.add_parser("index", help="build and search a binary-quantized index with reranking",
                                  description="Build and search a binary-quantized index with reranking.")
    sub = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")

    b = sub.add_parser("build", help="embed, quantize and index documents into a folder",
                       description="Embed, quantize and index the documents of a file into a folder.")
    add_documents(b)
    b.add_argument("--out", required=True, metavar="FOLDER", help="folder to write the index to (created if needed)")
    b.add_argument("--dimensions", type=_bits, default=None,
                   help="embedding size (a learned projection the checkpoint ships; default: full size)")
    _model_arguments(b, "the built-in demo model")
    b.set_defaults(func=_build)

    s = sub.add_parser("search", help="search a folder written by `index build`",
                       description="Search a folder written by `zkernels index build`, best first.")
    s.add_argument("dir", metavar="FOLDER", help="folder written by `zkernels index build`")
    add_query(s)
    add_ranked_output(s, top_k_default=10)
    s.add_argument("--candidates", type=positive_int, default=None, metavar="N",
                   help=f"Hamming candidates to rescore (default: {DEFAULT_CANDIDATES}, or --top-k if larger)")
    s.add_argument("--rerank", type=positive_int, default=None, metavar="N",
                   help="float-rescored survivors to rerank (default: min(candidates, 4 x top-k))")
    _model_arguments(s, "the models recorded at build time")
    s.set_defaults(func=_search)
    return index


"""Command line for the retrieve-then-rerank pipeline: `zkernels index build` / `zkernels index search`.

`add_index_subcommands(subparsers)` adds the `index` command to the main parser (zkernels/cli.py).
Without --model / --reranker, the demo
models are used: a tiny embedding checkpoint and a tiny reranker with RANDOM weights, built once under
the zkernels cache folder. They show the machinery runs; their rankings mean nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .documents import print_ranked, read_documents

CHUNK = 2048  # documents per add_documents call: bounds memory and drives the progress bar
DEMO_EMBEDDER, DEMO_RERANKER = "demo-embedder", "demo-reranker"


def _demo_folder(name: str) -> Path:
    """Builds (once) and returns a demo checkpoint folder under the zkernels cache."""
    from .paths import cache_dir
    from .qwen_vocab import build_qwen_tokenizer
    from .random_checkpoints import make_tiny_embedding_checkpoint

    if name == DEMO_RERANKER:  # the same cached checkpoint `zkernels demo` uses
        from .demo import demo_checkpoint
        return demo_checkpoint()
    folder = cache_dir() / name
    if not (folder / "config.json").is_file():
        print(f"building the demo {name.split('-')[1]} (random weights: results mean nothing) in {folder}",
              file=sys.stderr)
        make_tiny_embedding_checkpoint(folder, tokenizer=build_qwen_tokenizer())
    return folder


def _resolve_model(value: str | None, demo: str) -> str:
    if value in (None, "demo"):
        print(f"using the built-in {demo} (random weights, for trying the machinery: results mean nothing)",
              file=sys.stderr)
        return str(_demo_folder(demo))
    return value


def _load_models(args, meta: dict | None = None):
    from .embedder import Embedder
    from .reranker import Reranker

    meta = meta or {}
    model = _resolve_model(args.model or meta.get("model"), DEMO_EMBEDDER)
    embedder = Embedder.from_pretrained(model, device=args.device, dtype=args.dtype)
    reranker_path = None
    if not args.no_reranker:
        reranker_path = _resolve_model(args.reranker or meta.get("reranker"), DEMO_RERANKER)
    reranker = Reranker.from_pretrained(reranker_path, device=args.device, dtype=args.dtype) if reranker_path else None
    return model, embedder, reranker_path, reranker


def _build(args) -> int:
    from .pipeline import Pipeline

    docs = read_documents(args.documents)
    if not docs:
        raise ValueError(f"{args.documents} holds no documents")
    model, embedder, reranker_path, reranker = _load_models(args)
    pipe = Pipeline(embedder, reranker=reranker, dimensions=args.dimensions,
                    metadata={"model": model, "reranker": reranker_path})
    from tqdm.auto import tqdm
    # --progress forces the bar, --no-progress hides it, default: tqdm shows it on a terminal only.
    disable = {None: None, True: False, False: True}[args.progress]
    with tqdm(total=len(docs), desc="Indexing", unit="doc", disable=disable) as bar:
        for start in range(0, len(docs), CHUNK):
            chunk = docs[start:start + CHUNK]
            pipe.add_documents(chunk, show_progress_bar=False)
            bar.update(len(chunk))
    pipe.save(args.out)
    print(f"indexed {len(pipe)} documents ({pipe.dimensions}-bit codes) into {args.out}", file=sys.stderr)
    return 0


def _search(args) -> int:
    from .pipeline import Pipeline

    meta = Pipeline.read_metadata(args.dir)
    _, embedder, _, reranker = _load_models(args, meta)
    pipe = Pipeline.load(args.dir, embedder, reranker)
    results = pipe.search(args.query, k=args.k, candidates=args.candidates, rerank=args.rerank,
                          show_progress_bar=args.progress)
    print_ranked(results, args.json)
    return 0


def _model_arguments(p: argparse.ArgumentParser, defaults_from: str):
    p.add_argument("--model", default=None,
                   help=f"embedding checkpoint folder or hub id (default: {defaults_from})")
    p.add_argument("--reranker", default=None, help=f"reranker checkpoint folder or hub id (default: {defaults_from})")
    p.add_argument("--no-reranker", action="store_true", help="rank by the float-rescored embedding score only")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: on a terminal)")


def add_index_subcommands(subparsers) -> argparse.ArgumentParser:
    """Adds `index build` and `index search` to the main parser's subparsers."""
    index = subparsers.add_parser("index", help="build and search a binary-quantized index with reranking")
    sub = index.add_subparsers(dest="index_command", required=True)

    b = sub.add_parser("build", help="embed, quantize and index documents into a folder")
    b.add_argument("--documents", required=True,
                   help="text file, one document per line (blank lines skipped), or .jsonl ({\"text\": ...})")
    b.add_argument("--out", required=True, help="folder to write the index to")
    b.add_argument("--dimensions", type=int, default=None,
                   help="embedding size (a learned projection the checkpoint ships; default: full size)")
    _model_arguments(b, "the built-in demo model")
    b.set_defaults(func=_build)

    s = sub.add_parser("search", help="search a folder written by `index build`")
    s.add_argument("dir", help="folder written by `zkernels index build`")
    s.add_argument("--query", required=True)
    s.add_argument("--k", type=int, default=10, help="results to return")
    s.add_argument("--candidates", type=int, default=100, help="Hamming candidates to rescore")
    s.add_argument("--rerank", type=int, default=None, help="float-rescored survivors to rerank (default: min(candidates, 4k))")
    s.add_argument("--json", action="store_true", help="one JSON object per result")
    _model_arguments(s, "the models recorded at build time")
    s.set_defaults(func=_search)
    return index

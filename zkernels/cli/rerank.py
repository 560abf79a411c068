"""`zkernels rerank`: the documents of a file ranked for one query by a zerank / Qwen3-Reranker checkpoint."""
from __future__ import annotations

import argparse

from .checkpoints import RERANKER, check_checkpoint
from .documents import print_ranked, read_numbered_documents
from .messages import note
from .options import (
    add_documents,
    add_engine_flags,
    add_format,
    add_query,
    add_ranked_output,
    engine_options,
    positive_int,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("rerank", help="rank documents for a query with a zerank / Qwen3-Reranker checkpoint",
                              description="Rank the documents of a file for one query, best first.")
    p.add_argument("--model", required=True, help="reranker checkpoint folder or Hugging Face hub id")
    add_query(p)
    add_documents(p)
    add_format(p)
    add_ranked_output(p, top_k_default=None)
    p.add_argument("--max-length", type=positive_int, default=None, metavar="TOKENS",
                   help="most tokens per prompt (default: the checkpoint's position limit)")
    p.add_argument("--no-truncate", dest="truncate", action="store_false",
                   help="fail on a prompt longer than --max-length instead of cutting the end of its document")
    add_engine_flags(p)
    p.set_defaults(func=run)
    return p


def note_query_clipping(reranker, query: str) -> None:
    """The zerank recipe reads only the start of a long query, silently in the reference; say it once."""
    clip = getattr(reranker.format, "clip", None)
    if clip is None:
        return
    from ..formats import ZERANK_QUERY_CHARS

    if clip(query, "")[0] != query.strip():
        note(f"the {reranker.format.name} recipe reads only the first {ZERANK_QUERY_CHARS:,} characters of the "
             f"query ({len(query):,} given); the rest is ignored, as in the reference")


def with_lines(rows: list[dict], lines: list[int]) -> list[dict]:
    """Ranked rows with the documents-file line number of each after its corpus id."""
    return [{"corpus_id": r["corpus_id"], "line": lines[r["corpus_id"]], **r} for r in rows]


def run(args) -> int:
    from ..reranker import Reranker

    numbered = read_numbered_documents(args.documents)  # every argument checked before the model loads
    check_checkpoint(args.model, "--model", RERANKER)
    reranker = Reranker.from_pretrained(args.model, format=args.format, max_length=args.max_length,
                                        options=engine_options(args))
    note_query_clipping(reranker, args.query)
    ranked = reranker.rank(args.query, [text for _, text in numbered], top_k=args.top_k, return_documents=True,
                           show_progress_bar=args.progress, truncate=args.truncate)
    print_ranked(with_lines(ranked, [n for n, _ in numbered]), args.json)
    return 0

"""`zkernels check-quantized`: the same lists scored by the full-precision model and by a quantized one,
with how far their rankings agree, so a quantized model is deployed on measured agreement, not faith."""
from __future__ import annotations

import argparse
import json

from .checkpoints import EMBEDDER, RERANKER, check_checkpoint
from .documents import read_documents
from .messages import UsageError
from .options import add_device, add_format, add_progress, engine_options, positive_int

KINDS = ("reranker", "embedder")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "check-quantized", help="compare a quantized model's rankings with the full-precision model's",
        description="Score every query's list of documents with the model in full precision and quantized, "
                    "and print per list Spearman's rank correlation, whether the top document agrees, the "
                    "top-k overlap and the score differences, then a summary.")
    p.add_argument("--model", required=True, help="checkpoint folder or Hugging Face hub id")
    p.add_argument("--kind", choices=KINDS, default="reranker",
                   help="reranker (scores of each query's documents) or embedder (cosine similarities)")
    p.add_argument("--queries", required=True, metavar="FILE", help="queries, one per line (or .jsonl)")
    p.add_argument("--documents", required=True, metavar="FILE",
                   help="documents, one per line (or .jsonl): every query's list is all of them")
    add_device(p)  # --dtype: the reference's, and the quantized model's outside its linears; --quantize: int8
    add_format(p)
    p.add_argument("--top-k", type=positive_int, default=10, metavar="K", help="k of the top-k overlap (default: 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object per list, then the summary")
    add_progress(p)
    p.set_defaults(func=run)
    return p


def _load(args, quantize: str):
    options = engine_options(args).replace(quantize=quantize)
    if args.kind == "embedder":
        from ..embedder import Embedder
        return Embedder.from_pretrained(args.model, options=options)
    from ..reranker import Reranker
    return Reranker.from_pretrained(args.model, format=args.format, options=options)


def _score_lists(model, kind: str, queries: list[str], documents: list[str], progress) -> list[list[float]]:
    if kind == "embedder":
        q = model.encode_query(queries, convert_to_tensor=True)
        d = model.encode_document(documents, convert_to_tensor=True)
        return (q.float() @ d.float().T).cpu().tolist()
    return [model.predict([(query, doc) for doc in documents], show_progress_bar=progress).tolist()
            for query in queries]


def run(args) -> int:
    from ..agreement import summarize

    if args.kind == "embedder" and args.format is not None:
        raise UsageError("--format applies to rerankers only")
    if args.quantize == "none":
        raise UsageError("--quantize none leaves nothing to compare; choose int8 (cpu) or fp8 (cuda)")
    args.quantize = args.quantize or ("fp8" if args.device.startswith("cuda") else "int8")
    queries, documents = read_documents(args.queries), read_documents(args.documents)
    engine_options(args)  # a mode this device cannot run is an error before anything loads
    check_checkpoint(args.model, "--model", RERANKER if args.kind == "reranker" else EMBEDDER)
    reference = _load(args, "none")
    ref_scores = _score_lists(reference, args.kind, queries, documents, args.progress)
    ref_bytes = reference.weight_bytes
    del reference
    quantized = _load(args, args.quantize)
    q_scores = _score_lists(quantized, args.kind, queries, documents, args.progress)
    summary = summarize(ref_scores, q_scores, args.top_k)
    summary.update(reference_weight_bytes=ref_bytes, quantized_weight_bytes=quantized.weight_bytes)
    lists = summary.pop("lists")
    if args.json:
        for query, a in zip(queries, lists):
            print(json.dumps({"query": query, **a.__dict__}, ensure_ascii=False))
        print(json.dumps({"summary": summary}))
        return 0
    topk = f"top{args.top_k}"
    print(f"{'list':>5}  {'docs':>5}  {'spearman':>8}  {'top1':>4}  {topk:>6}  {'max|diff|':>10}  query")
    for i, (query, a) in enumerate(zip(queries, lists), 1):
        print(f"{i:5d}  {a.n:5d}  {a.spearman:8.4f}  {'same' if a.top1_same else 'DIFF':>4}  "
              f"{a.topk_overlap:6.2f}  {a.max_abs_diff:10.3g}  {query[:60]}")
    print(f"summary over {len(lists)} lists ({args.quantize} against {args.dtype or 'the default dtype'}): "
          f"spearman mean {summary['spearman_mean']:.4f} min {summary['spearman_min']:.4f}; "
          f"top-1 agreement {summary['top1_agreement']:.0%}; top-{args.top_k} overlap "
          f"{summary['topk_overlap_mean']:.0%}; |score difference| p50 {summary['diff_p50']:.3g} "
          f"p99 {summary['diff_p99']:.3g} max {summary['diff_max']:.3g}")
    print(f"weight bytes: {ref_bytes:,} full precision, {summary['quantized_weight_bytes']:,} {args.quantize} "
          f"({summary['quantized_weight_bytes'] / ref_bytes:.0%})")
    return 0

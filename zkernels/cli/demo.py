"""`zkernels demo`: the main job on a built-in default that works offline.

It builds (once, then caches) the demo reranker, a tiny zerank-format Qwen3 checkpoint trained offline with
Qwen's real tokenizer (zkernels.demo_models), ranks a bundled query's documents with zkernels, and checks
the scores against the reference recipe run through transformers' own Qwen3ForCausalLM on the same
checkpoint.
"""
from __future__ import annotations

import argparse
import time

import torch

from ..demo_models import demo_checkpoint, quiet_transformers
from .options import add_backend, add_progress, add_top_k

# Distractors share a word with the query: word overlap alone ranks them high. The last two documents are
# there for the tokenization (leading whitespace, a newline, nothing at all), not for their meaning.
QUERY = "how do I make pancakes?"
DOCUMENTS = [
    "Make sure the tyres are pumped up before a long drive.",
    "Whisk flour, milk and eggs into a smooth batter, then fry spoonfuls in a hot buttered pan.",
    "The Eiffel Tower is 330 metres tall and was completed in 1889.",
    "Pancake Day falls on the Tuesday before Lent.",
    "Sourdough bread needs a starter, flour, water and salt.",
    "How do I reset my password? Use the link on the sign-in page.",
    "  Leading whitespace and\nnewlines are part of some documents, and tokenization must handle them.",
    "",
]


def run_demo(device: str = "cpu", backend: str | None = None, top_k: int | None = None,
             show_progress_bar: bool | None = None) -> int:
    from ..reference import load_reference_model, zerank_reference
    from ..reranker import Reranker

    folder = demo_checkpoint()
    print("NOTE: the demo model is a tiny Qwen3 reranker (4 layers, 128 wide, Qwen's real tokenizer) distilled\n"
          "      offline from a small sentence-transformers model to match words and phrases: its ranking makes\n"
          "      sense on plain English, but it is no substitute for zerank. The demo shows the pipeline end to\n"
          "      end and checks that zkernels equals the reference.\n")
    reranker = Reranker.from_pretrained(folder, device=device, dtype=torch.float32, backend=backend,
                                        show_progress_bar=show_progress_bar)
    print(f"model: {folder}  format: {reranker.format.name}  device: {reranker.device}  "
          f"backend: {reranker.engine.backend}  dtype: float32")
    print(f"query: {QUERY}\n")
    start = time.perf_counter()
    ranked = reranker.rank(QUERY, DOCUMENTS, top_k=top_k, return_documents=True, show_progress_bar=show_progress_bar)
    elapsed = time.perf_counter() - start
    for i, row in enumerate(ranked, 1):
        text = row["text"].replace("\n", "\\n")
        print(f"{i:2d}. {row['score']:.6f}  [{row['corpus_id']}] {text[:90]}")
    print(f"\nscored {len(DOCUMENTS)} documents in {elapsed * 1000:.1f} ms "
          f"(tiny model on {device}: not a speed figure)")

    ours = torch.tensor(reranker.predict([(QUERY, d) for d in DOCUMENTS]), dtype=torch.float64)
    with quiet_transformers():
        reference_model = load_reference_model(folder)
    ref = zerank_reference(reference_model, reranker.tokenizer, [(QUERY, d) for d in DOCUMENTS]).double()
    rel = ((ours - ref).abs() / ref.abs()).max().item()
    ok = rel <= 1e-5
    print(f"parity with transformers' Qwen3ForCausalLM (reference zerank recipe): max relative difference "
          f"{rel:.2e} -> {'OK' if ok else 'FAILED'} (tolerance 1e-5)")
    return 0 if ok else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="run the built-in offline demo (a tiny trained model) with a parity check",
                              description="Rank a bundled query's documents with the tiny trained demo zerank "
                                          "checkpoint and check the scores against transformers.")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default: cpu)")
    add_backend(p)
    add_top_k(p, default=None, what="ranked documents to print")
    add_progress(p)
    p.set_defaults(func=lambda args: run_demo(device=args.device, backend=args.backend, top_k=args.top_k,
                                              show_progress_bar=args.progress))
    return p

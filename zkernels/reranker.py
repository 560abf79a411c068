"""`Reranker`: a drop-in for sentence-transformers' CrossEncoder on zerank and Qwen3-Reranker checkpoints."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import CheckpointError, Qwen3Config
from .formats import FORMATS, EncodedPrompts, PromptFormat, make_format
from .loading import load_tokenizer, resolve_checkpoint
from .scoring import ScoringEngine, gather_rows, pad_rows


def detect_format(folder: Path, name: str) -> str | None:
    """The format the checkpoint declares, if it declares one.

    zerank checkpoints ship modeling_zeranker.py (the reference scorer) or, in newer revisions, a
    sentence-transformers 1_LogitScore module; Qwen3-Reranker checkpoints are known by name.
    """
    if (folder / "modeling_zeranker.py").is_file() or (folder / "1_LogitScore" / "config.json").is_file():
        return "zerank"
    for text in (name, folder.name, str(folder)):
        low = text.lower()
        if "zerank" in low:
            return "zerank"
        if re.search(r"qwen3[-_]?reranker", low):
            return "qwen3-reranker"
    return None


def _check_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) and not hasattr(pairs, "__iter__"):
        raise TypeError(f"pairs must be a list of (query, document) pairs, got {type(pairs).__name__}")
    out = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"pairs[{i}] must be a (query, document) pair, got {type(pair).__name__}: {pair!r:.80}")
        q, d = pair
        if not isinstance(q, str) or not isinstance(d, str):
            raise TypeError(f"pairs[{i}] must hold two strings, got ({type(q).__name__}, {type(d).__name__})")
        out.append((q, d))
    return out


class Reranker:
    """Scores (query, document) pairs exactly as the checkpoint's reference recipe, on a packed,
    prefix-cached Qwen3 forward."""

    def __init__(self, engine: ScoringEngine, tokenizer, format: str | PromptFormat, max_length: int | None = None,
                 instruction: str | None = None):
        """format: a format name, or a PromptFormat already built for this tokenizer (the loaders build it
        first to learn which LM-head rows to load, and pass it on rather than build it twice)."""
        self.engine, self.tokenizer = engine, tokenizer
        self.format = format if isinstance(format, PromptFormat) else make_format(format, tokenizer, instruction)
        self.max_length = int(max_length or engine.config.max_position_embeddings)
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device="cpu", dtype=None, format: str | None = None,
                        max_length: int | None = None, *, instruction: str | None = None,
                        backend: str | None = None, max_tokens_per_batch: int | None = None,
                        show_progress_bar: bool | None = None) -> "Reranker":
        """Loads a zerank or Qwen3-Reranker checkpoint (local folder or hub id).

        device: "cpu" or "cuda[:n]"; dtype: torch.float32 / bfloat16 / float16 (default: float32 on CPU,
        bfloat16 on CUDA); format: "zerank" or "qwen3-reranker", detected where the checkpoint declares
        it; max_length: prompt tokens (default: the model's max_position_embeddings); backend: "torch" or
        "triton" (default: triton on CUDA, torch on CPU; env ZKERNELS_BACKEND overrides the default).
        """
        if format is not None and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
        folder = resolve_checkpoint(path)
        format = format or detect_format(folder, str(path))
        if format is None:
            raise ValueError(f"cannot tell which scoring recipe {path} uses; pass format='zerank' or "
                             f"format='qwen3-reranker'")
        config = Qwen3Config.from_file(folder / "config.json")  # before anything else reads the folder
        tokenizer = load_tokenizer(folder)
        fmt = make_format(format, tokenizer, instruction)
        score_ids = fmt.score_token_ids
        declared = _declared_true_token(folder)
        if format == "zerank" and declared is not None and declared != score_ids[0]:
            raise CheckpointError(f"{folder}/1_LogitScore/config.json declares true_token_id {declared}, but the "
                                  f"tokenizer's 'Yes' is {score_ids[0]}")
        engine = ScoringEngine(folder, config, score_ids, device, dtype, backend, max_tokens_per_batch, show_progress_bar)
        return cls(engine, tokenizer, fmt, max_length)

    @classmethod
    def from_state_dict(cls, state_dict, config: dict | Qwen3Config, format: str = "zerank", tokenizer=None,
                        device="cpu", dtype=None, *, max_length: int | None = None, instruction: str | None = None,
                        backend: str | None = None, max_tokens_per_batch: int | None = None) -> "Reranker":
        """A Reranker over weights already in memory (e.g. a transformers model's state_dict()), named as
        in a checkpoint. Without a tokenizer only score_token_ids works, with Qwen's score-token ids."""
        if not isinstance(config, Qwen3Config):
            config = Qwen3Config.from_dict(config, source="config")
        fmt = make_format(format, tokenizer, instruction)
        engine = ScoringEngine(state_dict, config, fmt.score_token_ids, device, dtype, backend, max_tokens_per_batch)
        return cls(engine, tokenizer, fmt, max_length)

    @property
    def device(self) -> str:
        return self.engine.device

    def score_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """The score head: final-norm hidden states [R, hidden] (as `ScoringEngine.iter_batches` yields
        them) -> scores [R] float32. Run it per packed batch, on the batch's rows as yielded: the rows are
        padded (`pad_rows`) so each row's score rounds the same whatever else shares its batch."""
        logits = pad_rows(hidden).float() @ self.engine.score_rows.float().T  # [R_pad, m]
        return self.format.scores(logits)[:hidden.shape[0]]                  # [R]

    def encode_pairs(self, pairs, *, truncate: bool = True, instruction: str | None = None) -> EncodedPrompts:
        """Tokenizes (query, document) pairs as the reference recipe does: prompt ids per pair, and one
        prefix group per query. Pure tokenization (no model work): servers run it off the model worker."""
        if self.tokenizer is None:
            raise RuntimeError("this Reranker has no tokenizer (built from a state dict without one): "
                               "score token ids with score_token_ids(), or pass tokenizer=")
        return self.format.encode(_check_pairs(pairs), self.max_length, truncate, instruction)

    def score_token_ids(self, prompts: Sequence[Sequence[int]], groups: Sequence[int] | None = None,
                        batch_size: int | None = None, show_progress_bar: bool | None = None,
                        use_prefix_cache: bool = True) -> torch.Tensor:
        """Scores already-tokenized prompts ([n] float32 on the model's device). Prompts sharing a group
        share their common token prefix; without groups, all prompts form one group."""
        batches = self.engine.iter_batches(prompts, groups, batch_size=batch_size, use_prefix_cache=use_prefix_cache,
                                           show_progress_bar=show_progress_bar)
        return gather_rows(((index, self.score_hidden(hidden)) for index, hidden in batches), len(prompts))

    def predict(self, pairs, batch_size: int | None = None, show_progress_bar: bool | None = None,
                convert_to_numpy: bool = True, *, truncate: bool = True, instruction: str | None = None,
                use_prefix_cache: bool = True):
        """Scores for (query, document) pairs, in input order: float32 numpy array (or a CPU tensor with
        convert_to_numpy=False). A single pair returns a single float. batch_size caps documents per
        forward (default: only the token budget bounds a batch)."""
        single = isinstance(pairs, (list, tuple)) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs)
        pairs = _check_pairs([pairs] if single else pairs)
        if not pairs:
            return np.zeros(0, dtype=np.float32) if convert_to_numpy else torch.zeros(0)
        encoded = self.encode_pairs(pairs, truncate=truncate, instruction=instruction)
        scores = self.score_token_ids(encoded.ids, encoded.groups, batch_size, show_progress_bar,
                                      use_prefix_cache).cpu()
        if single:
            return float(scores[0])
        return scores.numpy().astype(np.float32) if convert_to_numpy else scores

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int | None = None,
             show_progress_bar: bool | None = None, **kwargs) -> list[dict]:
        """Documents ranked by score, best first: [{"corpus_id", "score"[, "text"]}]; ties keep input order."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of strings, got {type(documents).__name__}")
        for i, d in enumerate(documents):
            if not isinstance(d, str):
                raise TypeError(f"documents[{i}] must be a string, got {type(d).__name__}")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if not documents:
            return []
        scores = self.predict([(query, d) for d in documents], batch_size, show_progress_bar, **kwargs)
        order = sorted(range(len(documents)), key=lambda i: -scores[i])
        results = []
        for i in order[:top_k]:
            row = {"corpus_id": i, "score": float(scores[i])}
            if return_documents:
                row["text"] = documents[i]
            results.append(row)
        return results


def _declared_true_token(folder: Path) -> int | None:
    cfg = folder / "1_LogitScore" / "config.json"
    if not cfg.is_file():
        return None
    try:
        value = json.loads(cfg.read_text()).get("true_token_id")
    except (json.JSONDecodeError, AttributeError):
        raise CheckpointError(f"{cfg} is not valid JSON") from None
    return int(value) if value is not None else None

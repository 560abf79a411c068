"""`Reranker`: a drop-in for sentence-transformers' CrossEncoder on zerank and Qwen3-Reranker checkpoints."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .config import CheckpointError, Qwen3Config
from .declared import (
    ST_CONFIG,
    read_declared_activation,
    read_input_spec,
    read_logit_score,
    read_st_config,
    resolve_activation,
)
from .formats import FORMATS, ZERANK_QWEN_YES, EncodedPrompts, PromptFormat, make_format
from .loading import load_tokenizer, resolve_checkpoint
from .options import EngineOptions, merge_options
from .ranking import best_first
from .scoring import OnScoringEngine, ScoringEngine, gather_rows, pad_rows


def detect_format(folder: Path, name: str) -> str | None:
    """The format the checkpoint declares, if it declares one.

    zerank checkpoints ship modeling_zeranker.py (the reference scorer) or, in newer revisions, a
    sentence-transformers 1_LogitScore module reading "Yes" alone; another LogitScore module is a plain
    sentence-transformers CrossEncoder; Qwen3-Reranker checkpoints (and conversions) are known by name.
    """
    if (folder / "modeling_zeranker.py").is_file():
        return "zerank"
    logit_score = read_logit_score(folder)
    if logit_score is not None:
        is_zerank = logit_score.true_token_id == ZERANK_QWEN_YES and logit_score.false_token_id is None
        return "zerank" if is_zerank else "sentence-transformers"
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


class Reranker(OnScoringEngine):
    """Scores (query, document) pairs exactly as the checkpoint's reference recipe, on a packed,
    prefix-cached Qwen3 forward."""

    def __init__(self, engine: ScoringEngine, tokenizer, format: str | PromptFormat, max_length: int | None = None,
                 instruction: str | None = None, *, activation_fn=None, recipe_activation=None):
        """format: a format name, or a PromptFormat already built for this tokenizer (the loaders build it
        first to learn which LM-head rows to load, and pass it on rather than build it twice).
        activation_fn: see `predict` (None: the recipe's own). recipe_activation: what the checkpoint
        declares, applied to the raw score when activation_fn is None (None: the format's own score)."""
        self.engine, self.tokenizer = engine, tokenizer
        self.format = format if isinstance(format, PromptFormat) else make_format(format, tokenizer, instruction)
        self.classifier = engine.config.classifier
        if self.classifier and self.format.name == "sentence-transformers":
            raise CheckpointError("a sequence-classification checkpoint has no LogitScore module: load it with "
                                  "format='zerank' or format='qwen3-reranker'")
        if self.classifier and self.format.name == "qwen3-reranker" and recipe_activation is None:
            recipe_activation = "sigmoid"  # sigmoid(yes - no) is the causal form's softmax
        self.activation_fn = resolve_activation(activation_fn)
        self._recipe_activation = resolve_activation(recipe_activation, "the declared activation_fn")
        positions = engine.config.max_position_embeddings
        default = min(self.format.default_max_length or positions, positions)
        self.max_length = int(max_length or default)
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None, format: str | None = None,
                        max_length: int | None = None, *, instruction: str | None = None,
                        activation_fn=None, clip_chars: bool | None = None,
                        backend: str | None = None, max_tokens_per_batch: int | None = None,
                        show_progress_bar: bool | None = None, options: EngineOptions | None = None,
                        quantize: str | None = None) -> Reranker:
        """Loads a zerank or Qwen3-Reranker checkpoint (local folder or hub id): the causal LM, or a
        Qwen3ForSequenceClassification conversion (score.weight [1, hidden]).

        device: "cpu" or "cuda[:n]" (default cpu); dtype: torch.float32 / bfloat16 / float16 (default:
        float32 on CPU, bfloat16 on CUDA); format: "zerank", "qwen3-reranker" or "sentence-transformers" (what the
        folder's CrossEncoder modules do), detected where the checkpoint declares it; max_length: prompt
        tokens (default: the recipe's, 8,192 for qwen3-reranker, else the model's max_position_embeddings,
        or the tokenizer's limit for sentence-transformers); activation_fn: see `predict`; clip_chars:
        zerank only, clip texts to 2,000 / 10,000 characters (default True, as modeling_zeranker.py;
        False: strip only, as ZeroEntropy's serving code); backend: "cpu", "triton" or "torch" (default:
        triton on CUDA, the C++ cpu ops on CPU when built, else torch; env ZKERNELS_BACKEND overrides the
        default); max_tokens_per_batch: prompt tokens per forward; quantize: "int8" (CPU with AVX512-VNNI,
        AVX-VNNI or AMX-INT8), "fp8" (CUDA sm_89+) or "none" (default: what the checkpoint records, else
        "none"); the score head stays float32 (docs/quantization.md); options: an EngineOptions holding
        device, dtype, backend, max_tokens_per_batch, show_progress and quantize at once (an argument given
        beside it must agree with it, else a ValueError names both; None is "not given").
        """
        options = merge_options(options, device=device, dtype=dtype, backend=backend,
                                max_tokens_per_batch=max_tokens_per_batch, show_progress=show_progress_bar,
                                quantize=quantize)
        if format is not None and format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")
        folder = resolve_checkpoint(path)
        # config.json first: a folder without one is not a checkpoint, whatever else is missing
        config = Qwen3Config.from_file(folder / "config.json")
        format = format or detect_format(folder, str(path))
        if format is None:
            raise ValueError(f"cannot tell which scoring recipe {path} uses; pass format='zerank' or "
                             f"format='qwen3-reranker'")
        tokenizer = load_tokenizer(folder)
        st_args, recipe_activation = None, None
        if format == "sentence-transformers":
            st_args, max_length = _sentence_transformers_recipe(folder, config, tokenizer, max_length)
        if format == "sentence-transformers" or (config.classifier and format == "qwen3-reranker"):
            # a CrossEncoder's, or a classifier conversion's declared activation; the zerank and causal
            # qwen3-reranker recipes fix their own
            recipe_activation = read_declared_activation(folder)
        fmt = make_format(format, tokenizer, instruction, clip_chars=clip_chars, sentence_transformers=st_args)
        score_ids = [] if config.classifier else fmt.score_token_ids
        declared = read_logit_score(folder)
        if format == "zerank" and declared is not None and declared.true_token_id != fmt.score_token_ids[0]:
            raise CheckpointError(f"{folder}/1_LogitScore/config.json declares true_token_id "
                                  f"{declared.true_token_id}, but the tokenizer's 'Yes' is {fmt.score_token_ids[0]}")
        engine = ScoringEngine(folder, config, score_ids, options=options)
        return cls(engine, tokenizer, fmt, max_length, activation_fn=activation_fn,
                   recipe_activation=recipe_activation)

    @classmethod
    def from_state_dict(cls, state_dict, config: dict | Qwen3Config, format: str = "zerank", tokenizer=None,
                        device=None, dtype=None, *, max_length: int | None = None, instruction: str | None = None,
                        backend: str | None = None, max_tokens_per_batch: int | None = None,
                        activation_fn=None, options: EngineOptions | None = None,
                        quantize: str | None = None) -> Reranker:
        """A Reranker over weights already in memory (e.g. a transformers model's state_dict()), named as
        in a checkpoint. Without a tokenizer only score_token_ids works, with Qwen's score-token ids."""
        if not isinstance(config, Qwen3Config):
            config = Qwen3Config.from_dict(config, source="config")
        fmt = make_format(format, tokenizer, instruction)
        score_ids = [] if config.classifier else fmt.score_token_ids
        options = merge_options(options, device=device, dtype=dtype, backend=backend,
                                max_tokens_per_batch=max_tokens_per_batch, quantize=quantize)
        engine = ScoringEngine(state_dict, config, score_ids, options=options)
        return cls(engine, tokenizer, fmt, max_length, activation_fn=activation_fn)

    def score_hidden(self, hidden: torch.Tensor, activation_fn=None) -> torch.Tensor:
        """The score head: final-norm hidden states [R, hidden] (as `ScoringEngine.iter_batches` yields
        them) -> scores [R] float32. Run it per packed batch, on the batch's rows as yielded: the rows are
        padded (`pad_rows`) so each row's score rounds the same whatever else shares its batch.
        activation_fn: as `predict`'s (None: this Reranker's)."""
        logits = pad_rows(hidden).float() @ self.engine.score_rows.float().T  # [R_pad, m]
        fn = resolve_activation(activation_fn) if activation_fn is not None else self.activation_fn
        if fn is None:
            fn = self._recipe_activation
            if fn is None:
                return self.format.scores(logits)[:hidden.shape[0]]          # the recipe's own, exactly
        raw = logits[:, 0] if self.classifier else self.format.raw_scores(logits)  # [R_pad]
        return torch.as_tensor(fn(raw), dtype=torch.float32)[:hidden.shape[0]]

    def encode_pairs(self, pairs, *, truncate: bool = True, instruction: str | None = None) -> EncodedPrompts:
        """Tokenizes (query, document) pairs as the reference recipe does: prompt ids per pair, and one
        prefix group per query. Pure tokenization (no model work): servers run it off the model worker."""
        if self.tokenizer is None:
            raise RuntimeError("this Reranker has no tokenizer (built from a state dict without one): "
                               "score token ids with score_token_ids(), or pass tokenizer=")
        return self.format.encode(_check_pairs(pairs), self.max_length, truncate, instruction)

    def score_token_ids(self, prompts: Sequence[Sequence[int]], groups: Sequence[int] | None = None,
                        batch_size: int | None = None, show_progress_bar: bool | None = None,
                        use_prefix_cache: bool = True, *, activation_fn=None) -> torch.Tensor:
        """Scores already-tokenized prompts ([n] float32 on the model's device). Prompts sharing a group
        share their common token prefix; without groups, all prompts form one group."""
        fn = resolve_activation(activation_fn)
        batches = self.engine.iter_batches(prompts, groups, batch_size=batch_size, use_prefix_cache=use_prefix_cache,
                                           show_progress_bar=show_progress_bar)
        return gather_rows(((index, self.score_hidden(hidden, fn)) for index, hidden in batches), len(prompts))

    def predict(self, pairs=None, batch_size: int | None = None, show_progress_bar: bool | None = None,
                convert_to_numpy: bool = True, *, convert_to_tensor: bool = False, activation_fn=None,
                truncate: bool = True, instruction: str | None = None, use_prefix_cache: bool = True,
                inputs=None, prompt_name: str | None = None, prompt: str | None = None,
                apply_softmax: bool | None = False, device=None, pool=None, chunk_size: int | None = None,
                **deprecated):
        """Scores for (query, document) pairs, in input order, returned as sentence-transformers'
        CrossEncoder.predict returns them: a float32 numpy array; a list of 0-d tensors (on the model's
        device) with convert_to_numpy=False; one tensor on the model's device with convert_to_tensor=True.
        A single pair gives the one element: a numpy.float32, or a 0-d tensor. No pairs give what
        CrossEncoder gives: an empty float64 array, [], or an empty float32 tensor. batch_size caps
        documents per forward (default: only the token budget).

        activation_fn, applied to the raw score (the logit of "Yes" for zerank, logit("yes") -
        logit("no") for qwen3-reranker, a classifier's logit, a LogitScore's logit): None = the recipe's
        own (zerank: sigmoid(x / 5); qwen3-reranker: the yes/no softmax; sentence-transformers: what the
        checkpoint declares), "identity" (raw logits, what zerank-2's CrossEncoder returns), "sigmoid",
        "zerank", a torch path, or any callable on a float32 tensor.
        truncate=False raises on prompts over max_length instead of cutting their content.

        CrossEncoder's other keywords are accepted: `inputs` (the pairs by its name), apply_softmax (a
        no-op, as CrossEncoder's on a one-label model: every recipe gives one score per pair), device
        (the model's own device, or None), chunk_size (used with a pool only, as there), and its
        deprecated `sentences`, `activation_fct` and `num_workers`. What zkernels cannot do is an error
        naming it: a prompt (the recipe builds the prompt; qwen3-reranker takes instruction=), another
        device, a multi-process pool.
        """
        pairs, activation_fn = _cross_encoder_aliases("predict", pairs, inputs, activation_fn, deprecated)
        self._check_cross_encoder_only(prompt_name, prompt, device, pool)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        single = isinstance(pairs, (list, tuple)) and len(pairs) == 2 and all(isinstance(x, str) for x in pairs)
        pairs = _check_pairs([pairs] if single else pairs)
        fn = resolve_activation(activation_fn)
        if not pairs:
            if convert_to_tensor:
                return torch.zeros(0, device=self.device)
            return np.array([]) if convert_to_numpy else []
        encoded = self.encode_pairs(pairs, truncate=truncate, instruction=instruction)
        scores = self.score_token_ids(encoded.ids, encoded.groups, batch_size, show_progress_bar,
                                      use_prefix_cache, activation_fn=fn)
        if convert_to_tensor:
            out = scores
        elif convert_to_numpy:
            out = scores.float().cpu().numpy()
        else:
            out = list(scores)
        return out[0] if single else out

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int | None = None,
             show_progress_bar: bool | None = None, *, activation_fn=None, truncate: bool = True,
             instruction: str | None = None, use_prefix_cache: bool = True, prompt_name: str | None = None,
             prompt: str | None = None, device=None, pool=None, chunk_size: int | None = None,
             **deprecated) -> list[dict]:
        """Documents ranked by score, best first, as CrossEncoder.rank returns them: [{"corpus_id": int,
        "score": float[, "text": str]}], ties in input order, the first top_k (None: all; 0: none). The
        keywords are predict's; CrossEncoder's deprecated apply_softmax, convert_to_numpy and
        convert_to_tensor are accepted and do nothing there, as here."""
        _, activation_fn = _cross_encoder_aliases("rank", None, None, activation_fn, deprecated)
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        if isinstance(documents, str) or not isinstance(documents, Sequence):
            raise TypeError(f"documents must be a list of strings, got {type(documents).__name__}")
        for i, d in enumerate(documents):
            if not isinstance(d, str):
                raise TypeError(f"documents[{i}] must be a string, got {type(d).__name__}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise ValueError(f"top_k must be a non-negative int or None, got {top_k!r}")
        self._check_cross_encoder_only(prompt_name, prompt, device, pool)
        if not documents or top_k == 0:
            return []
        scores = self.predict([(query, d) for d in documents], batch_size, show_progress_bar,
                              activation_fn=activation_fn, truncate=truncate, instruction=instruction,
                              use_prefix_cache=use_prefix_cache)
        results = []
        for i in best_first(scores, top_k):
            row = {"corpus_id": i, "score": float(scores[i])}
            if return_documents:
                row["text"] = documents[i]
            results.append(row)
        return results

    def _check_cross_encoder_only(self, prompt_name, prompt, device, pool) -> None:
        """CrossEncoder keywords whose only values zkernels can honour are "not asked"."""
        if prompt_name is not None:
            raise ValueError(f"prompt_name {prompt_name!r}: this Reranker has no CrossEncoder prompts (the "
                             f"{self.format.name} recipe builds each prompt itself)")
        if prompt:
            raise ValueError(f"prompt={prompt!r}: the {self.format.name} recipe builds each prompt itself; a "
                             f"qwen3-reranker's task text is instruction=")
        if pool is not None:
            raise ValueError("pool: zkernels scores on one device in one process; a multi-process pool is not "
                             "supported (run one Reranker per device)")
        if device is not None:
            if isinstance(device, (list, tuple)):
                raise ValueError(f"device={device!r}: a list of devices means a multi-process pool, which is not "
                                 f"supported (run one Reranker per device)")
            try:
                asked = torch.device(device)
            except (RuntimeError, TypeError) as e:
                raise ValueError(f"device {device!r} is not a torch device: {e}") from None
            here = torch.device(self.device)
            if asked.type != here.type or (asked.index is not None and asked.index != (here.index or 0)):
                raise ValueError(f"device={device!r}: this Reranker's weights are on {self.device}; load it "
                                 f"with device={device!r} instead")


# CrossEncoder's deprecated keywords: the ones it still accepts and ignores, and its old names.
_IGNORED = {"predict": ("num_workers",),
            "rank": ("num_workers", "apply_softmax", "convert_to_numpy", "convert_to_tensor")}


def _cross_encoder_aliases(method: str, pairs, inputs, activation_fn, deprecated: dict):
    """The pairs and activation_fn after CrossEncoder's other names for them (inputs=, sentences=,
    activation_fct=); its ignored keywords are dropped; any other keyword is a TypeError."""
    deprecated = dict(deprecated)
    for name in _IGNORED[method]:
        deprecated.pop(name, None)
    if method == "predict":
        named = (("pairs", pairs), ("inputs", inputs), ("sentences", deprecated.pop("sentences", None)))
        given = [(n, v) for n, v in named if v is not None]
        if len(given) > 1:
            raise TypeError(f"predict got the pairs twice: {' and '.join(n for n, _ in given)}")
        if not given:
            raise TypeError("predict needs the pairs: predict(pairs) or predict(inputs=pairs)")
        pairs = given[0][1]
    if "activation_fct" in deprecated:
        if activation_fn is not None:
            raise TypeError(f"{method} got both activation_fn and activation_fct (its old name)")
        activation_fn = deprecated.pop("activation_fct")
    if deprecated:
        raise TypeError(f"{method}() got unexpected keyword arguments: {', '.join(sorted(deprecated))}")
    return pairs, activation_fn


def _sentence_transformers_recipe(folder: Path, config: Qwen3Config, tokenizer, max_length: int | None):
    """The CrossEncoder's declarations for the sentence-transformers format: its LogitScore ids, the
    chat-template kwargs, and its token limit (the tokenizer's, as sentence-transformers reads it)."""
    logit_score = read_logit_score(folder)
    if logit_score is None:
        raise CheckpointError(f"{folder} has no 1_LogitScore/config.json: the sentence-transformers format "
                              f"needs a CrossEncoder saved over a causal LM")
    spec = read_input_spec(folder)
    if not spec.uses_messages:
        raise CheckpointError(f"{folder}/sentence_bert_config.json declares no 'message' modality: zkernels "
                              f"renders CrossEncoder pairs through the chat template only")
    if spec.message_format == "structured":
        raise CheckpointError(f"{folder}/sentence_bert_config.json: the 'structured' message format is not "
                              f"supported for a text-only tokenizer")
    default_prompt = read_st_config(folder).get("default_prompt_name")
    if default_prompt:
        raise CheckpointError(f"{folder / ST_CONFIG}: default_prompt_name {default_prompt!r} is set; "
                              f"zkernels' Reranker applies no CrossEncoder prompt")
    if max_length is None:
        max_length = min(int(tokenizer.model_max_length), config.max_position_embeddings)
    args = {"true_token_id": logit_score.true_token_id, "false_token_id": logit_score.false_token_id,
            "template_kwargs": spec.template_kwargs}
    return args, max_length

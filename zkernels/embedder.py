"""`Embedder`: sentence-transformers' `encode_query` / `encode_document` for Qwen3 embedding checkpoints
(zembed-1, Qwen3-Embedding), on the same packed, prefix-cached forward as the reranker (`ScoringEngine`).

What a text becomes, as sentence-transformers 6.2 does it for a last-token-pooling Qwen3 checkpoint:
prompt + text as one string, tokenized with the checkpoint's tokenizer (add_special_tokens=True, so a
tokenizer whose post-processor appends EOS, as Qwen3-Embedding's does, appends it here too), right-
truncated at max_seq_length; the final-norm hidden state at the last token is the embedding, then L2-
normalised when modules.json has a Normalize module. A suffix (zembed-1: "<|im_end|>\\n", declared
in its config_sentence_transformers.json) is appended as token ids after truncation, so truncation never
cuts it off and the pooled token is always the suffix's last token (ZeroEntropy's serving code keeps room
for it the same way).

A checkpoint whose sentence_bert_config.json declares the "message" modality (sentence-transformers 6.x)
is followed as sentence-transformers does it: every text becomes a "user" message (the prompt a
"system" message before it), rendered with the tokenizer's chat template and the chat-template kwargs
the file declares, tokenized without special tokens, right-truncated at max_seq_length with the
template's tail written back over the last tokens.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .binary import quantize
from .binary.quantize import BINARY_PRECISIONS, PRECISIONS, quantize_embeddings
from .config import CheckpointError, Qwen3Config
from .declared import EmbeddingRecipe, InputSpec, read_embedding_recipe
from .formats import ChatTemplateSlots, PromptTooLong, fit_to_length
from .loading import load_tokenizer, resolve_checkpoint
from .options import EngineOptions, merge_options
from .projections import Projections, load_projections
from .scoring import OnScoringEngine, ScoringEngine, gather_rows, pad_rows


def _message_format(inputs: InputSpec, tokenizer) -> str:
    """"flat" or "structured" message content, as sentence-transformers infers it for a text tokenizer:
    structured when its chat template indexes content parts."""
    if inputs.message_format != "auto":
        return inputs.message_format
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        return "structured"
    patterns = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")
    return "structured" if any(p in template for p in patterns) else "flat"


def _as_matrix(x, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif isinstance(x, (list, tuple)):
        is_rows = x and not isinstance(x[0], (int, float))
        x = torch.stack([torch.as_tensor(v) for v in x]) if is_rows else torch.as_tensor(x)
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype in (torch.int8, torch.uint8)):
        raise TypeError(f"{what} must be float embeddings (numpy array, tensor or list of vectors)")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what} must be one vector or a [n, d] matrix with n >= 1, got shape {list(x.shape)}")
    return x.float().cpu()


def _check_texts(texts, what: str = "texts") -> list[str]:
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Sequence) and not hasattr(texts, "__iter__"):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{what} is empty: nothing to embed")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(t).__name__}")
    return texts


class Embedder(OnScoringEngine):
    """Embeds texts exactly as sentence-transformers does for the checkpoint, on a packed, prefix-cached
    Qwen3 forward."""

    def __init__(self, engine: ScoringEngine, tokenizer, recipe: EmbeddingRecipe, projections: Projections):
        self.engine, self.tokenizer, self.recipe = engine, tokenizer, recipe
        self.folder: Path | None = None  # the checkpoint folder, when loaded with from_pretrained
        self.projections = projections.to(engine.device)
        self.prompts = recipe.prompts
        self.default_prompt_name = recipe.default_prompt_name
        self.suffix = recipe.suffix or ""
        self._message_slots: dict[str | None, ChatTemplateSlots] = {}  # per prompt, "message" modality only
        if recipe.inputs.uses_messages and not getattr(tokenizer, "chat_template", None):
            raise CheckpointError("sentence_bert_config.json declares the 'message' modality, but the tokenizer has "
                                  "no chat template to render messages with")
        self._suffix_ids = tokenizer(self.suffix, add_special_tokens=False).input_ids if self.suffix else []
        self.max_seq_length = recipe.max_seq_length or min(tokenizer.model_max_length,
                                                           engine.config.max_position_embeddings)
        if self.max_seq_length <= len(self._suffix_ids):
            raise ValueError(f"max_seq_length {self.max_seq_length} leaves no room for text before the suffix")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None, *, suffix: str | None = None,
                        max_seq_length: int | None = None, backend: str | None = None,
                        max_tokens_per_batch: int | None = None, show_progress_bar: bool | None = None,
                        options: EngineOptions | None = None, quantize: str | None = None) -> Embedder:
        """Loads a sentence-transformers-style Qwen3 embedding checkpoint (local folder or hub id).

        device / dtype / backend / max_tokens_per_batch / options / quantize as for `Reranker.from_pretrained`.
        suffix: text appended to every input after truncation (default: what the checkpoint declares: a "suffix" key
        in config_sentence_transformers.json, or "<|im_end|>\\n" for zembed-1; else none). max_seq_length:
        tokens per text, suffix included (default: sentence_bert_config.json's).
        """
        options = merge_options(options, device=device, dtype=dtype, backend=backend,
                                max_tokens_per_batch=max_tokens_per_batch, show_progress=show_progress_bar,
                                quantize=quantize)
        folder = resolve_checkpoint(path)
        config = Qwen3Config.from_file(folder / "config.json")
        recipe = read_embedding_recipe(folder, str(path))
        if suffix is not None:
            if recipe.inputs.uses_messages and suffix:
                raise ValueError(f"{folder}/sentence_bert_config.json declares the 'message' modality: texts are "
                                 f"rendered by the chat template, with its own tail; a suffix cannot be added")
            recipe.suffix = suffix
        if max_seq_length is not None:
            recipe.max_seq_length = int(max_seq_length)
        projections = load_projections(folder, config.hidden_size)
        tokenizer = load_tokenizer(folder)
        engine = ScoringEngine(folder, config, [], options=options)
        embedder = cls(engine, tokenizer, recipe, projections)
        embedder.folder = folder
        return embedder

    @property
    def dimensions(self) -> list[int]:
        """The output dimensions the checkpoint offers (hidden size, then its learned projections)."""
        return self.projections.dimensions

    def tokenize(self, texts: Sequence[str], prompt: str | None = None, *, truncate: bool = True
                 ) -> list[list[int]]:
        """Token ids per text: tokenizer(prompt + text) right-truncated to leave room for the suffix,
        then the suffix ids; or, for a checkpoint declaring the "message" modality, the chat template's
        rendering of the messages, cut before the template's tail. truncate=False raises a ValueError
        naming the text instead of cutting one over max_seq_length.

        Texts are tokenized whole and cut here, never with the tokenizer's own truncation: that setting
        lives in the (shared, Rust-side) tokenizer object, so concurrent calls with and without it could
        cut each other's texts. This way the tokenizer is only read, and threads may share it."""
        if self.recipe.inputs.uses_messages:
            return self._tokenize_messages(texts, prompt or None, truncate)
        prompt = prompt or ""
        limit = self.max_seq_length - len(self._suffix_ids)
        ids = self.tokenizer([prompt + t for t in texts], add_special_tokens=True).input_ids
        n_head, n_tail = self._special_tokens
        out = [self._fit(list(x), n_tail, n_head, limit, truncate, i) + self._suffix_ids for i, x in enumerate(ids)]
        for i, x in enumerate(out):
            if not x:
                raise ValueError(f"text {i} is empty and there is no prompt or suffix: nothing to embed")
        return out

    def _fit(self, ids: list[int], n_tail: int, n_head: int, limit: int, truncate: bool, i: int) -> list[int]:
        """ids cut to `limit` tokens as the tokenizer's right-truncation (or sentence-transformers' for
        messages) cuts them: content from its end, the fixed head and tail kept."""
        if len(ids) > limit and not truncate:
            n = len(ids) + self.max_seq_length - limit
            raise PromptTooLong(f"texts[{i}] is {n} tokens, over max_seq_length={self.max_seq_length}; pass "
                             f"truncate=True to cut its end")
        return fit_to_length(ids, n_tail, n_head, limit, True, f"texts[{i}]")[0]

    @functools.cached_property
    def _special_tokens(self) -> tuple[int, int]:
        """(head, tail): how many special tokens the tokenizer adds before and after a text (Qwen3-Embedding's
        appends <|endoftext|>); its right-truncation keeps them and cuts the text's own tokens."""
        plain = self.tokenizer("x", add_special_tokens=False).input_ids
        full = self.tokenizer("x", add_special_tokens=True).input_ids
        for head in range(len(full) - len(plain) + 1):
            if full[head:head + len(plain)] == plain:
                return head, len(full) - head - len(plain)
        raise CheckpointError("the tokenizer's special tokens do not wrap a text's own tokens; cannot tell how it "
                              "truncates")

    def _tokenize_messages(self, texts: Sequence[str], prompt: str | None, truncate: bool) -> list[list[int]]:
        """As sentence-transformers 6.x for the "message" modality: [system: prompt,] user: text through
        the chat template (apply_chat_template tokenizes without special tokens), right-truncated at
        max_seq_length, and the template's tail restored over the last tokens of a cut text."""
        slots = self._message_slots.get(prompt)
        if slots is None:
            structured = _message_format(self.recipe.inputs, self.tokenizer) == "structured"
            wrap = (lambda t: [{"type": "text", "text": t}]) if structured else (lambda t: t)  # noqa: E731
            system = [] if prompt is None else [{"role": "system", "content": wrap(prompt)}]
            slots = ChatTemplateSlots(self.tokenizer, lambda t: system + [{"role": "user", "content": wrap(t)}],
                                      1, self.recipe.inputs.template_kwargs)
            self._message_slots[prompt] = slots
        ids = self.tokenizer([slots.render(t) for t in texts], add_special_tokens=False).input_ids
        return [self._fit(list(x), len(slots.tail_ids), slots.n_fixed_head, self.max_seq_length, truncate, i)
                for i, x in enumerate(ids)]

    def get_sentence_embedding_dimension(self) -> int:
        """The embeddings' dimension by default (sentence-transformers' name): the hidden size; lower
        ones come with encode(dimensions=...) where the checkpoint ships projections."""
        return self.projections.hidden_size

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's newer name

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        """Cosine similarity matrix [n1, n2] (float32 tensor) of two sets of embeddings (numpy arrays,
        tensors or lists of vectors; a single vector counts as a set of one), as
        SentenceTransformer.similarity with its default similarity_fn_name "cosine"."""
        a, b = _as_matrix(embeddings1, "embeddings1"), _as_matrix(embeddings2, "embeddings2")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embeddings of different dimensions: {a.shape[1]} and {b.shape[1]}")
        a = torch.nn.functional.normalize(a, p=2, dim=1)
        b = torch.nn.functional.normalize(b, p=2, dim=1)
        return a @ b.T

    def resolve_dimensions(self, dimensions: int | None = None) -> int:
        """The output dimension `dimensions` asks for: None is the hidden size (no projection); anything
        else must be one the checkpoint offers (`self.dimensions`), or a ValueError says which are."""
        if dimensions is None:
            return self.projections.hidden_size
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions not in self.dimensions:
            hint = "" if len(self.dimensions) > 1 else (" (it ships no projections.safetensors; truncate_dim= cuts "
                                                        "dimensions instead)")
            raise ValueError(f"dimensions={dimensions!r} is not offered by this checkpoint; choose one of "
                             f"{self.dimensions}{hint}")
        return dimensions

    def resolve_prompt(self, prompt: str | None = None, prompt_name: str | None = None,
                       input_type: str | None = None) -> str | None:
        """The prompt text a call uses, as sentence-transformers picks it: `prompt` as given; else the
        checkpoint's prompt named `prompt_name`; else the one for `input_type` ("query" or "document", see
        `prompt_name_for`); else the checkpoint's default prompt; else none."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(f"prompt_name {prompt_name!r} is not among the checkpoint's prompts "
                                 f"{list(self.prompts)}")
            return self.prompts[prompt_name]
        if input_type is not None:
            name = self.prompt_name_for(input_type)
            if name is not None:
                return self.prompts[name]
        if self.default_prompt_name is not None:
            return self.prompts[self.default_prompt_name]
        return None

    def encode(self, texts, prompt_name: str | None = None, prompt: str | None = None,
               batch_size: int | None = None, show_progress_bar: bool | None = None, precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, normalize_embeddings: bool = False,
               truncate_dim: int | None = None, *, dimensions: int | None = None, use_prefix_cache: bool = True,
               truncate: bool = True):
        """Embeddings of `texts` (a string gives one vector), with sentence-transformers' semantics.

        Order of operations as sentence-transformers: pooled, (projected to `dimensions`,) normalised when
        the checkpoint normalises, truncated to `truncate_dim`, renormalised if normalize_embeddings,
        quantized to `precision`. batch_size caps texts per forward (default: only the token budget).
        The prompt ids every text shares are computed once (use_prefix_cache=False turns that off).
        truncate=False raises a ValueError for a text over max_seq_length instead of cutting it.
        """
        single = isinstance(texts, str)
        texts = _check_texts([texts] if single else texts)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        dim = self.resolve_dimensions(dimensions)
        if truncate_dim is not None and (not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool)
                                         or not 1 <= truncate_dim <= dim):
            raise ValueError(f"truncate_dim must be an int in [1, {dim}] or None, got {truncate_dim!r}")
        prompt = self.resolve_prompt(prompt, prompt_name)
        ids = self.tokenize(texts, prompt, truncate=truncate)
        head = self.embedding_head(dim, truncate_dim, normalize_embeddings)
        batches = self.engine.iter_batches(ids, batch_size=batch_size, use_prefix_cache=use_prefix_cache,
                                           show_progress_bar=show_progress_bar, desc="Embedding")
        emb = gather_rows(((index, head(hidden)) for index, hidden in batches), len(ids))
        if precision in BINARY_PRECISIONS:
            emb = quantize(emb, precision)  # packed on the embeddings' device
        elif precision != "float32":
            emb = torch.from_numpy(quantize_embeddings(emb.cpu().numpy(), precision))
        if convert_to_tensor:
            out = emb
        elif convert_to_numpy:
            out = emb.cpu().numpy()
        else:
            out = list(emb)
        return out[0] if single else out

    def embedding_head(self, dimensions: int | None = None, truncate_dim: int | None = None,
                       normalize_embeddings: bool = False):
        """The post-processing of pooled hidden states, as a function hidden [R, hidden] -> float32
        [R, d]: projected to `dimensions` (learned projections), normalised when the checkpoint
        normalises, cut to `truncate_dim`, renormalised if asked. Run it per packed batch of
        `ScoringEngine.iter_batches`; rows are padded (`pad_rows`) so each rounds the same whatever
        else shares its batch."""
        matrix = self.projections.matrix(self.resolve_dimensions(dimensions))
        normalize = self.recipe.normalize or matrix is not None

        def head(hidden: torch.Tensor) -> torch.Tensor:
            x = pad_rows(hidden).float()                                      # [R_pad, hidden]
            if matrix is not None:
                x = x @ matrix                                                # [R_pad, d]
            if normalize:
                x = torch.nn.functional.normalize(x, p=2, dim=1)
            if truncate_dim is not None:
                x = x[:, :truncate_dim]
            if normalize_embeddings:
                x = torch.nn.functional.normalize(x, p=2, dim=1)
            return x[:hidden.shape[0]].contiguous()                           # [R, d]
        return head

    def prompt_name_for(self, input_type: str) -> str | None:
        """The checkpoint prompt a role uses, as sentence-transformers picks it: "query" for queries;
        "document", else "passage", else "corpus" for documents; None when the checkpoint has none (then
        encode() falls back to default_prompt_name)."""
        names = {"query": ("query",), "document": ("document", "passage", "corpus")}.get(input_type)
        if names is None:
            raise ValueError(f"input_type must be 'query' or 'document', got {input_type!r}")
        return next((n for n in names if n in self.prompts), None)

    def encode_query(self, texts, prompt_name: str | None = None, prompt: str | None = None, **kwargs):
        """encode() with the checkpoint's "query" prompt unless one is given."""
        if prompt_name is None and prompt is None:
            prompt_name = self.prompt_name_for("query")
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(self, texts, prompt_name: str | None = None, prompt: str | None = None, **kwargs):
        """encode() with the checkpoint's "document" (or "passage", "corpus") prompt unless one is given."""
        if prompt_name is None and prompt is None:
            prompt_name = self.prompt_name_for("document")
        return self.encode(texts, prompt_name=prompt_name, prompt=prompt, **kwargs)

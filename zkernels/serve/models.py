"""What each served model does around the shared scheduler: tokenization (by the model's own rules:
`Reranker.encode_pairs`, `Embedder.resolve_prompt` / `resolve_dimensions` / `tokenize(truncate=)`), and
the head that turns hidden rows into outputs, chosen by a head key (the reranker's activation_fn; the
embedder's dimensions and normalisation). Also loads the models `zkernels serve` was asked for, or the
built-in demo models.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from ..formats import PromptTooLong
from ..options import EngineOptions
from .errors import ServeError


@dataclass
class Encoded:
    prompts: list[list[int]]
    groups: list[int]

    @property
    def n_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


class ServedReranker:
    kind = "reranker"

    def __init__(self, reranker, name: str):
        self.model, self.name, self.engine = reranker, name, reranker.engine

    def encode(self, query: str, documents: list[str], truncate: bool = True, field: str = "documents") -> Encoded:
        """Prompt ids of (query, document) pairs, exactly as Reranker.predict builds them. A prompt over
        the model's max_length with truncate=False is a 413."""
        try:
            encoded = self.model.encode_pairs([(query, d) for d in documents], truncate=truncate)
        except PromptTooLong as e:
            raise ServeError(413, f"{e}", field=field) from None
        except ValueError as e:
            raise ServeError(422, f"{e}", field=field) from None
        return Encoded(encoded.ids, encoded.groups)

    def head(self, activation_fn: Hashable):
        """hidden rows -> scores: the recipe's own score (activation_fn None), or the raw score with
        "identity" (TEI's raw_scores), exactly as Reranker.predict(..., activation_fn=) computes them."""
        return lambda hidden: self.model.score_hidden(hidden, activation_fn)

    default_head_key = None

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "format": self.model.format.name,
                "max_length": self.model.max_length}

    def warmup_prompts(self) -> Encoded:
        return self.encode("warm-up query", ["warm-up document"])


class ServedEmbedder:
    kind = "embedder"

    def __init__(self, embedder, name: str):
        self.model, self.name, self.engine = embedder, name, embedder.engine

    def prompt_for(self, input_type: str | None = None, prompt_name: str | None = None) -> str | None:
        """The prompt Embedder.encode_query / encode_document (input_type) or encode(prompt_name=) use."""
        try:
            return self.model.resolve_prompt(prompt_name=prompt_name, input_type=input_type)
        except ValueError as e:
            raise ServeError(422, str(e), field="prompt_name") from None

    def check_dimensions(self, dimensions: int | None) -> int:
        try:
            return self.model.resolve_dimensions(dimensions)
        except ValueError as e:
            raise ServeError(422, str(e), field="dimensions") from None

    def encode(self, texts: list[str], prompt: str | None, truncate: bool = True, field: str = "input") -> Encoded:
        try:
            ids = self.model.tokenize(texts, prompt, truncate=truncate)
        except PromptTooLong as e:
            raise ServeError(413, f"{e}; send truncate=true to cut it", field=field) from None
        except ValueError as e:
            raise ServeError(422, str(e), field=field) from None
        return Encoded(ids, [0] * len(ids))

    def head_key(self, dimensions: int, normalize: bool) -> tuple[int, bool]:
        """TEI's normalize=true asks for unit vectors: renormalised only where the checkpoint's own output
        is not normalised already (renormalising would change bits, not the direction)."""
        return dimensions, bool(normalize and not self.model.recipe.normalize)

    @property
    def default_head_key(self) -> tuple[int, bool]:
        return self.head_key(self.model.resolve_dimensions(None), False)

    def head(self, key: Hashable):
        dimensions, normalize = key
        return self.model.embedding_head(dimensions=dimensions, normalize_embeddings=normalize)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "dimensions": self.model.dimensions,
                "prompts": sorted(self.model.prompts), "max_seq_length": self.model.max_seq_length}

    def warmup_prompts(self) -> Encoded:
        return self.encode(["warm-up text"], self.prompt_for("document"))


def load_served_models(reranker: str | None, embedder: str | None, options: EngineOptions = EngineOptions()):
    """(ServedReranker | None, ServedEmbedder | None, demo: bool). No paths at all: the demo models."""
    from ..demo_models import demo_checkpoint, demo_embedder_checkpoint
    from ..embedder import Embedder
    from ..reranker import Reranker

    demo = reranker is None and embedder is None
    if demo:
        reranker, embedder = str(demo_checkpoint()), str(demo_embedder_checkpoint())
    served_r = served_e = None
    if reranker is not None:
        name = "demo-reranker" if demo else Path(reranker).name
        served_r = ServedReranker(Reranker.from_pretrained(reranker, options=options), name)
    if embedder is not None:
        name = "demo-embedder" if demo else Path(embedder).name
        served_e = ServedEmbedder(Embedder.from_pretrained(embedder, options=options), name)
    return served_r, served_e, demo

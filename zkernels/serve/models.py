"""What each served model does around the shared scheduler: tokenization (by the model's own rules:
`Reranker.encode_pairs`, `Embedder.resolve_prompt` / `resolve_dimensions` / `tokenize(truncate=)`), and
the head that turns hidden rows into outputs, chosen by a head key (the reranker's activation_fn; the
embedder's dimensions and normalisation). Also loads the models `zkernels serve` was asked for, or the
built-in demo models.

Tokenizing is a generator (`tokenize_pieces`): it tokenizes about `piece_chars` characters of text per
`next()` (the scheduler runs other requests' work between two pieces) and returns the `Encoded` prompts;
a request whose prompts pass `max_tokens` in all is refused (413, --max-request-tokens) as soon as that
is known, before any forward. A reranker request's query is tokenized once (`PromptFormat.query_pairs`).
"""
from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..formats import PromptTooLong
from ..model import run_to_end
from ..options import EngineOptions
from .errors import ServeError


@dataclass
class Encoded:
    prompts: list[list[int]]
    groups: list[int]

    @property
    def n_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def _pieces(texts: Sequence[str], piece_chars: int | None) -> Iterator[tuple[int, int]]:
    """(start, end) of consecutive runs of texts of about piece_chars characters (at least one text)."""
    start, chars = 0, 0
    for i, t in enumerate(texts):
        if piece_chars is not None and i > start and chars + len(t) > piece_chars:
            yield start, i
            start, chars = i, 0
        chars += len(t)
    if start < len(texts):
        yield start, len(texts)


def _encode_in_pieces(texts: Sequence[str], piece_chars: int | None, max_tokens: int | None, encode_run):
    """Generator: encode_run(start, end) -> token id lists, over runs of about piece_chars characters of
    texts, yielding between runs; returns every run's ids in order. Passing max_tokens is a 413 as soon as
    the running count shows it."""
    ids, n_tokens = [], 0
    for start, end in _pieces(texts, piece_chars):
        part = encode_run(start, end)
        ids += part
        n_tokens += sum(map(len, part))
        if max_tokens is not None and n_tokens > max_tokens:
            raise _too_many_tokens(n_tokens, max_tokens, exact=end == len(texts))
        if end < len(texts):
            yield
    return ids


def _too_many_tokens(n_tokens: int, max_tokens: int, exact: bool) -> ServeError:
    what = f"{n_tokens}" if exact else f"at least {n_tokens}"
    return ServeError(413, f"the request's prompts are {what} tokens, over the limit of {max_tokens} tokens per "
                           f"request (--max-request-tokens)")


class ServedReranker:
    kind = "reranker"

    def __init__(self, reranker, name: str):
        self.model, self.name, self.engine = reranker, name, reranker.engine

    def encode(self, query: str, documents: list[str], truncate: bool = True, field: str = "documents") -> Encoded:
        """Prompt ids of (query, document) pairs, exactly as Reranker.predict builds them. A prompt over
        the model's max_length with truncate=False is a 413."""
        return run_to_end(self.tokenize_pieces(query, documents, truncate, field))

    def tokenize_pieces(self, query: str, documents: list[str], truncate: bool = True, field: str = "documents",
                        piece_chars: int | None = None, max_tokens: int | None = None):
        """Generator: the query (a piece of its own when long), then about piece_chars characters of
        documents per piece; returns the Encoded prompts (`encode`'s)."""
        try:
            pairs = self.model.format.query_pairs(query, self.model.max_length, truncate)
            if piece_chars is not None and len(query) > piece_chars // 2:  # a long query is a piece of its own
                yield
            if max_tokens is not None and pairs.shortest_prompt * len(documents) > max_tokens:
                raise _too_many_tokens(pairs.shortest_prompt * len(documents), max_tokens, exact=False)
            ids = yield from _encode_in_pieces(documents, piece_chars, max_tokens,
                                               lambda start, end: pairs.encode(documents[start:end]))
            pairs.finish()
        except PromptTooLong as e:
            raise ServeError(413, f"{e}", field=field) from None
        except ValueError as e:
            raise ServeError(422, f"{e}", field=field) from None
        return Encoded(ids, [0] * len(ids))

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
        return run_to_end(self.tokenize_pieces(texts, prompt, truncate, field))

    def tokenize_pieces(self, texts: list[str], prompt: str | None, truncate: bool = True, field: str = "input",
                        piece_chars: int | None = None, max_tokens: int | None = None):
        """Generator: about piece_chars characters of texts per piece; returns the Encoded prompts."""
        def encode_run(start, end):
            return self._tokenize(texts, start, end, prompt, truncate, field)

        ids = yield from _encode_in_pieces(texts, piece_chars, max_tokens, encode_run)
        return Encoded(ids, [0] * len(ids))

    def _tokenize(self, texts, start: int, end: int, prompt, truncate: bool, field: str) -> list[list[int]]:
        try:
            return self.model.tokenize(texts[start:end], prompt, truncate=truncate)
        except (PromptTooLong, ValueError) as e:
            error, message = e, str(e)
            for i in range(start, end) if start > 0 else ():  # name the text by its place in the request
                try:
                    self.model.tokenize([texts[i]], prompt, truncate=truncate)
                except (PromptTooLong, ValueError) as one:
                    error, message = one, str(one).replace("texts[0]", f"texts[{i}]", 1)
                    break
            if isinstance(error, PromptTooLong):
                raise ServeError(413, f"{message}; send truncate=true to cut it", field=field) from None
            raise ServeError(422, message, field=field) from None

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

"""Callable classes for Ray Data's `map_batches`: each actor loads its model once, in `__init__`, and
scores every batch it is handed with the public `Reranker.predict` / `Embedder.encode_*` API.

Nothing here imports ray: the classes take and return plain `dict[str, numpy.ndarray]` batches (Ray
Data's "numpy" batch format), so they also work, and are tested, without a cluster.
"""
from __future__ import annotations

import numpy as np

# int8/uint8 calibrate their ranges on the embeddings of one call, so their codes would depend on how
# Ray cut the dataset into batches; only per-row precisions give the same result as one direct call.
ROW_PRECISIONS = ("float32", "binary", "ubinary")
INPUT_TYPES = ("query", "document")


def string_column(batch: dict, name: str) -> list[str]:
    """The column as a list of str, or a clear error naming the column and the offending cell."""
    if name not in batch:
        raise KeyError(f"column {name!r} is missing; the data has columns {sorted(batch)}")
    values = batch[name]
    out = values.tolist() if isinstance(values, np.ndarray) else list(values)
    for i, v in enumerate(out):
        if v is None or isinstance(v, float) and v != v:  # Arrow nulls arrive as None, or NaN via pandas
            raise TypeError(f"column {name!r} must hold strings, but a row holds a null (missing) value "
                            f"(row {i} of this batch)")
        if not isinstance(v, str):
            raise TypeError(f"column {name!r} must hold strings, but a row holds {type(v).__name__}: {v!r:.80} "
                            f"(row {i} of this batch)")
    return out


def _device(device: str | None) -> str:
    if device is not None:
        return device
    import torch
    # Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it gave this actor, so "cuda" is the actor's own GPU.
    return "cuda" if torch.cuda.is_available() else "cpu"


class RerankPredictor:
    """map_batches callable: adds `score_column` = Reranker.predict(zip(query, document)) to each batch."""

    def __init__(self, model: str, *, query_column: str = "query", document_column: str = "document",
                 score_column: str = "score", device: str | None = None, **load_kwargs):
        """load_kwargs go to `Reranker.from_pretrained` (dtype, format, max_length, instruction, backend,
        max_tokens_per_batch)."""
        from ..reranker import Reranker
        self.query_column, self.document_column, self.score_column = query_column, document_column, score_column
        self.reranker = Reranker.from_pretrained(model, device=_device(device), show_progress_bar=False, **load_kwargs)

    def __call__(self, batch: dict) -> dict:
        queries = string_column(batch, self.query_column)
        documents = string_column(batch, self.document_column)
        scores = self.reranker.predict(list(zip(queries, documents)), show_progress_bar=False)
        return {**batch, self.score_column: np.asarray(scores, dtype=np.float32)}


class EmbedPredictor:
    """map_batches callable: adds `embedding_column` = Embedder.encode_query / encode_document(text) to
    each batch ([rows, dimensions] float32, or [rows, dimensions / 8] packed bits for (u)binary)."""

    def __init__(self, model: str, *, input_type: str = "document", text_column: str = "text",
                 embedding_column: str = "embedding", dimensions: int | None = None, precision: str = "float32",
                 device: str | None = None, **load_kwargs):
        """load_kwargs go to `Embedder.from_pretrained` (dtype, suffix, max_seq_length, backend,
        max_tokens_per_batch)."""
        check_embed_options(input_type, precision)
        from ..embedder import Embedder
        self.text_column, self.embedding_column = text_column, embedding_column
        self.dimensions, self.precision = dimensions, precision
        self.embedder = Embedder.from_pretrained(model, device=_device(device), show_progress_bar=False, **load_kwargs)
        self.encode = self.embedder.encode_query if input_type == "query" else self.embedder.encode_document
        # Fail at load, not on the first batch, when the checkpoint does not offer the dimensions.
        self.dimensions = self.embedder.resolve_dimensions(dimensions)

    def __call__(self, batch: dict) -> dict:
        texts = string_column(batch, self.text_column)
        if texts:
            emb = self.encode(texts, dimensions=self.dimensions, precision=self.precision, show_progress_bar=False)
        else:  # an empty block: encode() refuses empty input, but the output still needs its column
            dim = self.dimensions
            emb = np.zeros((0, dim // 8 if self.precision != "float32" else dim),
                           dtype={"float32": np.float32, "binary": np.int8, "ubinary": np.uint8}[self.precision])
        return {**batch, self.embedding_column: emb}


def check_embed_options(input_type: str, precision: str) -> None:
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if precision not in ROW_PRECISIONS:
        raise ValueError(f"precision must be one of {ROW_PRECISIONS} on Ray, got {precision!r} (int8/uint8 "
                         f"calibrate on each batch, so they would depend on how the dataset is split; embed "
                         f"in float32 and quantize the whole set afterwards)")

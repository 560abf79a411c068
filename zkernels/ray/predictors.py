"""Callable classes for Ray Data's `map_batches`: each actor loads its model once, in `__init__`, and
scores every batch it is handed with the public `Reranker.predict` / `Embedder.encode` API.

A batch is a pyarrow Table (what zkernels' own jobs hand over: the input's columns pass through with
their types untouched) or Ray's numpy dict (`dict[str, numpy.ndarray]`); the result has the same kind.
Rows whose query, document or text is not a string are handled as `on_invalid` says (see columns.py):
"error" raises, "null" scores the other rows and gives these a null (numpy dicts have no null: there the
column becomes an object array holding None for them).

Nothing here imports ray: the classes also work, and are tested, without a cluster.
"""
from __future__ import annotations

import numpy as np

from ..options import EngineOptions, merge_options
from .columns import check_on_invalid, valid_rows
from .retries import DEFAULT_MAX_RETRIES, CrashGuard
from .schema import conform, with_column

# int8/uint8 calibrate their ranges on the embeddings of one call, so their codes would depend on how
# Ray cut the dataset into batches; only per-row precisions give the same result as one direct call.
ROW_PRECISIONS = ("float32", "binary", "ubinary")
INPUT_TYPES = ("query", "document")
CODE_DTYPES = {"float32": np.float32, "binary": np.int8, "ubinary": np.uint8}
# from_pretrained keywords that are engine options (EngineOptions fields of the same name).
ENGINE_KEYWORDS = ("dtype", "backend", "max_tokens_per_batch", "quantize")
AUTO_DEVICE = "auto"


def actor_device() -> str:
    import torch
    # Ray sets CUDA_VISIBLE_DEVICES to the GPU(s) it gave this actor, so "cuda" is the actor's own GPU.
    return "cuda" if torch.cuda.is_available() else "cpu"


def actor_options(options: EngineOptions | None, device: str | None, load_kwargs: dict) -> EngineOptions:
    """The EngineOptions an actor loads its model with. `options` (or the defaults) takes the engine
    settings also given as keywords in `load_kwargs` (dtype=, backend=, max_tokens_per_batch=, quantize=;
    they are removed from it) and `device`; None is "not given", and a setting given both ways must agree (else a
    ValueError names both). The device: the one given (as `device` or in the options); "auto" or neither:
    cuda when Ray gave this actor a GPU, else cpu. Progress bars stay off: many actors' bars would
    interleave in one log."""
    if options is not None and not isinstance(options, EngineOptions):
        raise TypeError(f"options must be a zkernels.EngineOptions, got {type(options).__name__}")
    load_kwargs.pop("show_progress_bar", None)  # off in actors, whatever was asked (see above)
    given = {k: load_kwargs.pop(k) for k in ENGINE_KEYWORDS if k in load_kwargs}
    if device == AUTO_DEVICE:
        if options is not None and options.device is not None:
            raise ValueError(f"device='auto' contradicts options={options!r}; give the device once")
        device = None
    options = merge_options(options, device=device, **given)
    if options.device is None:
        options = options.replace(device=actor_device())
    return options.replace(show_progress=False)


class BatchPredictor:
    """The base of zkernels' map_batches callables (map_with_actors hands them pyarrow batches and the
    job's settings). What both predictors share: the text columns to check, the column to add and its
    type, the output schema every Arrow batch is cast to, and the guard against a batch that keeps
    killing the actor."""
    what = "value"  # the output, in messages

    def _setup(self, input_columns: list[str], output_column: str, on_invalid: str, input_schema,
               max_retries: int | None) -> None:
        self.input_columns, self.output_column = list(input_columns), output_column
        self.on_invalid = check_on_invalid(on_invalid)
        self.input_schema = input_schema
        self.crash_guard = CrashGuard(max_retries)

    @property
    def output_type(self):
        raise NotImplementedError

    def compute(self, texts: dict[str, list[str]]) -> np.ndarray:
        """The output rows for valid rows only (`texts`: column -> strings); [0, ...] when there are none."""
        raise NotImplementedError

    def __call__(self, batch):
        cells, valid = valid_rows(batch, self.input_columns, self.on_invalid, self.what)
        texts = {name: [v for v, ok in zip(values, valid) if ok] for name, values in cells.items()}
        with self.crash_guard.watch(cells):
            values = self.compute(texts)
        if isinstance(batch, dict):
            return {**batch, self.output_column: _numpy_column(values, valid)}
        column = _arrow_column(values, valid, self.output_type)
        if self.output_column in batch.column_names:  # a column of that name is replaced, in its place
            out = batch.set_column(batch.column_names.index(self.output_column), self.output_column, column)
        else:
            out = batch.append_column(self.output_column, column)
        if self.input_schema is None:
            return out
        return conform(out, with_column(self.input_schema, self.output_column, self.output_type))


def _spread(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`values` (one per valid row) placed at the valid rows of a zero-filled array over all rows."""
    if valid.all():
        return values
    full = np.zeros((len(valid), *values.shape[1:]), dtype=values.dtype)
    full[valid] = values
    return full


def _arrow_column(values: np.ndarray, valid: np.ndarray, kind):
    """A pyarrow array over all rows: scores, or fixed-size lists for [rows, dim] arrays; null at the
    invalid rows."""
    import pyarrow as pa
    full = _spread(values, valid)
    if full.ndim == 1:
        return pa.array(full, type=kind, mask=None if valid.all() else ~valid)
    flat = pa.array(np.ascontiguousarray(full).reshape(-1), type=kind.value_type)
    return pa.FixedSizeListArray.from_arrays(flat, type=kind, mask=None if valid.all() else pa.array(~valid))


def _numpy_column(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    if valid.all():
        return values
    out = np.empty(len(valid), dtype=object)  # numpy has no null: None at the invalid rows
    rows = iter(values)
    for i, ok in enumerate(valid):
        out[i] = next(rows) if ok else None
    return out


class RerankPredictor(BatchPredictor):
    """map_batches callable: adds `score_column` = Reranker.predict(zip(query, document)) to each batch
    (float32; null for an invalid row with on_invalid="null")."""
    what = "score"

    def __init__(self, model: str, *, query_column: str = "query", document_column: str = "document",
                 score_column: str = "score", device: str | None = None, options: EngineOptions | None = None,
                 on_invalid: str = "error", input_schema=None, max_retries: int | None = DEFAULT_MAX_RETRIES,
                 **load_kwargs):
        """device: see `actor_options` ("auto" or None: the actor's GPU if it has one). options: an
        EngineOptions (dtype, backend, max_tokens_per_batch). input_schema: a pyarrow Schema every Arrow
        output batch is cast to (plus the score column). max_retries: see zkernels.ray.retries. load_kwargs
        go to `Reranker.from_pretrained` (format, max_length, instruction, dtype, backend,
        max_tokens_per_batch)."""
        from ..reranker import Reranker
        self._setup([query_column, document_column], score_column, on_invalid, input_schema, max_retries)
        options = actor_options(options, device, load_kwargs)
        self.reranker = Reranker.from_pretrained(model, options=options, **load_kwargs)

    @property
    def output_type(self):
        import pyarrow as pa
        return pa.float32()

    def compute(self, texts):
        queries, documents = texts.values()
        if not queries:
            return np.zeros(0, dtype=np.float32)
        scores = self.reranker.predict(list(zip(queries, documents)), show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32)


class EmbedPredictor(BatchPredictor):
    """map_batches callable: adds `embedding_column` = Embedder.encode(text) with the checkpoint's prompt
    for `input_type` (or `prompt_name` / `prompt`) to each batch: [rows, dimensions] float32, or [rows,
    dimensions / 8] packed bits for (u)binary; fixed-size lists in Arrow batches, null for an invalid
    row with on_invalid="null"."""
    what = "embedding"

    def __init__(self, model: str, *, input_type: str = "document", text_column: str = "text",
                 embedding_column: str = "embedding", dimensions: int | None = None, precision: str = "float32",
                 prompt_name: str | None = None, prompt: str | None = None, device: str | None = None,
                 options: EngineOptions | None = None, on_invalid: str = "error", input_schema=None,
                 max_retries: int | None = DEFAULT_MAX_RETRIES, **load_kwargs):
        """load_kwargs go to `Embedder.from_pretrained` (suffix, max_seq_length, dtype, backend,
        max_tokens_per_batch); the rest as for RerankPredictor."""
        check_embed_options(input_type, precision)
        from ..embedder import Embedder
        self._setup([text_column], embedding_column, on_invalid, input_schema, max_retries)
        options = actor_options(options, device, load_kwargs)
        self.embedder = Embedder.from_pretrained(model, options=options, **load_kwargs)
        self.precision = precision
        # The embedder's own rules, applied once at load: a dimension or prompt it does not offer fails
        # here, not on the first batch.
        self.dimensions = self.embedder.resolve_dimensions(dimensions)
        self.prompt = self.embedder.resolve_prompt(prompt, prompt_name, input_type)
        self.width = self.dimensions // 8 if precision != "float32" else self.dimensions

    @property
    def output_type(self):
        import pyarrow as pa
        return pa.list_(pa.from_numpy_dtype(CODE_DTYPES[self.precision]), self.width)

    def compute(self, texts):
        (values,) = texts.values()
        if not values:  # encode() refuses empty input, but the output still needs its column
            return np.zeros((0, self.width), dtype=CODE_DTYPES[self.precision])
        return self.embedder.encode(values, prompt=self.prompt, dimensions=self.dimensions,
                                    precision=self.precision, show_progress_bar=False)


def check_embed_options(input_type: str, precision: str) -> None:
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type must be one of {INPUT_TYPES}, got {input_type!r}")
    if precision not in ROW_PRECISIONS:
        raise ValueError(f"precision must be one of {ROW_PRECISIONS} on Ray, got {precision!r} (int8/uint8 "
                         f"calibrate on each batch, so they would depend on how the dataset is split; embed "
                         f"in float32 and quantize the whole set afterwards)")

"""`rerank_dataset` / `embed_dataset`: one `map_batches` over an actor pool, with the defaults a batch
inference job wants (one actor per GPU, batches sized for the token budget, output in input order,
one output schema, invalid rows handled as asked, failed actors restarted a few times by Ray).

Query grouping: each Ray batch is a contiguous run of input rows, and `Reranker.predict` groups the rows
of a call by query and computes each query's prefix once, wherever the rows sit in the batch. A file
laid out query by query (the usual top-k layout) therefore computes each query's prefix once, or twice
where a batch boundary cuts its rows. No global sort: it would cost two shuffles of the whole dataset and
a row index Ray Data does not provide; sort an interleaved input by query first (`ds.sort("query")`)."""
from __future__ import annotations

import warnings

from ..options import DEFAULT_TOKENS_PER_BATCH, EngineOptions
from .columns import InvalidRowError, check_on_invalid
from .predictors import BatchPredictor, EmbedPredictor, RerankPredictor, check_embed_options
from .retries import DEFAULT_MAX_RETRIES, ray_limits
from .schema import arrow_schema

# One Ray batch holds a few forwards' worth of tokens, so packing has rows to choose from.
FORWARDS_PER_BATCH = 4
PROMPT_TOKENS = 40      # template tokens around the texts (chat markup, instruction)
CHARS_PER_TOKEN = 4.0   # rough figure for Qwen's BPE on English; only sizes batches, never scores
MIN_BATCH, MAX_BATCH = 16, 8192


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError("zkernels.ray needs Ray Data: python3 -m pip install -e '.[ray]' in the zkernels "
                          "checkout") from e
    return ray


def check_columns(ds, columns: list[str], what: str, on_invalid: str = "error") -> None:
    """Clear errors before any actor starts: a missing column, one whose type is not a string, or (with
    on_invalid="error") one Ray types null, i.e. in which it found no string at all."""
    import pyarrow as pa
    schema = ds.schema()
    if schema is None:
        return  # nothing known yet; the actors check each batch
    names = list(schema.names)
    for name in columns:
        if name not in names:
            raise ValueError(f"{what}: the dataset has no column {name!r} (it has {names})")
        kind = dict(zip(names, schema.types))[name]
        if not isinstance(kind, pa.DataType) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
            continue
        if not pa.types.is_null(kind):
            raise TypeError(f"{what}: column {name!r} must hold strings, but its type is {kind}")
        if on_invalid == "error":
            raise InvalidRowError(f"{what}: row 0 of the input holds a null (missing) value in column {name!r} (Ray "
                                  f"types the column null: it found no string in it); pass on_invalid='null' to "
                                  f"give such rows a null")


def estimate_batch_size(sample: list[dict], columns: list[str], on_gpu: bool,
                        max_tokens_per_batch: int | None) -> int:
    """Rows per Ray batch: a few forwards' token budget divided by the tokens of a typical row, from a
    sample of the first rows."""
    budget = max_tokens_per_batch or DEFAULT_TOKENS_PER_BATCH["cuda" if on_gpu else "cpu"]
    chars = [sum(len(str(row.get(c, ""))) for c in columns) for row in sample] or [0]
    tokens_per_row = PROMPT_TOKENS + sum(chars) / len(chars) / CHARS_PER_TOKEN
    return int(min(MAX_BATCH, max(MIN_BATCH, FORWARDS_PER_BATCH * budget / tokens_per_row)))


def resolve_resources(concurrency, num_gpus: float | None, num_cpus: float | None):
    """(ActorPoolStrategy, num_gpus, num_cpus): one actor per GPU of the cluster by default; one actor on
    a cluster without GPUs."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS, when set, names the cluster; otherwise a local one starts
    gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus is None:
        num_gpus = 1 if gpus > 0 else 0
    if num_cpus is None:
        num_cpus = 1
    if concurrency is None:
        concurrency = max(1, int(gpus // num_gpus)) if num_gpus > 0 else 1
    if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 1:
        strategy = ray.data.ActorPoolStrategy(size=concurrency)
    elif (isinstance(concurrency, tuple) and len(concurrency) == 2
          and all(isinstance(c, int) and c >= 1 for c in concurrency) and concurrency[0] <= concurrency[1]):
        strategy = ray.data.ActorPoolStrategy(min_size=concurrency[0], max_size=concurrency[1])
    else:
        raise ValueError(f"concurrency must be a positive int or a (min, max) pair, got {concurrency!r}")
    # Ray Data's read and write tasks take a whole CPU each; actors holding every CPU would leave them
    # none, and the job would wait forever instead of failing.
    cpus, least = ray.cluster_resources().get("CPU", 0), concurrency if isinstance(concurrency, int) else concurrency[0]
    if cpus - least * num_cpus < 1:
        raise ValueError(f"{least} actor(s) with num_cpus={num_cpus:g} each take {least * num_cpus:g} of the "
                         f"cluster's {cpus:g} CPUs, leaving less than the one CPU Ray Data's read and write tasks "
                         f"need: the job would wait forever. Lower concurrency={least} or num_cpus={num_cpus:g} (it "
                         f"may be a fraction)")
    return strategy, num_gpus, num_cpus


def map_with_actors(ds, predictor_cls, predictor_kwargs: dict, *, input_columns: list[str], what: str,
                    concurrency=None, num_gpus: float | None = None,
                    num_cpus: float | None = None, batch_size: int | None = None,
                    max_tokens_per_batch: int | None = None, max_restarts: int | None = None,
                    max_task_retries: int | None = None, on_invalid: str = "error",
                    max_retries: int = DEFAULT_MAX_RETRIES, options: EngineOptions | None = None):
    """ds.map_batches(predictor_cls) on an actor pool; rows come out in input order.

    For zkernels' predictors (RerankPredictor, EmbedPredictor and their subclasses) the batches are
    pyarrow Tables, each cast to one output schema (the input's plus the new column), and invalid rows
    are handled as `on_invalid` says; other callables get Ray's numpy batches, as before.

    max_retries: a batch whose scoring kills its actor's process (out of memory, a native crash) is tried
    again this many times, then the job fails with an error naming that batch (zkernels.ray.retries).
    max_restarts / max_task_retries: Ray's actor fault tolerance underneath (default: -1, no limit, for
    the actor's restarts, since the budget is per batch; max_retries + 1 for each batch's). A dead actor
    is restarted and its unfinished batches are resubmitted, so no row is lost or written twice.
    """
    check_on_invalid(on_invalid)
    max_restarts, max_task_retries = ray_limits(max_retries, max_restarts, max_task_retries)
    if options is not None and not isinstance(options, EngineOptions):
        raise TypeError(f"options must be a zkernels.EngineOptions, got {type(options).__name__}")
    ours = isinstance(predictor_cls, type) and issubclass(predictor_cls, BatchPredictor)
    check_columns(ds, input_columns, what, on_invalid if ours else "null")
    strategy, num_gpus, num_cpus = resolve_resources(concurrency, num_gpus, num_cpus)
    # Rows must leave every stage in the order they came in: order is part of the contract.
    ds.context.execution_options.preserve_order = True
    sample = ds.take(256)  # streams only the first blocks, unlike count() on a JSON input
    if not sample:
        raise ValueError(f"{what}: the dataset is empty (no rows)")
    if batch_size is None:
        budget = max_tokens_per_batch or (options.max_tokens_per_batch if options is not None else None)
        batch_size = estimate_batch_size(sample, input_columns, num_gpus > 0, budget)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    predictor_kwargs = dict(predictor_kwargs)
    if max_tokens_per_batch is not None:
        predictor_kwargs["max_tokens_per_batch"] = max_tokens_per_batch
    if options is not None:
        predictor_kwargs["options"] = options
    if ours:
        predictor_kwargs.update(on_invalid=on_invalid, input_schema=arrow_schema(ds), max_retries=max_retries)
    with warnings.catch_warnings():
        # Ray 2.60 marks **ray_remote_args deprecated, but they are still how map_batches takes an actor's
        # restart policy; passing them explicitly keeps the policy the same on Ray versions whose default
        # differs.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        out = ds.map_batches(predictor_cls, fn_constructor_kwargs=predictor_kwargs, batch_size=batch_size,
                             batch_format="pyarrow" if ours else "numpy", compute=strategy, num_gpus=num_gpus,
                             num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=max_task_retries)
    out.context.execution_options.preserve_order = True
    return out


def rerank_dataset(ds, model: str, *, query_column: str = "query", document_column: str = "document",
                   score_column: str = "score", concurrency=None,
                   num_gpus: float | None = None, num_cpus: float | None = None, batch_size: int | None = None,
                   max_tokens_per_batch: int | None = None, max_restarts: int | None = None,
                   max_task_retries: int | None = None, on_invalid: str = "error",
                   max_retries: int = DEFAULT_MAX_RETRIES, options: EngineOptions | None = None, **load_kwargs):
    """The dataset with a `score_column` added: Reranker.predict over its (query, document) rows, in
    input order, scored by an actor pool. The input's columns are kept with their types (see schema.py).

    concurrency: actors (int) or an autoscaling (min, max) range; default one per GPU of the cluster
    (one actor on a cluster without GPUs). num_gpus / num_cpus: per actor (default 1 GPU when the
    cluster has any, and 1 CPU). batch_size: rows per Ray batch (default: FORWARDS_PER_BATCH forwards'
    token budget); rows of one query share its prefix within a batch (see the module's docstring).
    on_invalid: "error" (default) stops at a row whose query or document is a null or not a string;
    "null" scores the other rows and gives those a null score. max_retries / max_restarts /
    max_task_retries: see map_with_actors. options: an EngineOptions (dtype, backend,
    max_tokens_per_batch) for every actor; device= (default "auto": cuda in an actor that has a GPU,
    else cpu) picks the device per actor. load_kwargs go to Reranker.from_pretrained in each actor
    (format, max_length, instruction, dtype, backend). Lazy: rows are scored when the result is consumed
    or written.
    """
    kwargs = dict(query_column=query_column, document_column=document_column, score_column=score_column,
                  **load_kwargs)
    return map_with_actors(ds, RerankPredictor, {"model": str(model), **kwargs},
                           input_columns=[query_column, document_column], what="rerank_dataset",
                           concurrency=concurrency,
                           num_gpus=num_gpus, num_cpus=num_cpus, batch_size=batch_size,
                           max_tokens_per_batch=max_tokens_per_batch, max_restarts=max_restarts,
                           max_task_retries=max_task_retries, on_invalid=on_invalid, max_retries=max_retries,
                           options=options)


def embed_dataset(ds, model: str, *, input_type: str = "document", text_column: str = "text",
                  embedding_column: str = "embedding", dimensions: int | None = None, precision: str = "float32",
                  concurrency=None, num_gpus: float | None = None, num_cpus: float | None = None,
                  batch_size: int | None = None, max_tokens_per_batch: int | None = None,
                  max_restarts: int | None = None, max_task_retries: int | None = None, on_invalid: str = "error",
                  max_retries: int = DEFAULT_MAX_RETRIES, options: EngineOptions | None = None,
                  prompt_name: str | None = None, prompt: str | None = None, **load_kwargs):
    """The dataset with an `embedding_column` added: Embedder.encode over its `text_column` with the
    checkpoint's prompt for `input_type` ("document" or "query"; or the one prompt_name / prompt names),
    in input order. dimensions: a projection the checkpoint offers (default: the hidden size);
    precision: "float32", "binary" or "ubinary" (packed bits). on_invalid: as for rerank_dataset, with a
    null embedding. Resources, batching, retries and options as for rerank_dataset; load_kwargs go to
    Embedder.from_pretrained."""
    check_embed_options(input_type, precision)
    kwargs = dict(input_type=input_type, text_column=text_column, embedding_column=embedding_column,
                  dimensions=dimensions, precision=precision, prompt_name=prompt_name, prompt=prompt, **load_kwargs)
    return map_with_actors(ds, EmbedPredictor, {"model": str(model), **kwargs}, input_columns=[text_column],
                           what="embed_dataset", concurrency=concurrency, num_gpus=num_gpus, num_cpus=num_cpus,
                           batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
                           max_restarts=max_restarts, max_task_retries=max_task_retries, on_invalid=on_invalid,
                           max_retries=max_retries, options=options)

"""zkernels on Ray Data (`python3 -m pip install -e ".[ray]"` in the checkout): rerank or embed datasets
of millions of rows on an actor pool, locally or on the cluster RAY_ADDRESS names.

    import ray, zkernels.ray
    ds = ray.data.read_parquet("pairs.parquet")              # columns: query, document
    scored = zkernels.ray.rerank_dataset(ds, "zeroentropy/zerank-2", on_invalid="null")
    zkernels.ray.write_output(scored, "scored/", null_column="score")   # a folder: written by the workers

The modules, each with one job: datasets (the map_batches job), predictors (the actors' callables),
columns (which rows are valid), schema (one output schema), retries (a batch that keeps killing its
actor), io (reading, and writing one ordered file), sinks (writing a folder from the workers) and rows (the
row encoding both writers share). See docs/ray.md.

Importing this module does not import ray; the helpers do when called.
"""
from __future__ import annotations

from .columns import InvalidRowError, first_invalid_row
from .datasets import embed_dataset, map_with_actors, rerank_dataset
from .io import WriteSummary, read_dataset, write_dataset, write_output
from .predictors import EmbedPredictor, RerankPredictor
from .retries import BatchKeepsFailingError

__all__ = ["BatchKeepsFailingError", "EmbedPredictor", "InvalidRowError", "RerankPredictor", "WriteSummary",
           "embed_dataset", "first_invalid_row", "map_with_actors", "read_dataset", "rerank_dataset",
           "write_dataset", "write_output"]

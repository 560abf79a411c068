"""zkernels on Ray Data (`pip install 'zkernels[ray]'`): rerank or embed datasets of millions of rows on
an actor pool, locally or on the cluster RAY_ADDRESS names.

    import ray, zkernels.ray
    ds = ray.data.read_parquet("pairs.parquet")              # columns: query, document
    zkernels.ray.rerank_dataset(ds, "zeroentropy/zerank-2").write_parquet("scored/")

Importing this module does not import ray; the helpers do when called.
"""
from __future__ import annotations

from .datasets import embed_dataset, map_with_actors, rerank_dataset
from .io import read_dataset, write_dataset
from .predictors import EmbedPredictor, RerankPredictor

__all__ = ["EmbedPredictor", "RerankPredictor", "embed_dataset", "map_with_actors", "read_dataset",
           "rerank_dataset", "write_dataset"]

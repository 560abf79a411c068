"""rerank_dataset / embed_dataset on a local Ray: what they refuse before any actor starts. (Their jobs run
end to end in test_ray_cli.py, through the commands that call them.)"""
from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")

from zkernels.ray import embed_dataset, rerank_dataset  # noqa: E402
from zkernels.ray.columns import InvalidRowError  # noqa: E402

pytest_plugins = ["_ray_fixtures"]
pytestmark = pytest.mark.usefixtures("local_ray")


def test_bad_datasets_give_clear_errors_before_any_actor_starts(ray_rerank_folder):
    with pytest.raises(ValueError, match=r"rerank_dataset: the dataset has no column 'document'"):
        rerank_dataset(ray.data.from_items([{"query": "q", "doc": "d"}]), ray_rerank_folder, concurrency=1)
    with pytest.raises(TypeError, match=r"column 'document' must hold strings, but its type is int64"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": 3}]), ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"the dataset is empty"):
        rerank_dataset(ray.data.from_items([]), ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"concurrency must be a positive int"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, concurrency=0)
    with pytest.raises(ValueError, match=r"precision must be one of"):
        embed_dataset(ray.data.from_items([{"text": "t"}]), ray_rerank_folder, precision="uint8")
    all_null = ray.data.from_arrow(pa.table({"query": ["q", "q"], "document": pa.nulls(2)}))
    with pytest.raises(InvalidRowError, match=r"row 0 of the input holds a null \(missing\) value in column "
                                              r"'document' \(Ray types the column null.*on_invalid='null'"):
        rerank_dataset(all_null, ray_rerank_folder, concurrency=1)
    with pytest.raises(ValueError, match=r"on_invalid must be one of"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, on_invalid="skip")
    with pytest.raises(ValueError, match=r"max_retries must be an int >= 0, got -1"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, max_retries=-1)
    with pytest.raises(TypeError, match=r"options must be a zkernels.EngineOptions"):
        rerank_dataset(ray.data.from_items([{"query": "q", "document": "d"}]), ray_rerank_folder, options="cpu")

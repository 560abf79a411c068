"""Qwen3ForSequenceClassification conversions (the form TEI, vLLM and infinity serve): score.weight
[1, hidden] and no LM head. Checked against transformers' AutoModelForSequenceClassification on tiny
checkpoints converted the way the published conversions do it, and against the causal-LM form of the
same weights."""
import json

import numpy as np
import pytest
import torch

from zkernels import CheckpointError, Reranker

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2, tie_word_embeddings=False)
PAIRS = [("What is the capital of France?", "Paris is the capital of France."),
         ("What is the capital of France?", "Lyon is a city. " * 5),
         ("cats", "  a document with spaces  "),
         ("🐱 emoji", "東京は日本の首都です")]


@pytest.fixture(scope="module")
def causal(tiny_checkpoint):
    return tiny_checkpoint("seqcls", format=None, **CFG)


@pytest.fixture(scope="module")
def converted(causal, tiny_seq_cls_checkpoint):
    return {recipe: tiny_seq_cls_checkpoint(causal, recipe) for recipe in ("qwen3-reranker", "zerank")}


@torch.inference_mode()
def _transformers_logits(folder, ids):
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32).eval()
    return torch.cat([model(input_ids=torch.tensor([x])).logits[:, 0] for x in ids]).double()


@pytest.mark.parametrize("recipe", ["qwen3-reranker", "zerank"])
def test_seq_cls_matches_transformers_and_the_causal_form(converted, causal, recipe):
    folder = converted[recipe]
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Qwen3ForSequenceClassification"]
    reranker = Reranker.from_pretrained(folder, format=recipe)
    assert reranker.classifier and reranker.engine.score_rows.shape == (1, 64)
    from safetensors.torch import load_file
    torch.testing.assert_close(reranker.engine.score_rows, load_file(str(folder / "model.safetensors"))["score.weight"],
                               rtol=0, atol=0)
    ids = reranker.encode_pairs(PAIRS).ids
    logits = _transformers_logits(folder, ids)
    activation = torch.sigmoid if recipe == "qwen3-reranker" else (lambda x: torch.sigmoid(x / 5))
    ours = torch.from_numpy(reranker.predict(PAIRS)).double()
    torch.testing.assert_close(ours, activation(logits), rtol=1e-5, atol=1e-6)
    raw = torch.from_numpy(reranker.predict(PAIRS, activation_fn="identity")).double()
    torch.testing.assert_close(raw, logits, rtol=1e-5, atol=1e-5)
    # the causal LM with the same weights scores the same under the same recipe
    lm = Reranker.from_pretrained(causal, format=recipe)
    torch.testing.assert_close(ours, torch.from_numpy(lm.predict(PAIRS)).double(), rtol=1e-5, atol=1e-6)
    assert ours.max() - ours.min() > 1e-3


def test_seq_cls_format_from_the_folder_name_and_declared_activation(converted, tmp_path):
    import shutil
    folder = shutil.copytree(converted["qwen3-reranker"], tmp_path / "Qwen3-Reranker-0.6B-seq-cls")
    detected = Reranker.from_pretrained(folder)
    assert detected.format.name == "qwen3-reranker"
    probs = detected.predict(PAIRS)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"}))
    raw = Reranker.from_pretrained(folder).predict(PAIRS)  # what the folder declares
    np.testing.assert_allclose(torch.sigmoid(torch.from_numpy(raw)).numpy(), probs, rtol=1e-6)
    # picking the zerank recipe picks its sigmoid(x / 5), whatever the folder declares
    zerank = Reranker.from_pretrained(folder, format="zerank")
    logits = torch.from_numpy(zerank.predict(PAIRS, activation_fn="identity"))
    np.testing.assert_allclose(zerank.predict(PAIRS), torch.sigmoid(logits / 5).numpy(), rtol=1e-6)
    with pytest.raises(CheckpointError, match="no 1_LogitScore"):
        Reranker.from_pretrained(folder, format="sentence-transformers")


def test_seq_cls_with_several_labels_is_refused(converted, tmp_path):
    import shutil
    folder = shutil.copytree(converted["zerank"], tmp_path / "zerank-two-labels")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {"0": "no", "1": "yes"}
    cfg.pop("num_labels", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="must have one label.*has 2"):
        Reranker.from_pretrained(folder)

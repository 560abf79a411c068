"""Whole-model parity: zkernels' scores against the reference recipes run through transformers' own
Qwen3ForCausalLM, on tiny random checkpoints written to disk with save_pretrained (float32, CPU)."""
import pytest
import torch

from zkernels import Reranker
from zkernels.reference import qwen3_reranker_reference, reference_scores_from_ids, zerank_reference

CONFIGS = {  # GQA ratio, tied/untied, head_dim, depth
    "gqa1-tied-hd32-1l": dict(num_attention_heads=4, num_key_value_heads=4, head_dim=32, num_hidden_layers=1),
    "gqa2-untied-hd64-3l": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_hidden_layers=3,
                                tie_word_embeddings=False),
    "gqa4-tied-hd32-3l": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32, num_hidden_layers=3),
    "gqa4-untied-hd64-1l": dict(num_attention_heads=4, num_key_value_heads=1, head_dim=64, num_hidden_layers=1,
                                tie_word_embeddings=False, hidden_size=96),
}

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "",                                   # empty
    "x",                                  # one character
    "Ünïcödé façade — 東京は日本の首都です 🐱🚀 emoji",
    "   leading spaces then text",
    "\n\nleading newlines\nand more lines",
    "\t tab and space",
    "Paris is the capital and most populous city of France.",  # identical to the first
    "Lyon is a city in France. " * 12,
]
PAIRS = [(QUERY, d) for d in DOCUMENTS] + [
    ("  second query, with spaces around  ", "Berlin is the capital of Germany."),
    ("  second query, with spaces around  ", "\n"),
    ("🐱", "cats"),
]


def _assert_close(ours, ref, rel=1e-5):
    ours = torch.as_tensor(ours, dtype=torch.float64)
    ref = ref.to(torch.float64)
    assert ours.shape == ref.shape
    err = ((ours - ref).abs() / ref.abs().clamp_min(1e-12)).max().item()
    assert err <= rel, f"max relative error {err:.3g} > {rel}\nours {ours}\nref  {ref}"
    return err


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("fmt", ["zerank", "qwen3-reranker"])
def test_scores_match_transformers(tiny_checkpoint, reference_model, name, fmt):
    folder = tiny_checkpoint(name, **CONFIGS[name])  # one checkpoint per shape: format= picks the recipe
    reranker = Reranker.from_pretrained(folder, format=fmt)
    ours = reranker.predict(PAIRS)
    model = reference_model(folder)
    if fmt == "zerank":
        ref = zerank_reference(model, reranker.tokenizer, PAIRS)
    else:
        ref = qwen3_reranker_reference(model, reranker.tokenizer, PAIRS)
    _assert_close(ours, ref)
    # the random model must discriminate, or this test could not catch a wrong computation
    assert ref.max() - ref.min() > 1e-3
    assert ours[0] == ours[7]  # identical documents, identical scores


@pytest.mark.parametrize("fmt", ["zerank", "qwen3-reranker"])
def test_over_long_documents_are_cut_before_the_suffix(tiny_checkpoint, reference_model, fmt):
    folder = tiny_checkpoint("gqa2-untied-hd64-3l", **CONFIGS["gqa2-untied-hd64-3l"])
    max_length = 80
    reranker = Reranker.from_pretrained(folder, format=fmt, max_length=max_length)
    long_doc = "A very long document about Paris and France. " * 40
    pairs = [(QUERY, long_doc), (QUERY, "short one")]
    with pytest.warns(UserWarning, match="1 prompt"):
        ours = reranker.predict(pairs)
    tok = reranker.tokenizer
    if fmt == "zerank":
        full = tok(reranker.format.render(QUERY, long_doc))["input_ids"]
        tail = reranker.format.tail_ids
        expected_ids = full[:max_length - len(tail)] + tail
        short = tok(reranker.format.render(QUERY, "short one"))["input_ids"]
    else:
        f = reranker.format
        body = tok(f.content(f.instruction, QUERY, long_doc), add_special_tokens=False)["input_ids"]
        expected_ids = f.prefix_ids + body[:max_length - len(f.prefix_ids) - len(f.suffix_ids)] + f.suffix_ids
        short_body = tok(f.content(f.instruction, QUERY, "short one"), add_special_tokens=False)["input_ids"]
        short = f.prefix_ids + short_body + f.suffix_ids
    assert len(expected_ids) == max_length
    logits = reference_scores_from_ids(reference_model(folder), [expected_ids, short], reranker.format.score_token_ids)
    _assert_close(ours, reranker.format.scores(logits))
    if fmt == "qwen3-reranker":  # the model card's own truncation gives the same ids
        _assert_close(ours, qwen3_reranker_reference(reference_model(folder), tok, pairs, max_length=max_length))
    with pytest.raises(ValueError, match="over max_length=80"):
        reranker.predict(pairs, truncate=False)

    # A query longer than max_length: the references cut the content, never the template (Qwen3-Reranker
    # truncates the content's ids; the chat-template recipes keep the template suffix).
    long_query = "query " * 200
    with pytest.warns(UserWarning, match="1 prompt.*1 of them lost their whole document and part of the query"):
        ours = reranker.predict([(long_query, "doc")])
    if fmt == "zerank":
        full = tok(reranker.format.render(long_query, "doc"))["input_ids"]
        expected = reranker.format.scores(reference_scores_from_ids(
            reference_model(folder), [full[:max_length - len(tail)] + tail], reranker.format.score_token_ids))
    else:
        expected = qwen3_reranker_reference(reference_model(folder), tok, [(long_query, "doc")], max_length=max_length)
    _assert_close(ours, expected)
    with pytest.raises(ValueError, match="over max_length=80"):
        reranker.predict([(long_query, "doc")], truncate=False)
    with pytest.raises(ValueError, match="template alone is"):
        Reranker.from_pretrained(folder, format=fmt, max_length=5).predict([("q", "d")])


def test_many_queries_in_one_call_equal_separate_calls(tiny_checkpoint):
    folder = tiny_checkpoint("gqa4-tied-hd32-3l", **CONFIGS["gqa4-tied-hd32-3l"])
    reranker = Reranker.from_pretrained(folder)
    together = reranker.predict(PAIRS)
    separate = [reranker.predict([p])[0] for p in PAIRS]
    _assert_close(together, torch.tensor(separate, dtype=torch.float64), rel=1e-6)


def test_from_state_dict_scores_like_the_checkpoint(tiny_checkpoint, reference_model):
    import json

    from zkernels.random_checkpoints import random_model_from_config
    folder = tiny_checkpoint("gqa4-tied-hd32-3l", **CONFIGS["gqa4-tied-hd32-3l"])
    from_disk = Reranker.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    in_memory = random_model_from_config(config, torch.float32, "cpu", from_disk.engine.backend,
                                          hf_model=reference_model(folder))
    prompts = from_disk.format.encode(PAIRS, 4096).ids
    assert torch.equal(in_memory.score_token_ids(prompts), from_disk.score_token_ids(prompts))
    with pytest.raises(RuntimeError, match="has no tokenizer"):
        in_memory.predict(PAIRS)

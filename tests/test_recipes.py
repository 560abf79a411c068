"""Each scoring recipe against the code that defines it: the Qwen3-Reranker model card's truncation,
modeling_zeranker.py's clipping (and ZeroEntropy's serving code without it), and sentence-transformers
6.2's own CrossEncoder on checkpoints it saved itself (zerank-2's current form: LogitScore "Yes", an
identity activation, a chat template for "query"/"document" messages)."""
import numpy as np
import pytest
import torch

from zkernels import CheckpointError, Reranker
from zkernels.formats import QWEN3_RERANKER_MAX_LENGTH
from zkernels.reference import reference_scores_from_ids, zerank_reference

st = pytest.importorskip("sentence_transformers")

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2)
PAIRS = [("What is the capital of France?", "Paris is the capital of France."),
         ("What is the capital of France?", "Lyon is a city. " * 5),
         ("cats", "  a document with spaces around  "),
         ("  spaced query ", "dogs\nand cats"),
         ("🐱 emoji", "東京は日本の首都です")]


def _close(a, b, atol=1e-5, rtol=1e-5):
    torch.testing.assert_close(torch.as_tensor(np.asarray(a), dtype=torch.float64),
                               torch.as_tensor(np.asarray(b), dtype=torch.float64), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def causal(tiny_checkpoint):
    return tiny_checkpoint("recipes", format=None, **CFG)


@pytest.fixture(scope="module")
def zerank2(causal, tmp_path_factory):
    """zerank-2's current Hugging Face form, saved by sentence-transformers itself."""
    from zkernels.random_checkpoints import make_tiny_cross_encoder_checkpoint
    return make_tiny_cross_encoder_checkpoint(tmp_path_factory.mktemp("ce") / "zerank-2-like", causal,
                                              true_token_id=9454, activation_fn=torch.nn.Identity())


def test_qwen3_reranker_defaults_to_the_model_cards_max_length(tiny_checkpoint):
    folder = tiny_checkpoint("positions", format=None, max_position_embeddings=40960, **CFG)
    reranker = Reranker.from_pretrained(folder, format="qwen3-reranker")
    assert reranker.max_length == QWEN3_RERANKER_MAX_LENGTH == 8192
    assert Reranker.from_pretrained(folder, format="qwen3-reranker", max_length=9000).max_length == 9000
    assert Reranker.from_pretrained(folder, format="zerank").max_length == 40960
    # the model card: content ids truncated to 8192 - prefix - suffix, then prefix + content + suffix
    f, tok = reranker.format, reranker.tokenizer
    doc = "word " * 9000
    with pytest.warns(UserWarning, match="1 prompt"):
        ids = reranker.encode_pairs([("q", doc)]).ids[0]
    content = tok(f.content(f.instruction, "q", doc), add_special_tokens=False, truncation="longest_first",
                  max_length=8192 - len(f.prefix_ids) - len(f.suffix_ids))["input_ids"]
    assert ids == f.prefix_ids + content + f.suffix_ids and len(ids) == 8192


def test_over_long_query_is_cut_before_the_suffix_with_a_count(causal):
    reranker = Reranker.from_pretrained(causal, format="zerank", max_length=40)
    long_query, tail = "query words " * 50, reranker.format.tail_ids
    pairs = [(long_query, "doc"), (long_query, "another"), ("short", "doc")]
    with pytest.warns(UserWarning, match="2 prompt.*2 of them lost their whole document and part of the query"):
        enc = reranker.encode_pairs(pairs)
    full = reranker.tokenizer(reranker.format.render(long_query, "doc"))["input_ids"]
    assert enc.ids[0] == full[:40 - len(tail)] + tail
    assert enc.ids[2] == reranker.tokenizer(reranker.format.render("short", "doc"))["input_ids"]
    with pytest.raises(ValueError, match=r"pairs\[0\].*over max_length=40"):
        reranker.encode_pairs(pairs, truncate=False)


def test_zerank_clip_chars_switch(causal, reference_model):
    long_query, long_doc = "q" * 2500 + " end", "  " + "d" * 11000 + " end"
    clipped = Reranker.from_pretrained(causal, format="zerank")
    unclipped = Reranker.from_pretrained(causal, format="zerank", clip_chars=False)
    assert clipped.format.render(long_query, long_doc) == clipped.tokenizer.apply_chat_template(
        [{"role": "system", "content": "q" * 2000}, {"role": "user", "content": "d" * 9998}],
        tokenize=False, add_generation_prompt=True)
    # ZeroEntropy's serving code: stripped, not clipped
    assert unclipped.format.render(long_query, long_doc) == unclipped.tokenizer.apply_chat_template(
        [{"role": "system", "content": long_query.strip()}, {"role": "user", "content": long_doc.strip()}],
        tokenize=False, add_generation_prompt=True)
    pairs = [(" " + "q" * 2100 + " tail ", " a doc "), ("q", "short")]  # the query clip changes the first
    ids = [unclipped.tokenizer(unclipped.format.render(q, d))["input_ids"] for q, d in pairs]
    expected = unclipped.format.scores(reference_scores_from_ids(reference_model(causal), ids, [9454]))
    ours_unclipped, ours_clipped = unclipped.predict(pairs), clipped.predict(pairs)
    _close(ours_unclipped, expected)
    _close(ours_clipped, zerank_reference(reference_model(causal), clipped.tokenizer, pairs))
    assert ours_clipped[0] != ours_unclipped[0] and ours_clipped[1] == ours_unclipped[1]
    with pytest.raises(ValueError, match="clip_chars applies to the zerank format only"):
        Reranker.from_pretrained(causal, format="qwen3-reranker", clip_chars=False)


def test_zerank2_cross_encoder_form_against_sentence_transformers(zerank2, reference_model, causal):
    ce = st.CrossEncoder(str(zerank2), device="cpu")
    raw = ce.predict(PAIRS)  # the identity activation: raw "Yes" logits
    assert isinstance(ce.activation_fn, torch.nn.Identity)
    # the folder's own CrossEncoder recipe, exactly
    as_declared = Reranker.from_pretrained(zerank2, format="sentence-transformers")
    assert as_declared.format.score_token_ids == [9454]
    _close(as_declared.predict(PAIRS), raw)
    # the zerank recipe is detected (LogitScore "Yes") and stays the default: sigmoid(logit / 5) of the
    # clipped, stripped pair through the folder's chat template as shipped
    default = Reranker.from_pretrained(zerank2)
    assert default.format.name == "zerank"
    _close(default.predict(PAIRS), zerank_reference(reference_model(causal), default.tokenizer, PAIRS))
    stripped = [(q.strip(), d.strip()) for q, d in PAIRS]
    _close(default.predict(stripped), torch.sigmoid(torch.as_tensor(ce.predict(stripped)) / 5))
    # the CrossEncoder's raw logits from the zerank recipe, as an explicit choice
    _close(default.predict(stripped, activation_fn="identity"), ce.predict(stripped))
    _close(default.predict(stripped, activation_fn=torch.nn.Identity()), ce.predict(stripped))
    raw_reranker = Reranker.from_pretrained(zerank2, activation_fn="identity", clip_chars=False)
    _close(raw_reranker.predict(stripped), ce.predict(stripped))


def test_default_cross_encoder_of_a_causal_lm(causal, tmp_path):
    """CrossEncoder(causal LM) as sentence-transformers builds it: LogitScore yes - no, sigmoid."""
    ce_folder = tmp_path / "ce-default"
    st.CrossEncoder(str(causal), device="cpu").save(str(ce_folder), create_model_card=False)
    ce = st.CrossEncoder(str(ce_folder), device="cpu")
    reranker = Reranker.from_pretrained(ce_folder)
    assert reranker.format.name == "sentence-transformers"
    assert reranker.format.score_token_ids == [9693, 2152]
    _close(reranker.predict(PAIRS), ce.predict(PAIRS))
    _close(reranker.predict(PAIRS, activation_fn="identity"), ce.predict(PAIRS, activation_fn=torch.nn.Identity()))
    # pairs past the limit: sentence-transformers cuts the rendered ids and restores the template's tail
    ce.max_seq_length = 24
    short = Reranker.from_pretrained(ce_folder, max_length=24)
    with pytest.warns(UserWarning, match="prompt"):
        ours = short.predict(PAIRS)
    _close(ours, ce.predict(PAIRS))


def test_sentence_transformers_format_needs_a_logit_score_module(causal):
    with pytest.raises(CheckpointError, match="no 1_LogitScore"):
        Reranker.from_pretrained(causal, format="sentence-transformers")


def test_predict_activation_and_tensor_options(causal):
    reranker = Reranker.from_pretrained(causal, format="qwen3-reranker")
    default = reranker.predict(PAIRS)
    raw = reranker.predict(PAIRS, activation_fn="identity")
    _close(torch.sigmoid(torch.as_tensor(raw)), default)
    _close(reranker.predict(PAIRS, activation_fn=lambda x: x * 2), 2 * raw, atol=0, rtol=0)
    _close(reranker.predict(PAIRS, activation_fn="torch.nn.modules.activation.Sigmoid"), default)
    t = reranker.predict(PAIRS, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (len(PAIRS),)
    assert str(t.device) == reranker.device and np.array_equal(t.numpy(), default)
    one = reranker.predict(PAIRS[0], convert_to_tensor=True)
    assert isinstance(one, torch.Tensor) and one.ndim == 0 and float(one) == default[0]
    assert reranker.predict([], convert_to_tensor=True).shape == (0,)
    with pytest.raises(ValueError, match="unknown activation 'softmax'"):
        reranker.predict(PAIRS, activation_fn="softmax")
    with pytest.raises(ValueError, match="cannot build"):
        reranker.predict(PAIRS, activation_fn="torch.nn.NoSuchThing")


def test_declared_files_are_read_defensively(tmp_path):
    import json

    from zkernels.declared import read_declared_activation, read_input_spec, read_logit_score
    (tmp_path / "1_LogitScore").mkdir()
    for bad, match in ((["x"], "must hold a JSON object"),
                       ({"true_token_id": "9454"}, "true_token_id must be a token id"),
                       ({"false_token_id": 2152}, "declares no true_token_id")):
        (tmp_path / "1_LogitScore" / "config.json").write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=match):
            read_logit_score(tmp_path)
    sb = tmp_path / "sentence_bert_config.json"
    for bad, match in (({"modality_config": ["message"]}, "modality_config must be an object"),
                       ({"processing_kwargs": {"chat_template": {"restore_suffix": False}}}, "restore_suffix=false"),
                       ({"modality_config": {"message": {"format": "nested"}}}, "message format 'nested'")):
        sb.write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=match):
            read_input_spec(tmp_path)
    sb.write_text(json.dumps({"modality_config": {"text": {}, "message": {"format": "flat"}},
                              "processing_kwargs": {"chat_template": {"add_generation_prompt": True}}}))
    spec = read_input_spec(tmp_path)
    assert spec.uses_messages and spec.message_format == "flat"
    assert spec.template_kwargs == {"add_generation_prompt": True}
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"activation_fn": 3}))
    with pytest.raises(CheckpointError, match="activation_fn must be a string"):
        read_declared_activation(tmp_path)


def test_template_without_system_and_user_roles_says_which_format_to_use(qwen_tokenizer):
    import copy

    from zkernels.formats import ZerankFormat
    from zkernels.random_checkpoints import PAIR_ROLES_TEMPLATE
    tok = copy.deepcopy(qwen_tokenizer)
    tok.chat_template = PAIR_ROLES_TEMPLATE.replace("message['content']", "(message['content'] if message['role'] "
                                                    "in ('query', 'document') else '')")
    with pytest.raises(ValueError, match="'system' and 'user' messages.*try format='sentence-transformers'"):
        ZerankFormat(tok)

"""Prompts and token ids equal the reference's, on Qwen's real vocabulary."""
import pytest

from zkernels.formats import QWEN3_RERANKER_PREFIX, QWEN3_RERANKER_SUFFIX, Qwen3RerankerFormat, ZerankFormat

TEXTS = ["What is a cat?", "  spaced  ", "\n\nnewlines first", "", "x", "emoji 🐱🚀 and 日本語", "tab\tinside",
         "ends with newline\n", "<|im_end|> inside a text"]


def test_qwen_vocabulary_ids(qwen_tokenizer):
    enc = lambda s: qwen_tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
    assert enc("Yes") == [9454] and enc("yes") == [9693] and enc("no") == [2152]
    assert enc("system") == [8948] and enc("\n") == [198]
    assert enc("<|im_start|><|im_end|><|endoftext|><think></think>") == [151644, 151645, 151643, 151667, 151668]


def test_zerank_prompt_is_byte_identical_to_apply_chat_template(qwen_tokenizer):
    fmt = ZerankFormat(qwen_tokenizer)
    assert fmt._pieces is not None  # the fast path is in use, and must equal the template
    for q in TEXTS:
        for d in TEXTS:
            expected = qwen_tokenizer.apply_chat_template(
                [{"role": "system", "content": q.strip()}, {"role": "user", "content": d.strip()}],
                tokenize=False, add_generation_prompt=True)
            assert fmt.render(q, d) == expected
    assert fmt.render("Q", "D") == ("<|im_start|>system\nQ<|im_end|>\n<|im_start|>user\nD<|im_end|>\n"
                                    "<|im_start|>assistant\n")


def test_zerank_clips_then_strips():
    q, d = ZerankFormat.clip(" " + "q" * 2500, "d" * 9999 + "  tail beyond 10000")
    assert q == "q" * 1999 and d == "d" * 9999


def test_zerank_ids_are_the_whole_prompt_tokenized(qwen_tokenizer):
    fmt = ZerankFormat(qwen_tokenizer)
    pairs = [(q, d) for q in TEXTS[:3] for d in TEXTS]
    enc = fmt.encode(pairs, max_length=10_000)
    for (q, d), ids in zip(pairs, enc.ids):
        assert ids == qwen_tokenizer(fmt.render(q, d))["input_ids"]
        assert ids[-len(fmt.tail_ids):] == fmt.tail_ids == [151645, 198, 151644, 77091, 198]
    assert len(set(enc.groups)) == 3


def test_template_that_transforms_content_falls_back_to_rendering_each_pair(qwen_tokenizer):
    import copy
    tok = copy.deepcopy(qwen_tokenizer)
    tok.chat_template = tok.chat_template.replace("message['content']", "message['content'] | upper")
    fmt = ZerankFormat(tok)
    assert fmt._pieces is None
    assert fmt.render("abc", "def") == ("<|im_start|>system\nABC<|im_end|>\n<|im_start|>user\nDEF<|im_end|>\n"
                                        "<|im_start|>assistant\n")


def test_qwen3_reranker_prompt_matches_the_model_card(qwen_tokenizer):
    fmt = Qwen3RerankerFormat(qwen_tokenizer)
    text = fmt.render("my query", "my doc")
    assert text == (QWEN3_RERANKER_PREFIX + "<Instruct>: Given a web search query, retrieve relevant passages that "
                    "answer the query\n<Query>: my query\n<Document>: my doc" + QWEN3_RERANKER_SUFFIX)
    assert text.startswith("<|im_start|>system\nJudge whether the Document meets the requirements")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    enc = fmt.encode([("my query", "  my doc")], max_length=1000, instruction="Custom task")
    body = qwen_tokenizer("<Instruct>: Custom task\n<Query>: my query\n<Document>:   my doc",
                          add_special_tokens=False)["input_ids"]
    assert enc.ids[0] == fmt.prefix_ids + body + fmt.suffix_ids
    assert fmt.score_token_ids == [2152, 9693]


def test_non_single_token_score_word_is_a_clear_error(qwen_tokenizer):
    from zkernels.formats import single_token_id
    with pytest.raises(ValueError, match="splits 'Yesss please'"):
        single_token_id(qwen_tokenizer, "Yesss please")

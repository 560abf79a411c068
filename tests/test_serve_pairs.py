"""The server's prompts of one query with many documents, built from tokens (`PromptFormat.query_pairs`):
the same ids, errors and warnings as the format's whole-prompt `encode` (whose parity with the
reference recipes tests/test_recipes.py and test_reranker_parity.py hold), on random awkward texts,
long queries and long documents, cut or not; and the query tokenized once, not once per document."""
import copy
import random
import warnings

import pytest

from zkernels.formats import make_format
from zkernels.random_checkpoints import PAIR_ROLES_TEMPLATE

# pieces whose edges are where a prompt split into query and document parts could go wrong
PIECES = ["a", "bc", " ", "  ", "\n", "\n\n", "\t", ".", "?", "!", "é", "\u0301", "寿司", "🐱", "12", "<|im_end|>",
          "<|im_", "|>", "<Document>: ", "Query", "x y"]


@pytest.fixture(scope="module")
def formats(qwen_tokenizer):
    pairs_tokenizer = copy.deepcopy(qwen_tokenizer)
    pairs_tokenizer.chat_template = PAIR_ROLES_TEMPLATE
    return {"zerank": make_format("zerank", qwen_tokenizer),
            "zerank-unclipped": make_format("zerank", qwen_tokenizer, clip_chars=False),
            "qwen3-reranker": make_format("qwen3-reranker", qwen_tokenizer),
            "sentence-transformers": make_format(
                "sentence-transformers", pairs_tokenizer,
                sentence_transformers={"true_token_id": 9454, "template_kwargs": {"add_generation_prompt": True}})}


def _text(rng, n):
    return "".join(rng.choice(PIECES) for _ in range(n))


def _both(fmt, query, documents, max_length, truncate, piece=3):
    """(whole, built from tokens): each (ids or the error's text, warnings' texts)."""
    out = []
    for build in ("whole", "pairs"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if build == "whole":
                    ids = fmt.encode([(query, d) for d in documents], max_length, truncate).ids
                else:
                    pairs = fmt.query_pairs(query, max_length, truncate)
                    ids = [p for k in range(0, len(documents), piece) for p in pairs.encode(documents[k:k + piece])]
                    pairs.finish()
            except ValueError as e:
                ids = f"{type(e).__name__}: {e}"
        out.append((ids, [str(w.message) for w in caught]))
    return out


@pytest.mark.parametrize("name", ["zerank", "zerank-unclipped", "qwen3-reranker", "sentence-transformers"])
def test_prompts_built_from_tokens_equal_whole_prompts(formats, name):
    fmt, rng = formats[name], random.Random(7)
    assert fmt.query_pairs("q", 100).split is not None  # the tokens path, not its fallback
    for _ in range(12):
        query = _text(rng, rng.randint(0, 30))
        documents = [_text(rng, rng.randint(0, 25)) for _ in range(7)]
        for max_length, truncate in [(1 << 20, True), (70, True), (45, True), (30, True), (45, False)]:
            whole, pairs = _both(fmt, query, documents, max_length, truncate)
            assert pairs == whole, (name, query, documents, max_length, truncate)


@pytest.mark.parametrize("name", ["zerank-unclipped", "qwen3-reranker"])
def test_a_long_query_is_tokenized_once(formats, name, monkeypatch):
    """A 20,000-character query with 50 documents: the documents' prompts are cut as the whole prompts
    are, and the tokenizer sees the query's text once, not 50 times."""
    fmt = formats[name]
    query = "Where is the longest query? " * 700 + "end."
    documents = [f"document {i} " + "word " * i for i in range(50)]
    whole, _ = _both(fmt, query, documents, 512, True)
    seen, real = [], type(fmt.tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        seen.extend([text] if isinstance(text, str) else text)
        return real(self, text, *args, **kwargs)
    monkeypatch.setattr(type(fmt.tokenizer), "__call__", counting)
    pairs = fmt.query_pairs(query, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = pairs.encode(documents)
    assert built == whole[0] and all(len(p) == 512 for p in built)
    assert sum(len(t) for t in seen) < 2 * len(query)  # whole prompts: 50 x the query

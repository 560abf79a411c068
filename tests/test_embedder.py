"""Embedder parity with sentence-transformers' own SentenceTransformer on tiny random Qwen3 embedding
checkpoints written in its format: a zembed-style one (role prompts, "<|im_end|>\\n" suffix,
projections) and a Qwen3-Embedding-style one (instruction query prompt, tokenizer appends EOS).

sentence-transformers 6.2 has no native suffix option for plain-text inputs, so the reference for the
zembed-style checkpoint gets the suffix appended to each text it is given; the token ids agree (checked
below) because "<|im_end|>" is a special token that the tokenizer splits out first.
"""
import json
import random

import numpy as np
import pytest
import torch

from zkernels import CheckpointError
from zkernels.declared import read_embedding_recipe
from zkernels.embedder import Embedder
from zkernels.projections import Projections

st = pytest.importorskip("sentence_transformers")

SUFFIX = "<|im_end|>\n"
MAX_SEQ = 40
HIDDEN = 64
TEXTS = ["hello world", "\nleading newline, then text", "The cat sat on the mat.", "ζήτα 🐱 emoji",
         "  spaces  around  ", "numbers 12345 and code: x = f(y)", "a", "Query-like text?"]
LONG = "one two three four five six seven eight nine ten " * 8  # far past MAX_SEQ tokens


def _projections(seed=1):
    g = torch.Generator().manual_seed(seed)
    dims = [HIDDEN, 32, 16, 8]
    return {d_out: torch.randn(d_in, d_out, generator=g) / d_in ** 0.5 for d_in, d_out in zip(dims, dims[1:])}


@pytest.fixture(scope="module")
def zembed_ckpt(tiny_embedding_checkpoint):
    return tiny_embedding_checkpoint("zembed-tiny", max_seq_length=MAX_SEQ, projections=_projections())


@pytest.fixture(scope="module")
def qwen3_ckpt(tiny_embedding_checkpoint):
    return tiny_embedding_checkpoint(
        "qwen3-embedding-tiny", seed=3, suffix=None, append_eos=True, max_seq_length=MAX_SEQ,
        prompts={"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:"})


@pytest.fixture(scope="module")
def models(zembed_ckpt, qwen3_ckpt):
    """name -> (zkernels Embedder, SentenceTransformer reference, suffix the reference's texts need)."""
    return {"zembed": (Embedder.from_pretrained(zembed_ckpt), st.SentenceTransformer(str(zembed_ckpt), device="cpu"),
                       SUFFIX),
            "qwen3": (Embedder.from_pretrained(qwen3_ckpt), st.SentenceTransformer(str(qwen3_ckpt), device="cpu"), "")}


KINDS = ["zembed", "qwen3"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("role", ["query", "document"])
def test_token_ids_match_sentence_transformers(models, kind, role):
    emb, ref, suffix = models[kind]
    prompt = ref.prompts.get(role) or None
    ours = emb.tokenize(TEXTS, prompt)
    for text, ids in zip(TEXTS, ours):
        theirs = ref[0].preprocess([text + suffix], prompt=prompt)["input_ids"][0].tolist()
        assert ids == theirs, text
    if kind == "qwen3":
        assert all(ids[-1] == 151643 for ids in ours)  # the tokenizer's post-processor appends EOS
    else:
        assert all(ids[-2:] == [151645, 198] for ids in ours)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_parity(models, kind):
    emb, ref, suffix = models[kind]
    ref_texts = [t + suffix for t in TEXTS]
    q, d = emb.encode_query(TEXTS), emb.encode_document(TEXTS)
    assert q.dtype == np.float32 and q.shape == (len(TEXTS), HIDDEN)
    np.testing.assert_allclose(q, ref.encode_query(ref_texts), atol=1e-5, rtol=0)
    np.testing.assert_allclose(d, ref.encode_document(ref_texts), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-6)
    if kind == "zembed":  # the role prompts must matter
        assert np.abs(q - d).max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("precision", ["binary", "ubinary", "int8", "uint8"])
def test_quantized_codes_match(models, kind, precision):
    emb, ref, suffix = models[kind]
    ours = emb.encode_document(TEXTS, precision=precision)
    theirs = ref.encode_document([t + suffix for t in TEXTS], precision=precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if precision.endswith("binary"):
        np.testing.assert_array_equal(ours, theirs)
    else:  # a float32 value within 1e-5 of a bucket edge may floor either way
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
        assert (ours == theirs).mean() > 0.99


@pytest.mark.parametrize("truncate_dim,normalize", [(16, False), (16, True), (1, False), (HIDDEN, False)])
def test_truncate_dim_matches(models, truncate_dim, normalize):
    emb, ref, suffix = models["zembed"]
    ours = emb.encode_query(TEXTS, truncate_dim=truncate_dim, normalize_embeddings=normalize)
    theirs = ref.encode_query([t + suffix for t in TEXTS], truncate_dim=truncate_dim, normalize_embeddings=normalize)
    assert ours.shape == (len(TEXTS), truncate_dim)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    codes = emb.encode_query(TEXTS, truncate_dim=truncate_dim, precision="ubinary")
    ref_codes = ref.encode_query([t + suffix for t in TEXTS], truncate_dim=truncate_dim, precision="ubinary")
    np.testing.assert_array_equal(codes, ref_codes)


def test_truncation_without_suffix_matches(models):
    emb, ref, _ = models["qwen3"]
    ids = emb.tokenize([LONG], ref.prompts["query"])[0]
    assert len(ids) == MAX_SEQ and ids[-1] == 151643  # EOS survives truncation, as in the reference
    np.testing.assert_allclose(emb.encode_query([LONG, "short"]), ref.encode_query([LONG, "short"]), atol=1e-5)


def test_truncation_keeps_the_suffix(models):
    emb, ref, _ = models["zembed"]
    prompt = ref.prompts["document"]
    ids = emb.tokenize([LONG], prompt)[0]
    assert len(ids) == MAX_SEQ and ids[-2:] == [151645, 198]
    # The text part is the reference's own right-truncation at two tokens fewer.
    ref.max_seq_length = MAX_SEQ - 2
    try:
        head = ref[0].preprocess([LONG], prompt=prompt)["input_ids"][0].tolist()
    finally:
        ref.max_seq_length = MAX_SEQ
    assert ids[:-2] == head


def test_prefix_cached_equals_uncached_and_order_free(models):
    emb, _, _ = models["zembed"]
    texts = TEXTS * 2 + [LONG]
    cached = emb.encode_document(texts)
    uncached = emb.encode_document(texts, use_prefix_cache=False)
    np.testing.assert_allclose(cached, uncached, atol=1e-6, rtol=0)
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    np.testing.assert_array_equal(emb.encode_document([texts[i] for i in order]), cached[order])
    np.testing.assert_allclose(emb.encode_document(texts, batch_size=2), cached, atol=1e-6, rtol=0)


def test_projections_applied_as_documented(models):
    """dimensions=d: pooled @ (P[32] @ P[16] @ ... @ P[d]), then L2-normalised."""
    emb, ref, suffix = models["zembed"]
    assert emb.dimensions == [HIDDEN, 32, 16, 8]
    base = ref.encode_document([t + suffix for t in TEXTS]).astype(np.float64)  # normalised pooled vectors
    p = {d: m.double().numpy() for d, m in _projections().items()}
    chain = np.eye(HIDDEN)
    for d in (32, 16, 8):
        chain = chain @ p[d]
        want = base @ chain
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        got = emb.encode_document(TEXTS, dimensions=d)
        assert got.shape == (len(TEXTS), d)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(emb.encode_document(TEXTS, dimensions=HIDDEN), emb.encode_document(TEXTS))
    low = emb.encode_document(TEXTS, dimensions=32, truncate_dim=8)
    np.testing.assert_allclose(low, emb.encode_document(TEXTS, dimensions=32)[:, :8], atol=0)


@pytest.mark.parametrize("raw,match", [
    ({"32": torch.zeros(HIDDEN, 32), "sixteen": torch.zeros(32, 16)}, "not a dimension"),
    ({"32": torch.zeros(HIDDEN, 32), "16": torch.zeros(64, 16)}, r"needs \[32, 16\]"),
    ({"32": torch.zeros(32, HIDDEN)}, r"needs \[64, 32\]"),
    ({"32": torch.zeros(HIDDEN, 32, 1)}, "2-D float"),
    ({"32": torch.zeros(HIDDEN, 32, dtype=torch.int64)}, "2-D float"),
    ({}, "no matrices"),
])
def test_bad_projection_files_are_rejected(raw, match):
    with pytest.raises(CheckpointError, match=match):
        Projections.from_tensors(raw, HIDDEN)


def test_bad_input_gives_clear_errors(models):
    emb, _, _ = models["zembed"]
    with pytest.raises(ValueError, match="empty"):
        emb.encode_query([])
    with pytest.raises(TypeError, match=r"texts\[1\] must be a string"):
        emb.encode_document(["ok", 3])
    with pytest.raises(TypeError, match="must be a string or a list"):
        emb.encode_document(b"bytes")
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        emb.encode_query(TEXTS, precision="float16")
    with pytest.raises(ValueError, match=r"dimensions=12 is not offered.*\[64, 32, 16, 8\]"):
        emb.encode_query(TEXTS, dimensions=12)
    with pytest.raises(ValueError, match="truncate_dim"):
        emb.encode_query(TEXTS, dimensions=16, truncate_dim=32)
    with pytest.raises(ValueError, match="prompt_name 'passage'"):
        emb.encode(TEXTS, prompt_name="passage")
    with pytest.raises(ValueError, match="single embedding"):
        emb.encode_query(["one"], precision="int8")


def test_no_projections_offers_only_the_hidden_size(models):
    emb, _, _ = models["qwen3"]
    assert emb.dimensions == [HIDDEN]
    with pytest.raises(ValueError, match="no projections.safetensors"):
        emb.encode_query(TEXTS, dimensions=32)


def test_output_types(models):
    emb, _, _ = models["zembed"]
    one = emb.encode_query("a single text")
    assert one.shape == (HIDDEN,)
    np.testing.assert_array_equal(one, emb.encode_query(["a single text"])[0])
    t = emb.encode_query(TEXTS, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.shape == (len(TEXTS), HIDDEN)
    rows = emb.encode_query(TEXTS, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == len(TEXTS) and rows[0].shape == (HIDDEN,)


def _write(folder, modules=None, pooling=None, st_config=None):
    folder.mkdir()
    if modules is not None:
        (folder / "modules.json").write_text(json.dumps(modules))
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if st_config is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return folder


MODULES = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
           {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]


def test_recipe_reading(tmp_path):
    r = read_embedding_recipe(_write(tmp_path / "a", MODULES, {"pooling_mode_lasttoken": True},
                                     {"prompts": {"query": "q: "}, "default_prompt_name": "query"}))
    assert (r.prompts, r.default_prompt_name, r.normalize, r.suffix) == ({"query": "q: "}, "query", False, "")
    assert read_embedding_recipe(_write(tmp_path / "zembed-1", MODULES, {"pooling_mode": "lasttoken"})).suffix == SUFFIX
    with pytest.raises(CheckpointError, match="pooling_mode_mean_tokens"):
        read_embedding_recipe(_write(tmp_path / "b", MODULES, {"pooling_mode_mean_tokens": True}))
    dense = MODULES + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    with pytest.raises(CheckpointError, match=r"\['Dense'\] are not supported"):
        read_embedding_recipe(_write(tmp_path / "c", dense, {"pooling_mode_lasttoken": True}))
    with pytest.raises(CheckpointError, match="default_prompt_name"):
        read_embedding_recipe(_write(tmp_path / "d", MODULES, {"pooling_mode_lasttoken": True},
                                     {"prompts": {}, "default_prompt_name": "query"}))


@pytest.mark.parametrize("modules,match", [({"0": "Transformer"}, "must hold a list of modules"),
                                           (MODULES + ["Normalize"], "module 2 must be an object, got str")])
def test_malformed_modules_json_is_a_checkpoint_error(tmp_path, modules, match):
    with pytest.raises(CheckpointError, match=match):
        read_embedding_recipe(_write(tmp_path / "m", modules, {"pooling_mode_lasttoken": True}))


def test_declared_suffix_comes_first(tmp_path):
    """config_sentence_transformers.json's "suffix" wins over the zembed name fallback, even when empty."""
    pool = {"pooling_mode_lasttoken": True}

    def suffix(name, st_config):
        return read_embedding_recipe(_write(tmp_path / name, MODULES, pool, st_config)).suffix
    assert suffix("zembed-a", {"suffix": ""}) == ""
    assert suffix("zembed-b", {"suffix": "<|endoftext|>"}) == "<|endoftext|>"
    assert suffix("zembed-c", {"prompts": {}}) == SUFFIX
    assert suffix("plain", {"prompts": {}}) == ""


@pytest.fixture(scope="module")
def message_models(qwen3_ckpt, models, tmp_path_factory):
    """A checkpoint saved by sentence-transformers 6.2 whose Transformer declares the "message" modality,
    its tokenizer carrying a chat template; with and without add_generation_prompt."""
    from zkernels.random_checkpoints import make_tiny_message_embedding_checkpoint
    out = {}
    for name, kwargs in (("plain", None), ("generation", {"add_generation_prompt": True})):
        folder = make_tiny_message_embedding_checkpoint(tmp_path_factory.mktemp("msg") / name, qwen3_ckpt,
                                                        max_seq_length=MAX_SEQ, template_kwargs=kwargs,
                                                        base=models["qwen3"][1])
        assert "message" in json.loads((folder / "sentence_bert_config.json").read_text())["modality_config"]
        out[name] = (Embedder.from_pretrained(folder), st.SentenceTransformer(str(folder), device="cpu"))
    return out


@pytest.mark.parametrize("name", ["plain", "generation"])
def test_message_modality_follows_sentence_transformers(message_models, name):
    emb, ref = message_models[name]
    assert emb.recipe.inputs.uses_messages
    texts = TEXTS + [LONG, ""]
    for prompt in (None, ref.prompts["query"]):
        theirs = ref[0].preprocess(texts, prompt=prompt)
        for i, ids in enumerate(emb.tokenize(texts, prompt)):
            row = theirs["input_ids"][i][theirs["attention_mask"][i].bool()].tolist()
            assert ids == row, (prompt, texts[i])
    assert emb.tokenize(["hi"]) != emb.tokenize(["hi"], ref.prompts["query"])
    ours = emb.encode_query(texts)
    np.testing.assert_allclose(ours, ref.encode_query(texts), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.encode_document(texts), ref.encode_document(texts), rtol=1e-4, atol=1e-5)


def test_message_modality_refuses_a_suffix(message_models):
    emb, _ = message_models["plain"]
    with pytest.raises(ValueError, match="'message' modality.*a suffix cannot be added"):
        Embedder.from_pretrained(emb.folder, suffix="<|im_end|>\n")


def test_similarity_and_dimension_as_sentence_transformers(models):
    emb, ref, suffix = models["zembed"]
    assert emb.get_sentence_embedding_dimension() == emb.get_embedding_dimension() == HIDDEN
    assert ref.get_embedding_dimension() == HIDDEN
    q, d = emb.encode_query(TEXTS[:3]), emb.encode_document(TEXTS)
    torch.testing.assert_close(emb.similarity(q, d), ref.similarity(q, d), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(emb.similarity(torch.from_numpy(q[0]), list(d)), ref.similarity(q[:1], d),
                               rtol=1e-6, atol=1e-6)
    raw = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)  # not normalised: cosine anyway
    torch.testing.assert_close(emb.similarity(raw, raw * 3), ref.similarity(raw, raw * 3), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="different dimensions: 64 and 8"):
        emb.similarity(q, raw)
    with pytest.raises(TypeError, match="embeddings1 must be float embeddings"):
        emb.similarity("text", d)


@pytest.mark.parametrize("kind", KINDS)
def test_truncate_false_refuses_an_over_long_text(models, kind):
    from zkernels.formats import PromptTooLong
    emb, _, _ = models[kind]
    prompt = emb.resolve_prompt(input_type="document")
    fits = emb.tokenize(["short"], prompt, truncate=False)
    assert fits == emb.tokenize(["short"], prompt)
    with pytest.raises(PromptTooLong, match=rf"texts\[1\] is \d+ tokens, over max_seq_length={MAX_SEQ}"):
        emb.tokenize(["short", LONG], prompt, truncate=False)
    with pytest.raises(PromptTooLong, match=r"texts\[0\]"):
        emb.encode_document([LONG], truncate=False)
    # exactly at the limit is not over it
    at_limit = emb.tokenize([LONG], prompt)[0]
    assert len(at_limit) == MAX_SEQ


@pytest.mark.parametrize("name", ["plain", "generation"])
def test_truncate_false_counts_the_chat_template(message_models, name):
    from zkernels.formats import PromptTooLong
    emb, _ = message_models[name]
    # a text that fits max_seq_length alone but not inside the template
    words = "one two three four five six seven eight nine ten".split()
    text = next(" ".join(words * 8)[:n] for n in range(1, 400)
                if len(emb.tokenizer(" ".join(words * 8)[:n]).input_ids) >= MAX_SEQ - 2)
    with pytest.raises(PromptTooLong, match=r"texts\[0\]"):
        emb.tokenize([text], truncate=False)
    assert len(emb.tokenize([text])[0]) == MAX_SEQ


def test_tokenize_is_safe_across_threads(models):
    """Truncating and non-truncating calls racing on one shared tokenizer never cut each other's texts."""
    import concurrent.futures
    emb, _, _ = models["zembed"]
    short = [f"text {i} " + "word " * (i % 7) for i in range(20)]
    want_short = emb.tokenize(short, truncate=False)
    want_long = emb.tokenize([LONG], truncate=True)

    def call(i):
        if i % 2:
            return emb.tokenize([LONG], truncate=True) == want_long
        return emb.tokenize([short[i % 20]], truncate=False) == [want_short[i % 20]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(2000)))
    assert results.count(False) == 0


def test_dimension_and_prompt_rules(models):
    emb, ref, _ = models["zembed"]
    assert emb.resolve_dimensions(None) == HIDDEN == emb.dimensions[0]
    assert [emb.resolve_dimensions(d) for d in emb.dimensions] == emb.dimensions
    for bad in (12, "32", True, 32.0):
        with pytest.raises(ValueError, match=r"dimensions=.* is not offered by this checkpoint; choose one of"):
            emb.resolve_dimensions(bad)
    assert emb.resolve_prompt("mine", "query", "document") == "mine"
    assert emb.resolve_prompt(prompt_name="query", input_type="document") == ref.prompts["query"]
    assert emb.resolve_prompt(input_type="document") == ref.prompts["document"]
    assert emb.resolve_prompt(input_type="query") == ref.prompts["query"]
    with pytest.raises(ValueError, match="prompt_name 'nope' is not among"):
        emb.resolve_prompt(prompt_name="nope")
    with pytest.raises(ValueError, match="input_type must be"):
        emb.resolve_prompt(input_type="passage")

"""Reranker as a drop-in for sentence-transformers' CrossEncoder: both load the same
Qwen3ForSequenceClassification folder and take the same calls; each call's result has the same types,
dtypes, shapes, devices, dict keys in the same order, and rows in the same order (predict: input order;
rank: best first by the scores the same object gives, ties in input order).

The values differ by design: CrossEncoder renders a pair through its own chat messages, while Reranker
applies the checkpoint's scoring recipe (here Qwen3-Reranker's prompt); test_seq_cls.py checks the
values against transformers."""
import numpy as np
import pytest
import torch

from zkernels import Reranker

st = pytest.importorskip("sentence_transformers")

CFG = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2, tie_word_embeddings=False)
QUERY = "what is a cat?"
DOCS = ["A cat is a small animal.", "Paris is in France.", "Cats purr.", "A cat is a small animal.", "Dogs bark."]
PAIRS = [(QUERY, d) for d in DOCS]


@pytest.fixture(scope="module")
def both(tiny_checkpoint, tiny_seq_cls_checkpoint):
    folder = tiny_seq_cls_checkpoint(tiny_checkpoint("seqcls", format=None, **CFG), "qwen3-reranker")
    return Reranker.from_pretrained(folder, format="qwen3-reranker"), st.CrossEncoder(str(folder), device="cpu")


def kind(value):
    """What a result is, without its numbers: types, dtypes, shapes, devices, dict keys in order."""
    if isinstance(value, torch.Tensor):
        return ("Tensor", value.dtype, tuple(value.shape), value.device.type)
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype, value.shape)
    if isinstance(value, np.generic):
        return (type(value).__name__,)
    if isinstance(value, list):
        return ("list", [kind(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, kind(v)) for k, v in value.items()])
    return (type(value).__name__,)


def numbers(value) -> list[float]:
    if isinstance(value, list):
        return [float(v) for v in value]
    value = value.cpu() if isinstance(value, torch.Tensor) else value
    return np.atleast_1d(np.asarray(value, dtype=np.float64)).tolist()


PREDICT_CALLS = [
    ((PAIRS,), {}),
    ((PAIRS[1],), {}),  # one pair
    (([],), {}),
    ((PAIRS,), {"apply_softmax": True}),
    ((PAIRS,), {"convert_to_numpy": False}),
    ((PAIRS[2],), {"convert_to_numpy": False}),
    (([],), {"convert_to_numpy": False}),
    ((PAIRS,), {"convert_to_tensor": True}),
    ((PAIRS[0],), {"convert_to_tensor": True}),
    (([],), {"convert_to_tensor": True}),
    ((), {"inputs": PAIRS}),
    ((PAIRS,), {"batch_size": 2, "show_progress_bar": False, "activation_fn": torch.nn.Identity(), "device": "cpu",
                "chunk_size": 3, "prompt": None, "prompt_name": None, "pool": None, "convert_to_numpy": True}),
    ((PAIRS,), {"activation_fct": torch.nn.Sigmoid(), "num_workers": 2}),  # CrossEncoder's deprecated names
    ((), {"sentences": PAIRS}),
]


@pytest.mark.parametrize("args, kwargs", PREDICT_CALLS, ids=lambda x: repr(x)[:60])
def test_predict_returns_what_cross_encoder_returns(both, args, kwargs):
    ours, theirs = (model.predict(*args, **kwargs) for model in both)
    assert kind(ours) == kind(theirs)
    pairs = args[0] if args else next(v for k, v in kwargs.items() if k in ("inputs", "sentences"))
    if pairs and isinstance(pairs, list):  # input order: each score is the score of its pair alone
        rest = {k: v for k, v in kwargs.items() if k not in ("inputs", "sentences")}
        for model, scores in zip(both, (ours, theirs)):
            one_by_one = [float(model.predict(p, **rest)) for p in pairs]
            np.testing.assert_allclose(numbers(scores), one_by_one, rtol=1e-5, atol=1e-6)


RANK_CALLS = [
    {},
    {"top_k": 0},
    {"top_k": 2, "return_documents": True},
    {"top_k": 50},
    {"return_documents": True, "batch_size": 1, "show_progress_bar": False, "activation_fn": torch.nn.Identity(),
     "device": "cpu", "prompt": None, "prompt_name": None, "pool": None, "chunk_size": None},
    {"apply_softmax": True, "convert_to_numpy": True, "convert_to_tensor": False, "num_workers": 1},  # deprecated
]


@pytest.mark.parametrize("kwargs", RANK_CALLS, ids=repr)
def test_rank_returns_what_cross_encoder_returns(both, kwargs):
    ours, theirs = (model.rank(QUERY, DOCS, **kwargs) for model in both)
    assert kind(ours) == kind(theirs)
    activation = {"activation_fn": kwargs["activation_fn"]} if "activation_fn" in kwargs else {}
    for model, ranked in zip(both, (ours, theirs)):
        scores = model.predict(PAIRS, **activation)
        best_first = sorted(range(len(DOCS)), key=lambda i: (-scores[i], i))[:kwargs.get("top_k")]
        assert [r["corpus_id"] for r in ranked] == best_first
        np.testing.assert_allclose([r["score"] for r in ranked], scores[best_first], rtol=1e-5, atol=1e-6)
        if kwargs.get("return_documents"):
            assert [r["text"] for r in ranked] == [DOCS[i] for i in best_first]


def test_rank_of_no_documents_is_empty_on_both(both):
    assert [model.rank(QUERY, []) for model in both] == [[], []]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"prompt_name": "query"}])
def test_both_refuse_the_same_bad_arguments(both, kwargs):
    for model in both:
        with pytest.raises(ValueError):
            model.predict(PAIRS, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": "Instruct: find cats\n"}, r"prompt='Instruct: find cats\\n': the qwen3-reranker recipe builds"),
    ({"pool": {"processes": []}}, "a multi-process pool is not supported"),
    ({"device": ["cpu", "cpu"]}, "a list of devices means a multi-process pool"),
    ({"device": "cuda"}, r"device='cuda': this Reranker's weights are on cpu"),
    ({"device": "tpu:x"}, "device 'tpu:x' is not a torch device"),
])
def test_what_zkernels_cannot_do_is_an_error_naming_it(both, kwargs, match):
    reranker, _ = both
    with pytest.raises(ValueError, match=match):
        reranker.predict(PAIRS, **kwargs)
    with pytest.raises(ValueError, match=match):
        reranker.rank(QUERY, DOCS, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda r: r.predict(PAIRS, inputs=PAIRS), "predict got the pairs twice: pairs and inputs"),
    (lambda r: r.predict(), "predict needs the pairs"),
    (lambda r: r.predict(PAIRS, activation_fn="identity", activation_fct="sigmoid"), "both activation_fn and"),
    (lambda r: r.predict(PAIRS, no_such_keyword=1), "unexpected keyword arguments: no_such_keyword"),
    (lambda r: r.rank(QUERY, DOCS, top_k=-1), "top_k must be a non-negative int or None, got -1"),
])
def test_conflicting_or_unknown_arguments_are_errors(both, call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(both[0])

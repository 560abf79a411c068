"""quantize="int8" through the model: errors before loading, batch invariance, weight bytes, score error
against float32 on tiny random models with planted outliers (with and without smoothing), the
`zkernels quantize` checkpoint, and the CLI front doors."""
import json
import shutil

import numpy as np
import pytest
import torch

from zkernels import EngineOptions, Reranker
from zkernels.cli import main
from zkernels.kernels import linear_int8

pytestmark = pytest.mark.skipif(linear_int8.int8_unsupported_reason() is not None,
                                reason=f"int8 cannot run here: {linear_int8.int8_unsupported_reason()}")

CFG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2)
OUTLIER_CHANNELS = [3, 17, 40]  # norm-weight channels scaled up in every layer: large in every token
IM_START = 151644               # the first token of every zerank prompt
PAIRS = [(f"query {q} about {['cats', 'planes', 'rivers'][q % 3]}",
          f"document {i}: " + " ".join(["cats", "planes", "rivers", "dogs", "wings", "boats"][j % 6]
                                       for j in range(i, i + 3 + i % 9)))
         for q in range(4) for i in range(20)]


def _plant_outliers(src, dst, factor=50.0):
    """A copy of checkpoint `src` with Qwen3's two outlier kinds planted: a few norm channels x factor in
    every layer (large in every token), and the first token's embedding x factor (a massive token)."""
    from safetensors.torch import load_file, save_file
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    for name, t in tensors.items():
        if name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")):
            t[OUTLIER_CHANNELS] *= factor
    tensors["model.embed_tokens.weight"][IM_START] *= factor
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def folders(tiny_checkpoint, tmp_path_factory):
    from zkernels.calibration import write_quantized_checkpoint
    base = tiny_checkpoint("int8", **CFG)
    planted = _plant_outliers(base, tmp_path_factory.mktemp("int8") / "planted")
    return {"base": base, "planted": planted,
            "planted-calibrated": write_quantized_checkpoint(planted, planted.with_name("planted-sq"))}


def _raw(folder, **kw):
    return Reranker.from_pretrained(folder, **kw).predict(PAIRS, activation_fn="identity")


def test_bad_quantize_settings_fail_before_anything_loads(folders, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were read before the quantize setting was checked")
    monkeypatch.setattr("zkernels.scoring.load_qwen3_weights", no_loading)
    with pytest.raises(ValueError, match=r"quantize must be one of \('none', 'int8', 'fp8'\).*'int4'"):
        Reranker.from_pretrained(folders["base"], quantize="int4")
    with pytest.raises(ValueError, match="quantize='fp8' runs on CUDA devices"):
        Reranker.from_pretrained(folders["base"], quantize="fp8")
    with pytest.raises(ValueError, match="quantize='int8' runs on CPU devices"):
        EngineOptions(device="cuda", quantize="int8")
    monkeypatch.setattr(linear_int8, "int8_isa", lambda: {n: False for n in linear_int8.INT8_EXTENSIONS})
    with pytest.raises(RuntimeError, match="AVX512-VNNI, AVX-VNNI or AMX-INT8"):
        Reranker.from_pretrained(folders["base"], quantize="int8")
    with pytest.raises(RuntimeError, match="AVX512-VNNI"):  # a checkpoint recording int8 asks for it too
        Reranker.from_pretrained(folders["planted-calibrated"])


def test_int8_rows_do_not_depend_on_their_batch_and_weights_take_a_quarter(folders):
    r8 = Reranker.from_pretrained(folders["base"], quantize="int8")
    together = r8.predict(PAIRS[:12])
    alone = np.array([r8.predict([p])[0] for p in PAIRS[:12]], dtype=np.float32)
    shuffled = r8.predict(PAIRS[:12][::-1])[::-1]
    assert np.array_equal(together, alone) and np.array_equal(together, shuffled)

    layer = r8.engine.forward.weights.layers[0]
    assert all(isinstance(getattr(layer, n), linear_int8.QuantizedLinear) for n in ("qkv", "o", "gate_up", "down"))
    assert r8.engine.score_rows.dtype == torch.float32
    r32 = Reranker.from_pretrained(folders["base"])
    w32 = r32.engine.forward.weights
    linear_params = sum(getattr(lw, n).shape.numel() for lw in w32.layers for n in ("qkv", "o", "gate_up", "down"))
    out_channels = sum(getattr(lw, n).shape[0] for lw in w32.layers for n in ("qkv", "o", "gate_up", "down"))
    assert r32.weight_bytes - r8.weight_bytes == 4 * linear_params - (linear_params + 4 * out_channels)


def test_score_error_with_planted_outliers_against_bf16s_own(folders, monkeypatch):
    """p99 |score - float32 score| on raw logits: int8 by default within 5x bf16's own p99, calibrated
    within 3x; and the smoothing is what keeps the planted outliers in check."""
    def p99(folder, **kw):
        return float(np.percentile(np.abs(_raw(folder, **kw) - _raw(folder)), 99))
    for name in ("base", "planted"):
        bf16 = p99(folders[name], dtype="bfloat16")
        default = p99(folders[name], quantize="int8")
        assert 0 < default <= 5 * bf16, (name, default, bf16)
    calibrated = float(np.percentile(np.abs(_raw(folders["planted-calibrated"]) - _raw(folders["planted"])), 99))
    assert calibrated <= 3 * bf16, (calibrated, bf16)
    monkeypatch.setattr("zkernels.quantization.NORM_GAIN_ALPHA", None)
    unsmoothed = p99(folders["planted"], quantize="int8")
    assert unsmoothed > 1.5 * max(default, calibrated), (unsmoothed, default, calibrated)


def test_a_quantized_checkpoint_loads_int8_and_its_float_load_is_the_original(folders):
    out = folders["planted-calibrated"]
    recipe = json.loads((out / "config.json").read_text())["zkernels_quantization"]
    assert recipe["quantize"] == "int8" and recipe["method"] == "smoothquant" and recipe["alpha"] == 0.5
    assert recipe["calibration_tokens"] > 0
    assert Reranker.from_pretrained(out).engine.quantize == "int8"
    original = Reranker.from_pretrained(folders["planted"])
    as_float = Reranker.from_pretrained(out, quantize="none")
    assert np.array_equal(as_float.predict(PAIRS[:8]), original.predict(PAIRS[:8]))


def test_embedder_int8_stays_close(tiny_embedding_checkpoint):
    from zkernels import Embedder
    folder = tiny_embedding_checkpoint("int8-embed", hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    texts = [p[1] for p in PAIRS[:10]]
    e32 = Embedder.from_pretrained(folder).encode_document(texts, convert_to_tensor=True)
    e8m = Embedder.from_pretrained(folder, quantize="int8")
    e8 = e8m.encode_document(texts, convert_to_tensor=True)
    assert (e8 * e32).sum(1).min() > 0.99
    assert torch.equal(e8m.encode_document(texts[3:4], convert_to_tensor=True)[0], e8[3])


def test_cli_quantize_then_check_quantized(folders, tmp_path, capsys):
    queries, docs = tmp_path / "q.txt", tmp_path / "d.txt"
    queries.write_text("query 1 about planes\nquery 2 about rivers\n")
    docs.write_text("".join(p[1] + "\n" for p in PAIRS[:12]))
    calib = tmp_path / "calib.txt"
    calib.write_text("a short calibration text\nanother one, about rivers and boats\n")
    out = tmp_path / "q8"
    assert main(["quantize", str(folders["base"]), str(out), "--calibration", str(calib), "--alpha", "0.6"]) == 0
    assert json.loads((out / "config.json").read_text())["zkernels_quantization"]["alpha"] == 0.6
    assert main(["quantize", str(folders["base"]), str(out)]) == 1  # OUT exists: refused
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["check-quantized", "--model", str(out), "--queries", str(queries), "--documents", str(docs),
                 "--json", "--top-k", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines[:2]] == ["query 1 about planes", "query 2 about rivers"]
    summary = lines[2]["summary"]
    assert summary["spearman_min"] > 0.8 and 0 < summary["diff_max"] < 0.1
    assert summary["quantized_weight_bytes"] < summary["reference_weight_bytes"]


def test_cli_flags_fail_before_loading(folders, tmp_path, capsys):
    docs = tmp_path / "d.txt"
    docs.write_text("one\ntwo\n")
    rerank = ["rerank", "--model", str(folders["base"]), "--query", "q", "--documents", str(docs)]
    assert main(rerank + ["--quantize", "int4"]) == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert main(rerank + ["--quantize", "fp8"]) == 1
    assert "--quantize fp8" in capsys.readouterr().err or "fp8" in capsys.readouterr().err
    assert main(["quantize", str(folders["base"]), str(tmp_path / "x"), "--alpha", "2"]) == 2
    assert main(rerank + ["--quantize", "int8", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_the_server_and_ray_front_doors_pass_quantize_through(folders):
    from zkernels.ray.predictors import actor_options
    from zkernels.serve.models import load_served_models
    served, _, demo = load_served_models(str(folders["base"]), None, EngineOptions(quantize="int8"))
    assert not demo and served.model.engine.quantize == "int8"
    assert actor_options(EngineOptions(quantize="int8"), "cpu", {}).quantize == "int8"
    kwargs = {"quantize": "int8"}
    assert actor_options(None, "cpu", kwargs).quantize == "int8" and kwargs == {}
    with pytest.raises(ValueError, match="quantize='int8' runs on CPU devices"):
        actor_options(EngineOptions(quantize="int8"), "cuda", {})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block_rows", [512, 5])
def test_the_fused_int8_forward_gives_the_generic_paths_scores_bit_for_bit(folders, dtype, block_rows, monkeypatch):
    """The cpu backend quantizes the linears' inputs inside add+RMSNorm and SwiGLU and applies the row scales
    as the next op reads the matmul's output, a block of rows at a time (5 rows: many blocks, a partial
    last one); the scores are those of the layer-by-layer path, exactly."""
    import zkernels.model
    monkeypatch.setattr(zkernels.model, "INT8_BLOCK_ROWS", block_rows)
    r8 = Reranker.from_pretrained(folders["planted"], quantize="int8", dtype=dtype, backend="cpu")
    forward = r8.engine.forward
    assert forward.fused_int8
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the row blocks run on one thread
        fused = r8.predict(PAIRS, activation_fn="identity")
        forward.fused_int8 = False
        generic = r8.predict(PAIRS, activation_fn="identity")
    finally:
        forward.fused_int8 = True
        torch.set_num_threads(threads)
    assert np.array_equal(fused, generic)
    assert np.array_equal(r8.predict(PAIRS, activation_fn="identity"), generic)  # one call, this thread count


def test_the_fused_int8_forward_checks_token_ids_and_positions(folders):
    from zkernels.packing import plan_batches
    forward = Reranker.from_pretrained(folders["base"], quantize="int8", backend="cpu").engine.forward
    assert forward.fused_int8
    with pytest.raises(ValueError, match="outside the vocabulary"):
        forward.hidden_at_read_rows(plan_batches([[1, 2, 10 ** 7]], [0], 1 << 20)[0])
    too_long = [1] * (forward.config.max_position_embeddings + 1)
    with pytest.raises(ValueError, match="beyond the model's max_position_embeddings"):
        forward.hidden_at_read_rows(plan_batches([too_long], [0], 1 << 30)[0])

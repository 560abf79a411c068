"""zkernels.quantize must be bit-exact with sentence-transformers' quantize_embeddings."""
import numpy as np
import pytest
import torch

from zkernels import quantize

st_quant = pytest.importorskip("sentence_transformers.util.quantization")


def _floats(rng, n, d, dtype=np.float32):
    x = rng.standard_normal((n, d)).astype(dtype)
    x[rng.random((n, d)) < 0.2] = 0.0  # exact zeros: bit must be 0 (value > 0 is the rule)
    x[0, : min(d, 3)] = -0.0
    return x


@pytest.mark.parametrize("precision", ["ubinary", "binary"])
@pytest.mark.parametrize("d", [8, 13, 40, 64, 1024, 2560])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_numpy_bit_exact(precision, d, dtype):
    rng = np.random.default_rng(d)
    x = _floats(rng, 17, d, dtype)
    got = quantize(x, precision)
    want = st_quant.quantize_embeddings(x, precision=precision)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("precision", ["ubinary", "binary"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_cpu_bit_exact(precision, dtype):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(_floats(rng, 9, 100)).to(dtype)
    got = quantize(x, precision)
    assert isinstance(got, torch.Tensor) and got.device == x.device
    want = st_quant.quantize_embeddings(x.float().numpy(), precision=precision)
    np.testing.assert_array_equal(got.numpy(), want)


def test_one_vector_gives_one_code():
    x = np.array([0.5, -1.0, 0.0, 2.0, 3.0, -0.1, 0.0, 1e-30, 7.0], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x), np.array([0b10011001, 0b10000000], dtype=np.uint8))
    np.testing.assert_array_equal(quantize(torch.from_numpy(x)).numpy(), quantize(x))


def test_binary_is_ubinary_minus_128():
    x = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
    u, b = quantize(x, "ubinary"), quantize(x, "binary")
    np.testing.assert_array_equal(b.astype(np.int16), u.astype(np.int16) - 128)


@pytest.mark.parametrize("bad", [np.ones((2, 8), dtype=np.int32), torch.ones(2, 8, dtype=torch.int64),
                                 np.ones((2, 8), dtype=bool)])
def test_non_float_rejected(bad):
    with pytest.raises(ValueError, match="floating-point"):
        quantize(bad)


def test_bad_precision_and_rank():
    x = np.ones((2, 8), np.float32)
    with pytest.raises(ValueError, match="precision"):
        quantize(x, "int8")
    with pytest.raises(ValueError, match="1-D"):
        quantize(np.ones((2, 2, 8), np.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["ubinary", "binary"])
def test_cuda_stays_on_device(precision):
    x = torch.from_numpy(_floats(np.random.default_rng(4), 33, 1024)).cuda()
    got = quantize(x, precision)
    assert got.is_cuda
    np.testing.assert_array_equal(got.cpu().numpy(), st_quant.quantize_embeddings(x.cpu().numpy(), precision=precision))

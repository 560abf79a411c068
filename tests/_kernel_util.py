"""Helpers for the kernel tests: device choice and poisoned output buffers."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def poisoned(shape, dtype, device=DEVICE):
    """An output buffer filled with NaN: any element the kernel fails to write fails the comparison."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def assert_close(actual, expected, atol, rtol, what=""):
    """Compare in float32; NaN anywhere in `actual` (an unwritten poisoned element) fails."""
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    a, e = actual.float(), expected.float()
    assert not torch.isnan(a).any(), f"{what}: NaN in output (unwritten element?)"
    torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")

"""Quantized linear layers for a loaded model: which mode a load runs in, the per-layer quantization the
loader applies as it reads each layer, the smoothing recorded in a checkpoint by `zkernels quantize`, and
the model's weight bytes.

What is quantized: the four linears of each layer (fused q|k|v, o, fused gate|up, down). What is not:
the embedding table, the norms, QK-norm and RoPE, attention, the residual stream, the final norm and the
score rows with their product (float32), so a score's last step is never taken in low precision.

Smoothing (SmoothQuant): Qwen3's inputs to q|k|v and gate|up carry a few channels far larger than the
rest in every token. Dividing channel j of those inputs by s_j and multiplying weight column j by s_j
leaves the product unchanged and evens the channels out; the division is folded into the norm weight
that produces the input (input_layernorm for q|k|v, post_attention_layernorm for gate|up), so it costs
nothing at run time. Calibrated scales (`zkernels quantize`, s_j = max|X_j|^a / max|W_j|^(1-a)) live in
the checkpoint folder (SMOOTHING_FILE) beside the untouched original weights, and the recipe in
config.json under RECIPE_KEY; a float load ignores both. Without them, the scales come from the weights
alone: the norm's gain |g_j| stands for max|X_j| (the normalised input has no preferred channel, so a
channel that is large in every token is one the norm weight makes large; cf. "gamma migration" in Wei et
al., Outlier Suppression), s_j = |g_j|^0.5 / max|W_j|^0.5.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import CheckpointError, read_json
from .kernels.linear import PackedLinear
from .loading import LayerWeights, Qwen3Weights
from .options import QUANTIZE_MODES

RECIPE_KEY = "zkernels_quantization"
SMOOTHING_FILE = "smoothing.safetensors"
LINEARS = ("qkv", "o", "gate_up", "down")
SMOOTHED = {"qkv": "input_norm", "gate_up": "post_norm"}  # linear -> the norm weight that absorbs 1 / s
# The migration strength of the calibration-free scales (None: no smoothing without a calibrated recipe).
NORM_GAIN_ALPHA: float | None = 0.5


@dataclass
class QuantRecipe:
    """What `zkernels quantize` recorded: the mode, and per layer the smoothing scales of q|k|v and gate|up
    (tensor names `layers.{i}.qkv` / `layers.{i}.gate_up`, each [hidden])."""
    quantize: str
    smoothing: dict[str, torch.Tensor] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # alpha, calibration source, tokens seen


def read_recipe(folder: Path | None, hidden_size: int | None = None) -> QuantRecipe | None:
    """The recipe a checkpoint folder records in config.json, with its smoothing scales; None if none."""
    if folder is None or not (Path(folder) / "config.json").is_file():
        return None
    raw = read_json(Path(folder) / "config.json").get(RECIPE_KEY)
    if raw is None:
        return None
    source = f"{folder}/config.json: {RECIPE_KEY}"
    if not isinstance(raw, dict) or raw.get("quantize") not in QUANTIZE_MODES:
        raise CheckpointError(f"{source} must be an object with 'quantize' one of {QUANTIZE_MODES}, got {raw!r:.200}")
    smoothing = {}
    file = raw.get("smoothing_file")
    if file is not None:
        if not isinstance(file, str) or "/" in file or "\\" in file or file in ("", ".", ".."):
            raise CheckpointError(f"{source}: smoothing_file must name a file inside the folder, got {file!r}")
        path = Path(folder) / file
        if not path.is_file():
            raise CheckpointError(f"{source} names {file}, which is missing from {folder}")
        from safetensors.torch import load_file
        try:
            smoothing = load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
        for name, s in smoothing.items():
            bad_shape = s.dim() != 1 or (hidden_size is not None and s.shape[0] != hidden_size)
            if bad_shape or not torch.isfinite(s).all() or not (s > 0).all():
                raise CheckpointError(f"{path}: smoothing scale {name!r} must be [{hidden_size}] finite and "
                                      f"positive, got shape {tuple(s.shape)}")
    return QuantRecipe(raw["quantize"], smoothing, {k: v for k, v in raw.items() if k != "quantize"})


def resolve_quantize(asked: str | None, recipe: QuantRecipe | None) -> str:
    """The mode a load runs in: the one asked for, else the checkpoint's recorded one, else "none"."""
    if asked is not None:
        return asked
    return recipe.quantize if recipe is not None else "none"


def check_quantize_runs(mode: str, device: str) -> None:
    """Raises, before any weight is read, when `mode` cannot run on this machine and device."""
    if mode == "int8":
        from .kernels.linear_int8 import check_int8_cpu
        check_int8_cpu()
    elif mode == "fp8":
        from .kernels.fp8_linear import check_fp8_device
        check_fp8_device(device)


def layer_quantizer(mode: str, dtype: torch.dtype, recipe: QuantRecipe | None = None
                    ) -> Callable[[int, LayerWeights], LayerWeights] | None:
    """The loader's per-layer step for `mode` (None for "none"): each linear quantized, the recipe's
    smoothing folded into the norm weights that feed q|k|v and gate|up."""
    if mode == "none":
        return None
    if mode == "int8":
        from .kernels.linear_int8 import QuantizedLinear as make
    elif mode == "fp8":
        from .kernels.fp8_linear import Fp8Linear as make
    else:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {mode!r}")
    smoothing = recipe.smoothing if recipe is not None else {}
    alpha = NORM_GAIN_ALPHA

    def prepare(i: int, layer: LayerWeights) -> LayerWeights:
        for name in LINEARS:
            s = smoothing.get(f"layers.{i}.{name}")
            if s is None and not smoothing and alpha is not None and name in SMOOTHED:
                s = norm_gain_scales(getattr(layer, SMOOTHED[name]), getattr(layer, name), alpha)
            if s is not None:
                norm = SMOOTHED[name]
                w = getattr(layer, norm)
                setattr(layer, norm, (w.float() / s.to(w.device)).to(dtype))
            setattr(layer, name, make.from_float(getattr(layer, name), smoothing=s))
        return layer

    return prepare


def norm_gain_scales(norm_weight: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """Calibration-free smoothing scales [in]: |g|^alpha / max|W column|^(1 - alpha), floored away from 0."""
    g = norm_weight.float().abs().clamp_min(1e-5)
    # The column maxima a block of rows at a time, in the weight's own dtype (exact: a max only picks):
    # a float32 copy of a whole gate|up weight would raise loading's peak above the bf16 model's.
    w = torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
    for r0 in range(0, weight.shape[0], _COLUMN_MAX_BLOCK_ROWS):
        w = torch.maximum(w, weight[r0:r0 + _COLUMN_MAX_BLOCK_ROWS].abs().amax(dim=0))
    w = w.float().clamp_min(1e-5)
    return (g ** alpha / w ** (1 - alpha)).clamp(1e-4, 1e4)


_COLUMN_MAX_BLOCK_ROWS = 256


def tensor_bytes(t) -> int:
    """Bytes one weight holds: a tensor, a prepacked float layer, or a quantized one (`nbytes`)."""
    if t is None:
        return 0
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, PackedLinear):
        return t.out_features * t.in_features * torch.empty(0, dtype=t.dtype).element_size()
    return int(t.nbytes)


def weight_bytes(weights: Qwen3Weights) -> int:
    """The loaded model's weight bytes: embedding table, every layer, final norm and score rows."""
    total = tensor_bytes(weights.embed) + tensor_bytes(weights.final_norm) + tensor_bytes(weights.score_rows)
    for layer in weights.layers:
        total += sum(tensor_bytes(getattr(layer, f)) for f in LayerWeights.__dataclass_fields__)
    return total

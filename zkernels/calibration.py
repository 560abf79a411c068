"""SmoothQuant calibration: run a checkpoint in float32 over a few texts, record each layer's largest
absolute input per channel to q|k|v and gate|up, and write a checkpoint folder that carries the smoothing
scales beside the original weights (see quantization.py for how a load applies them).

Scale of channel j: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) (Xiao et al., SmoothQuant), with W the
weight columns the channel multiplies; alpha = 0.5 splits the difficulty evenly between activations and
weights, larger alpha moves more of it into the weights.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from .config import Qwen3Config, read_json
from .loading import load_tokenizer, resolve_checkpoint
from .options import EngineOptions
from .quantization import RECIPE_KEY, SMOOTHED, SMOOTHING_FILE
from .scoring import ScoringEngine

DEFAULT_ALPHA = 0.5
MAX_CALIBRATION_TOKENS = 512  # per text: the channels that dominate do so from the first tokens on
# Used when no calibration file is given: short texts of the kinds a reranker reads (questions, passages,
# code, numbers, several languages); the outlier channels are the same for any text.
BUILTIN_TEXTS = (
    "what is the capital of France?",
    "Paris is the capital and most populous city of France, on the Seine.",
    "How do I reset a forgotten password on my laptop?",
    "The mitochondria is the powerhouse of the cell, producing ATP through respiration.",
    "def quicksort(xs):\n    return xs if len(xs) < 2 else quicksort([x for x in xs[1:] if x < xs[0]])",
    "Quarterly revenue rose 12% to $4.3 billion, while operating margin fell to 18.2%.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "量子计算利用叠加和纠缠来处理信息。",
    "Patients with type 2 diabetes should monitor blood glucose and HbA1c levels regularly.",
    "The court held that the contract was void for lack of consideration.",
    "Best hiking trails near Seattle with waterfalls and mountain views",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 10;",
)


class _ChannelMax:
    """Stands in for a linear weight in the forward: records max |x| per input channel, then multiplies."""

    row_invariant = True  # zkernels.model.linear hands it the rows as they are; the inner call pads

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self.amax = torch.zeros(weight.shape[1], dtype=torch.float32, device=weight.device)

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        from .model import linear
        if x.shape[0]:
            self.amax = torch.maximum(self.amax, x.detach().abs().amax(dim=0).float())
        return linear(x, self.weight, bias)


def smoothing_scales(x_amax: torch.Tensor, w_amax: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = x_amax^alpha / w_amax^(1 - alpha), per channel; a channel never seen (x_amax 0) keeps s = 1."""
    x, w = x_amax.double().clamp_min(1e-5), w_amax.double().clamp_min(1e-5)
    s = (x ** alpha / w ** (1 - alpha)).clamp(1e-4, 1e4)
    return torch.where(x_amax > 0, s, torch.ones_like(s)).float()


def calibrate(folder: Path, texts: Sequence[str], alpha: float = DEFAULT_ALPHA,
              max_tokens: int = MAX_CALIBRATION_TOKENS, show_progress: bool | None = None
              ) -> tuple[dict[str, torch.Tensor], int]:
    """Smoothing scales {"layers.{i}.qkv" / "layers.{i}.gate_up": [hidden]} from a float32 forward over
    `texts` (each tokenized alone, at most max_tokens tokens), and the number of tokens seen."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("calibration needs at least one non-empty text")
    config = Qwen3Config.from_file(folder / "config.json")
    tokenizer = load_tokenizer(folder)
    engine = ScoringEngine(folder, config, [], options=EngineOptions(dtype="float32", backend="torch",
                                                                      quantize="none", show_progress=show_progress))
    observers = {}
    for i, layer in enumerate(engine.forward.weights.layers):
        for name in SMOOTHED:
            observers[f"layers.{i}.{name}"] = obs = _ChannelMax(getattr(layer, name))
            setattr(layer, name, obs)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    prompts = [p for p in prompts if p]
    for _ in engine.iter_batches(prompts, list(range(len(prompts))), use_prefix_cache=False,
                                 show_progress_bar=show_progress, desc="Calibrating"):
        pass
    scales = {name: smoothing_scales(obs.amax, obs.weight.float().abs().amax(dim=0), alpha)
              for name, obs in observers.items()}
    return scales, sum(len(p) for p in prompts)


def write_quantized_checkpoint(source: str | os.PathLike, out: str | os.PathLike, *, quantize: str = "int8",
                               texts: Sequence[str] | None = None, calibration_name: str | None = None,
                               alpha: float = DEFAULT_ALPHA, show_progress: bool | None = None) -> Path:
    """Calibrates `source` and writes `out`: the source's files (hard links where the file system allows,
    else copies), config.json with the recipe under RECIPE_KEY, and the scales in SMOOTHING_FILE.
    `from_pretrained(out)` then loads in `quantize` mode; quantize="none" there loads the original model."""
    from safetensors.torch import save_file

    folder = resolve_checkpoint(source)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose a new output folder")
    if quantize not in ("int8", "fp8"):
        raise ValueError(f"quantize must be 'int8' or 'fp8', got {quantize!r}")
    if texts is None:
        texts, calibration_name = BUILTIN_TEXTS, "built-in texts"
    scales, n_tokens = calibrate(folder, texts, alpha, show_progress=show_progress)
    config = read_json(folder / "config.json")
    config[RECIPE_KEY] = {"quantize": quantize, "method": "smoothquant", "alpha": alpha,
                          "smoothing_file": SMOOTHING_FILE, "calibration": calibration_name or "texts",
                          "calibration_texts": len(texts), "calibration_tokens": n_tokens}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for path in folder.rglob("*"):
        if path.is_dir() or path.name == "config.json" and path.parent == folder:
            continue
        target = tmp / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path.resolve(), target)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(path, target)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in scales.items()}, str(tmp / SMOOTHING_FILE))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out

"""Reads a Qwen3 checkpoint folder straight to the target device and dtype.

Only what scoring needs is kept: the layers, the final norm, the embedding table, and of the LM head
just the vocabulary rows the score reads (tied or not), or a sequence-classification conversion's
score.weight. Q/K/V and gate/up projections are concatenated
at load so each runs as one matmul.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import CheckpointError, Qwen3Config, read_json

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


def resolve_dtype(dtype, device: str) -> torch.dtype:
    """The model dtype: the one asked for (a torch dtype or its name), else float32 on CPU, bfloat16 on CUDA."""
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def load_tokenizer(folder: Path):
    """The checkpoint folder's own tokenizer (transformers' AutoTokenizer), with a CheckpointError naming
    the folder when it has none or it cannot be read."""
    from transformers import AutoTokenizer
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CheckpointError(f"no tokenizer files (tokenizer.json / tokenizer_config.json) in {folder}")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except Exception as e:
        raise CheckpointError(f"could not load the tokenizer in {folder}: {type(e).__name__}: {e}") from None


def resolve_checkpoint(path_or_id: str | os.PathLike, allow_patterns: Sequence[str] | None = None) -> Path:
    """A local folder as is; otherwise a Hugging Face hub id downloaded with huggingface_hub."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists()
    if not looks_like_hub_id:
        raise CheckpointError(f"checkpoint folder not found: {text}")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(text, allow_patterns=list(allow_patterns) if allow_patterns else None))
    except Exception as e:  # offline, unknown repo, gated, ...
        raise CheckpointError(f"{text!r} is not a local folder, and downloading it from the Hugging Face hub "
                              f"failed: {type(e).__name__}: {e}") from None


def shard_files(folder: Path) -> dict[str, Path]:
    """tensor name -> file holding it, from the shard index or the single file's header."""
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = _read_weight_map(index)
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise CheckpointError(f"{index} names shard files that are missing: {missing}")
        return {name: folder / f for name, f in weight_map.items()}
    single = folder / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}")
    from safetensors import safe_open
    try:
        with safe_open(str(single), framework="pt") as f:
            return {name: single for name in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{single} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def _read_weight_map(index: Path) -> dict[str, str]:
    """The index's weight_map, checked: a mapping of tensor name to the plain name of a file inside the
    checkpoint folder. The index is data from wherever the checkpoint came from, so a shard path that
    leaves the folder (absolute, `..`, a subfolder) is refused rather than opened."""
    raw = read_json(index)
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index}: 'weight_map' must be a mapping of tensor name to shard file name, got "
                              f"{type(weight_map).__name__}")
    for name, file in weight_map.items():
        if not isinstance(file, str):
            raise CheckpointError(f"{index}: the shard of tensor {name!r} must be a file name (a string), got "
                                  f"{type(file).__name__} {file!r:.60}")
        if not file or file in (".", "..") or "/" in file or "\\" in file or Path(file).is_absolute():
            raise CheckpointError(f"{index}: the shard of tensor {name!r} is {file!r}, not the name of a file "
                                  f"inside the checkpoint folder")
    return weight_map


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv: torch.Tensor            # [q_width + 2 kv_width, hidden]
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor         # [head_dim]
    k_norm: torch.Tensor
    o: torch.Tensor              # [hidden, q_width]
    o_bias: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up: torch.Tensor        # [2 intermediate, hidden]
    down: torch.Tensor           # [hidden, intermediate]


@dataclass
class Qwen3Weights:
    embed: torch.Tensor          # [vocab, hidden]
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    score_rows: torch.Tensor     # [n_rows, hidden]: the LM-head rows a score reads


class _TensorReader:
    """Fetches named tensors across shards, checking shapes, with errors naming file and tensor."""

    def __init__(self, folder: Path, device, dtype, show_progress: bool | None):
        self._init(shard_files(folder), device, dtype, show_progress)

    def _init(self, files, device, dtype, show_progress):
        self.files = files
        self.device, self.dtype = str(device), dtype
        self.prefix = "model." if "model.embed_tokens.weight" in self.files else ""
        self._open = {}
        self._progress = None
        n_files = len(set(self.files.values()))
        if show_progress is not False and n_files > 1:
            from tqdm.auto import tqdm
            self._progress = tqdm(total=n_files, desc="Loading shards", unit="shard",
                                  disable=None if show_progress is None else False)

    def _slice(self, name: str):
        return self._handle(self.files[name]).get_slice(name)

    def _handle(self, file: Path):
        if file not in self._open:
            from safetensors import safe_open
            try:
                self._open[file] = safe_open(str(file), framework="pt", device=self.device)
            except Exception as e:
                raise CheckpointError(f"{file} is not a readable safetensors file (truncated or corrupt?): "
                                      f"{e}") from None
            if self._progress is not None:
                self._progress.update(1)
        return self._open[file]

    def name(self, short: str) -> str:
        return short if short.startswith(("lm_head", "score.")) else self.prefix + short

    def has(self, short: str) -> bool:
        return self.name(short) in self.files

    def stored_dtype(self, short: str) -> torch.dtype | None:
        """The dtype the tensor is stored in (None where the file does not say in a form known here)."""
        name = self.name(short)
        if name not in self.files:
            return None
        try:
            stored = self._slice(name).get_dtype()
        except Exception:
            return None
        if isinstance(stored, torch.dtype):
            return stored
        return {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}.get(str(stored))

    def get(self, short: str, shape: tuple[int, ...], rows: Sequence[int] | None = None,
            dtype: torch.dtype | None = None) -> torch.Tensor:
        name = self.name(short)
        if name not in self.files:
            raise CheckpointError(f"tensor {name!r} is missing from the checkpoint")
        file = self.files[name]
        try:
            sl = self._slice(name)
            found = tuple(sl.get_shape())
            if found != tuple(shape):
                raise CheckpointError(f"tensor {name!r} in {file.name} has shape {list(found)}, but config.json "
                                      f"implies {list(shape)}")
            if rows is None:
                tensor = sl[:]
            else:  # only the rows asked for: never the whole LM head
                tensor = torch.cat([sl[r:r + 1] for r in rows])
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"could not read tensor {name!r} from {file}: {e}") from None
        return tensor.to(device=self.device, dtype=dtype or self.dtype)

    def close(self):
        self._open.clear()
        if self._progress is not None:
            self._progress.close()


class _Sliceable:
    """A tensor seen through safetensors' slice interface (get_shape, [a:b])."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def get_shape(self):
        return list(self.tensor.shape)

    def get_dtype(self):
        return self.tensor.dtype

    def __getitem__(self, index):
        return self.tensor[index]


class _StateDictReader(_TensorReader):
    """The same checks over an in-memory state dict (a transformers model's), e.g. for benchmarks that
    must score with exactly the weights of a model they already hold."""

    def __init__(self, tensors, device, dtype):
        self.tensors = tensors
        self._init({name: Path("<state dict>") for name in tensors}, device, dtype, False)

    def _slice(self, name: str):
        return _Sliceable(self.tensors[name])


# The narrowest of two float dtypes that holds a value of either exactly: float32 (wider than both 16-bit
# types), else the 16-bit type both are.
def _lossless_narrowest(stored: torch.dtype | None, target: torch.dtype) -> torch.dtype:
    if stored in (torch.bfloat16, torch.float16) and target == torch.float32:
        return stored
    return target


def load_qwen3_weights(source: Path | Mapping[str, torch.Tensor], config: Qwen3Config,
                       score_token_ids: Sequence[int], device="cpu", dtype=torch.float32,
                       show_progress: bool | None = None,
                       prepare_layer: Callable[[int, LayerWeights], LayerWeights] | None = None) -> Qwen3Weights:
    """source: a checkpoint folder, or a state dict (tensor name -> tensor) with the same names.

    prepare_layer(i, layer), when given, transforms each layer as soon as it is read (quantization), so
    that at most one layer is ever held in `dtype` beside the prepared ones; the embedding table is then
    kept in its stored precision where that is narrower than `dtype` and holds the same values (a bf16
    table for a float32 model: rows are converted as the forward reads them), and the score rows in
    float32."""
    c = config
    for t in score_token_ids:
        if not 0 <= t < c.vocab_size:
            raise CheckpointError(f"score token id {t} is outside the vocabulary (size {c.vocab_size})")
    if isinstance(source, Mapping):
        reader = _StateDictReader(source, device, dtype)
    else:
        reader = _TensorReader(source, device, dtype, show_progress)
    try:
        embed_dtype = dtype if prepare_layer is None else _lossless_narrowest(
            reader.stored_dtype("embed_tokens.weight"), dtype)
        embed = reader.get("embed_tokens.weight", (c.vocab_size, c.hidden_size), dtype=embed_dtype)
        # a quantized load reads each linear in its stored precision where that is exact (a bf16
        # checkpoint: bf16), so the one layer held before quantization is no larger than in the checkpoint
        linear_dtype = None if prepare_layer is None else _lossless_narrowest(
            reader.stored_dtype("layers.0.self_attn.q_proj.weight"), dtype)
        layers = []
        for i in range(c.num_layers):
            layer = _load_layer(reader, c, i, linear_dtype)
            layers.append(layer if prepare_layer is None else prepare_layer(i, layer))
        final_norm = reader.get("norm.weight", (c.hidden_size,))
        if c.classifier:  # a sequence-classification conversion: its one score row, and no LM head
            if reader.has("score.bias"):
                raise CheckpointError("tensor 'score.bias' is present; zkernels scores with score.weight alone")
            score_rows = reader.get("score.weight", (1, c.hidden_size))
        elif c.tie_word_embeddings or not reader.has("lm_head.weight"):
            if not c.tie_word_embeddings and score_token_ids:
                raise CheckpointError("tensor 'lm_head.weight' is missing and tie_word_embeddings is false")
            score_rows = embed[list(score_token_ids)].clone()
        else:
            score_rows = reader.get("lm_head.weight", (c.vocab_size, c.hidden_size), rows=score_token_ids)
    finally:
        reader.close()
    if prepare_layer is not None:
        score_rows = score_rows.float()
    return Qwen3Weights(embed=embed, layers=layers, final_norm=final_norm, score_rows=score_rows)


def _load_layer(reader: _TensorReader, c: Qwen3Config, i: int, linear_dtype: torch.dtype | None = None
                ) -> LayerWeights:
    """Layer i; its linear weights in linear_dtype (default: the reader's dtype)."""
    p = f"layers.{i}."
    h, d = c.hidden_size, c.head_dim
    q = reader.get(p + "self_attn.q_proj.weight", (c.q_width, h), dtype=linear_dtype)
    k = reader.get(p + "self_attn.k_proj.weight", (c.kv_width, h), dtype=linear_dtype)
    v = reader.get(p + "self_attn.v_proj.weight", (c.kv_width, h), dtype=linear_dtype)
    qkv_bias = o_bias = None
    if c.attention_bias:
        qkv_bias = torch.cat([reader.get(p + f"self_attn.{n}_proj.bias", (w,))
                              for n, w in (("q", c.q_width), ("k", c.kv_width), ("v", c.kv_width))])
        o_bias = reader.get(p + "self_attn.o_proj.bias", (h,))
    gate = reader.get(p + "mlp.gate_proj.weight", (c.intermediate_size, h), dtype=linear_dtype)
    up = reader.get(p + "mlp.up_proj.weight", (c.intermediate_size, h), dtype=linear_dtype)
    return LayerWeights(
        input_norm=reader.get(p + "input_layernorm.weight", (h,)),
        qkv=torch.cat((q, k, v)), qkv_bias=qkv_bias,
        q_norm=reader.get(p + "self_attn.q_norm.weight", (d,)),
        k_norm=reader.get(p + "self_attn.k_norm.weight", (d,)),
        o=reader.get(p + "self_attn.o_proj.weight", (h, c.q_width), dtype=linear_dtype), o_bias=o_bias,
        post_norm=reader.get(p + "post_attention_layernorm.weight", (h,)),
        gate_up=torch.cat((gate, up)),
        down=reader.get(p + "mlp.down_proj.weight", (h, c.intermediate_size), dtype=linear_dtype),
    )

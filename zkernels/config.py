"""Qwen3 shape description, read from a checkpoint's config.json and checked before any weight loads."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen3Model", "Qwen3ForSequenceClassification")
CLASSIFIER_ARCHITECTURE = "Qwen3ForSequenceClassification"  # score.weight [1, hidden] instead of an LM head


class CheckpointError(ValueError):
    """A checkpoint folder that zkernels cannot serve; the message names the file or tensor."""


def read_json(path: Path):
    """A checkpoint's JSON file; malformed JSON is a CheckpointError naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    classifier: bool = False  # a Qwen3ForSequenceClassification conversion: the score row is score.weight

    @property
    def q_width(self) -> int:  # 32 x 128 = 4096 for Qwen3-4B: not the hidden size
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_file(cls, path: str | Path) -> Qwen3Config:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no config.json in {path.parent}: a checkpoint folder needs the model's "
                                  f"config.json (is this the right folder?)")
        return cls.from_dict(read_json(path), source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> Qwen3Config:
        model_type = raw.get("model_type")
        if model_type != "qwen3":
            raise CheckpointError(f"{source}: model_type is {model_type!r}; zkernels serves Qwen3 checkpoints "
                                  f"(model_type 'qwen3') only")
        archs = raw.get("architectures") or []
        if archs and not any(a in SUPPORTED_ARCHITECTURES for a in archs):
            raise CheckpointError(f"{source}: architectures {archs} are not among {SUPPORTED_ARCHITECTURES}")
        classifier = CLASSIFIER_ARCHITECTURE in archs
        if classifier:
            n_labels = raw.get("num_labels", len(raw.get("id2label") or {0: None}))
            if n_labels != 1:
                raise CheckpointError(f"{source}: a {CLASSIFIER_ARCHITECTURE} reranker must have one label "
                                      f"(score.weight [1, hidden]); this one has {n_labels}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in raw]
        if missing:
            raise CheckpointError(f"{source}: missing keys {missing}")
        if raw.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{source}: hidden_act {raw['hidden_act']!r} is not supported (Qwen3 uses 'silu')")
        if raw.get("use_sliding_window"):
            raise CheckpointError(f"{source}: sliding-window attention is not supported")
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in (None, "default"):
            raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported (only the default RoPE)")
        rope_theta = raw.get("rope_theta", rope.get("rope_theta", 10000.0))
        num_heads = int(raw["num_attention_heads"])
        num_kv_heads = int(raw.get("num_key_value_heads") or num_heads)
        head_dim = int(raw.get("head_dim") or raw["hidden_size"] // num_heads)
        if num_heads % num_kv_heads:
            raise CheckpointError(f"{source}: num_attention_heads {num_heads} is not a multiple of "
                                  f"num_key_value_heads {num_kv_heads}")
        if head_dim % 2:
            raise CheckpointError(f"{source}: head_dim {head_dim} must be even for rotary embeddings")
        return cls(
            vocab_size=int(raw["vocab_size"]), hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]), num_layers=int(raw["num_hidden_layers"]),
            num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)), rope_theta=float(rope_theta),
            max_position_embeddings=int(raw.get("max_position_embeddings", 40960)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=bool(raw.get("attention_bias", False)), classifier=classifier,
        )

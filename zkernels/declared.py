"""What a checkpoint folder declares for sentence-transformers, read defensively.

- 1_LogitScore/config.json (a CrossEncoder over a causal LM): the score token ids.
- config_sentence_transformers.json "activation_fn" (a CrossEncoder's activation, a dotted torch path),
  or the older config.json {"sentence_transformers": {"activation_fn": ...}}.
- sentence_bert_config.json (sentence-transformers 6.x): the input modalities ("message" means every
  text goes through the tokenizer's chat template) and the chat-template kwargs.

Activations: None (the recipe's default), a callable on a float32 tensor of raw scores, or a name:
"sigmoid", "identity", "zerank" (sigmoid(x / 5)), or a dotted torch path such as
"torch.nn.modules.linear.Identity" (only torch's, as sentence-transformers loads them without
trust_remote_code).
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import CheckpointError

LOGIT_SCORE_CONFIG = Path("1_LogitScore") / "config.json"
ST_CONFIG = "config_sentence_transformers.json"
SBERT_CONFIG = "sentence_bert_config.json"


def _zerank_activation(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x / 5.0)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid, "identity": _identity, "zerank": _zerank_activation}


def resolve_activation(fn, source: str = "activation_fn"):
    """None, a callable, a name in ACTIVATIONS or a dotted torch path -> None or a callable."""
    if fn is None or callable(fn):
        return fn
    if not isinstance(fn, str):
        raise TypeError(f"{source} must be None, a callable or a name, got {type(fn).__name__}")
    if fn in ACTIVATIONS:
        return ACTIVATIONS[fn]
    if fn.startswith("torch."):
        module, _, name = fn.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError, TypeError) as e:
            raise ValueError(f"{source}: cannot build {fn!r}: {e}") from None
    raise ValueError(f"{source}: unknown activation {fn!r}; pass a callable, one of {sorted(ACTIVATIONS)} or a "
                     f"torch path such as 'torch.nn.modules.linear.Identity'")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def _json_object(path: Path) -> dict:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


@dataclass
class LogitScore:
    true_token_id: int
    false_token_id: int | None = None


def read_logit_score(folder: Path) -> LogitScore | None:
    path = folder / LOGIT_SCORE_CONFIG
    if not path.is_file():
        return None
    raw = _json_object(path)
    ids = {}
    for key in ("true_token_id", "false_token_id"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise CheckpointError(f"{path}: {key} must be a token id (a non-negative int), got {value!r}")
        ids[key] = value
    if ids["true_token_id"] is None:
        raise CheckpointError(f"{path} declares no true_token_id")
    return LogitScore(**ids)


def read_declared_activation(folder: Path) -> str | None:
    """The activation path a CrossEncoder would load, or None when the folder declares none."""
    st = folder / ST_CONFIG
    if st.is_file():
        value = _json_object(st).get("activation_fn")
        if value is not None:
            if not isinstance(value, str):
                raise CheckpointError(f"{st}: activation_fn must be a string, got {value!r}")
            return value
    cfg = folder / "config.json"
    if cfg.is_file():
        legacy = _json_object(cfg).get("sentence_transformers")
        if isinstance(legacy, dict) and isinstance(legacy.get("activation_fn"), str):
            return legacy["activation_fn"]
    return None


@dataclass
class InputSpec:
    """sentence_bert_config.json's description of how inputs reach the transformer."""
    modalities: list[str] = field(default_factory=lambda: ["text"])
    message_format: str = "auto"
    template_kwargs: dict = field(default_factory=dict)  # forwarded to apply_chat_template

    @property
    def uses_messages(self) -> bool:
        """sentence-transformers turns every input into chat messages when the modality is declared."""
        return "message" in self.modalities


def read_input_spec(folder: Path) -> InputSpec:
    spec = InputSpec()
    path = folder / SBERT_CONFIG
    if not path.is_file():
        return spec
    raw = _json_object(path)
    modality = raw.get("modality_config")
    if modality is not None:
        if not isinstance(modality, dict):
            raise CheckpointError(f"{path}: modality_config must be an object")
        spec.modalities = list(modality)
        message = modality.get("message")
        if isinstance(message, dict):
            spec.message_format = message.get("format", "auto")
            if spec.message_format not in ("auto", "flat", "structured"):
                raise CheckpointError(f"{path}: message format {spec.message_format!r} is not one of "
                                      f"'auto', 'flat', 'structured'")
    processing = raw.get("processing_kwargs") or {}
    if not isinstance(processing, dict):
        raise CheckpointError(f"{path}: processing_kwargs must be an object")
    template = processing.get("chat_template") or {}
    if not isinstance(template, dict):
        raise CheckpointError(f"{path}: processing_kwargs.chat_template must be an object")
    if template.get("restore_suffix", True) is not True:
        raise CheckpointError(f"{path}: restore_suffix=false is not supported (zkernels always keeps the chat "
                              f"template's suffix when it cuts a text)")
    spec.template_kwargs = {k: v for k, v in template.items() if k != "restore_suffix"}
    return spec

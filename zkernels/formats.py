"""Prompt formats: how a (query, document) pair becomes token ids, and how logits become a score.

Each format reproduces its reference recipe's tokenization exactly:
- zerank: the tokenizer's chat template (system = query, user = document, add_generation_prompt), the
  whole prompt tokenized at once; score = sigmoid(logit("Yes") / 5).
- qwen3-reranker: fixed prefix ids + ids of "<Instruct>: ...\n<Query>: ...\n<Document>: ..." + fixed
  suffix ids, tokenized separately and concatenated; score = softmax([logit("no"), logit("yes")])[1].
Over-long prompts lose document tokens from the end (never the template's suffix) or, with
truncate=False, raise.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

FORMATS = ("zerank", "qwen3-reranker")

QWEN3_RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

ZERANK_QUERY_CHARS = 2_000
ZERANK_DOCUMENT_CHARS = 10_000
ZERANK_TEMPERATURE = 5.0
# What Qwen's chat template renders for (system, user, generation prompt); used when a tokenizer has no
# chat template of its own.
CHATML_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass
class EncodedPrompts:
    ids: list[list[int]]
    groups: list[int]        # prompts with the same group share their query's prefix


def single_token_id(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"the tokenizer splits {word!r} into {len(ids)} tokens {ids}; the score needs it "
                         f"to be one token (is this a Qwen tokenizer?)")
    return ids[0]


def _fit(ids: list[int], n_tail: int, n_head: int, max_length: int, truncate: bool, where: str) -> tuple[list[int], bool]:
    """Cuts document tokens (just before the n_tail suffix tokens) so len(ids) <= max_length."""
    if len(ids) <= max_length:
        return ids, False
    if not truncate:
        raise ValueError(f"{where}: the prompt is {len(ids)} tokens, over max_length={max_length}; "
                         f"pass truncate=True to cut the document's end, or raise max_length")
    if n_head + n_tail > max_length:
        raise ValueError(f"{where}: the prompt without any document is already {n_head + n_tail} tokens, "
                         f"over max_length={max_length}; shorten the query or raise max_length")
    return ids[:max_length - n_tail] + ids[len(ids) - n_tail:], True


class PromptFormat:
    name: str
    score_words: tuple[str, ...]
    qwen_score_ids: tuple[int, ...]  # the score words' ids in Qwen's vocabulary

    def __init__(self, tokenizer):
        """tokenizer None: a scorer of already-tokenized prompts (score_token_ids only), with Qwen's ids."""
        self.tokenizer = tokenizer
        self.score_token_ids = ([single_token_id(tokenizer, w) for w in self.score_words] if tokenizer is not None
                                else list(self.qwen_score_ids))

    def encode(self, pairs: Sequence[tuple[str, str]], max_length: int, truncate: bool = True,
               instruction: str | None = None) -> EncodedPrompts:
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [n, len(score_words)] float32 -> scores [n]."""
        raise NotImplementedError

    @staticmethod
    def _group_ids(keys: Sequence[str]) -> list[int]:
        index: dict[str, int] = {}
        return [index.setdefault(k, len(index)) for k in keys]

    @staticmethod
    def _warn_truncated(n: int, max_length: int):
        if n:
            warnings.warn(f"{n} prompt(s) were longer than max_length={max_length} tokens and lost the end of "
                          f"their document (pass truncate=False to raise instead)", stacklevel=3)


class ZerankFormat(PromptFormat):
    name = "zerank"
    score_words = ("Yes",)
    qwen_score_ids = (9454,)

    def __init__(self, tokenizer):
        super().__init__(tokenizer)
        if tokenizer is None:
            return
        pieces, exact = self._template_pieces(tokenizer)
        self._pieces = pieces if exact else None
        self.tail_ids = tokenizer(pieces[2], add_special_tokens=False)["input_ids"]

    @staticmethod
    def _template_pieces(tokenizer) -> tuple[tuple[str, str, str], bool]:
        """(before query, between query and document, after document) as the chat template renders them,
        and whether pasting texts between them reproduces the template exactly.

        Rendering the Jinja template per pair is slow; we render once with sentinels, split, and check the
        split reproduces a real rendering. If it does not (a template that transforms content), every pair
        is rendered through the template instead (_pieces is None).
        """
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHATML_TEMPLATE
        q_mark, d_mark = "\ue000QUERY\ue000", "\ue001DOCUMENT\ue001"
        text = ZerankFormat._render_with_template(tokenizer, q_mark, d_mark)
        if text.count(q_mark) != 1 or text.count(d_mark) != 1 or text.index(q_mark) > text.index(d_mark):
            raise ValueError("the tokenizer's chat template does not render the system and user messages in order")
        before, rest = text.split(q_mark)
        between, after = rest.split(d_mark)
        q, d = "what is\nthis?", "  a  document\n\twith tabs "
        exact = ZerankFormat._render_with_template(tokenizer, q, d) == before + q + between + d + after
        return (before, between, after), exact

    @staticmethod
    def _render_with_template(tokenizer, query: str, document: str) -> str:
        return tokenizer.apply_chat_template([{"role": "system", "content": query}, {"role": "user", "content": document}],
                                             tokenize=False, add_generation_prompt=True)

    @staticmethod
    def clip(query: str, document: str) -> tuple[str, str]:
        return query[:ZERANK_QUERY_CHARS].strip(), document[:ZERANK_DOCUMENT_CHARS].strip()

    def render(self, query: str, document: str) -> str:
        """The reference prompt text for one pair (after the reference's clipping and stripping)."""
        query, document = self.clip(query, document)
        if self._pieces is None:
            return self._render_with_template(self.tokenizer, query, document)
        before, between, after = self._pieces
        return before + query + between + document + after

    def encode(self, pairs, max_length, truncate=True, instruction=None) -> EncodedPrompts:
        if instruction is not None:
            raise ValueError("the zerank format takes no instruction")
        texts = [self.render(q, d) for q, d in pairs]
        ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        n_tail, n_truncated = len(self.tail_ids), 0
        head_len: dict[str, int] = {}
        for i, (q, _) in enumerate(pairs):
            if ids[i][len(ids[i]) - n_tail:] != self.tail_ids:
                raise RuntimeError(f"pairs[{i}]: the prompt's tokens do not end with the template's suffix "
                                   f"{self.tail_ids}; cannot truncate safely")
            if len(ids[i]) > max_length:
                if q not in head_len:
                    head_len[q] = len(self.tokenizer(self.render(q, ""), add_special_tokens=True)["input_ids"]) - n_tail
                ids[i], cut = _fit(ids[i], n_tail, head_len[q], max_length, truncate, f"pairs[{i}]")
                n_truncated += cut
        self._warn_truncated(n_truncated, max_length)
        return EncodedPrompts(ids, self._group_ids([self.clip(q, "")[0] for q, _ in pairs]))

    def scores(self, logits):
        return torch.sigmoid(logits[:, 0] / ZERANK_TEMPERATURE)


class Qwen3RerankerFormat(PromptFormat):
    name = "qwen3-reranker"
    score_words = ("no", "yes")
    qwen_score_ids = (2152, 9693)

    def __init__(self, tokenizer, instruction: str | None = None):
        super().__init__(tokenizer)
        self.instruction = instruction or QWEN3_RERANKER_DEFAULT_INSTRUCTION
        if tokenizer is None:
            return
        self.prefix_ids = tokenizer(QWEN3_RERANKER_PREFIX, add_special_tokens=False)["input_ids"]
        self.suffix_ids = tokenizer(QWEN3_RERANKER_SUFFIX, add_special_tokens=False)["input_ids"]

    @staticmethod
    def content(instruction: str, query: str, document: str) -> str:
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"

    def render(self, query: str, document: str, instruction: str | None = None) -> str:
        return QWEN3_RERANKER_PREFIX + self.content(instruction or self.instruction, query, document) + QWEN3_RERANKER_SUFFIX

    def encode(self, pairs, max_length, truncate=True, instruction=None) -> EncodedPrompts:
        instruction = instruction or self.instruction
        contents = [self.content(instruction, q, d) for q, d in pairs]
        body = self.tokenizer(contents, add_special_tokens=False)["input_ids"]
        ids, n_truncated = [], 0
        head_len: dict[str, int] = {}
        for i, (q, _) in enumerate(pairs):
            prompt = self.prefix_ids + body[i] + self.suffix_ids
            if len(prompt) > max_length:
                if q not in head_len:
                    head_len[q] = len(self.prefix_ids) + len(self.tokenizer(
                        self.content(instruction, q, ""), add_special_tokens=False)["input_ids"])
                prompt, cut = _fit(prompt, len(self.suffix_ids), head_len[q], max_length, truncate, f"pairs[{i}]")
                n_truncated += cut
            ids.append(prompt)
        self._warn_truncated(n_truncated, max_length)
        return EncodedPrompts(ids, self._group_ids([self.content(instruction, q, "") for q, _ in pairs]))

    def scores(self, logits):
        return torch.softmax(logits, dim=-1)[:, 1]


def make_format(name: str, tokenizer, instruction: str | None = None) -> PromptFormat:
    if name == "zerank":
        if instruction is not None:
            raise ValueError("the zerank format takes no instruction")
        return ZerankFormat(tokenizer)
    if name == "qwen3-reranker":
        return Qwen3RerankerFormat(tokenizer, instruction)
    raise ValueError(f"unknown format {name!r}; choose one of {FORMATS}")

"""Prompt formats: how a (query, document) pair becomes token ids, and how logits become a score.

Each format reproduces its reference recipe's tokenization exactly:
- zerank (modeling_zeranker.py): the tokenizer's chat template (system = query, user = document,
  add_generation_prompt), query clipped to 2,000 and document to 10,000 characters then stripped
  (clip_chars=False: stripped only, as ZeroEntropy's serving code does), the whole prompt tokenized at
  once; score = sigmoid(logit("Yes") / 5).
- qwen3-reranker (the model card): fixed prefix ids + ids of "<Instruct>: ...\n<Query>: ...\n<Document>:
  ..." + fixed suffix ids, tokenized separately and concatenated, at most 8,192 tokens; score =
  softmax([logit("no"), logit("yes")])[1].
- sentence-transformers (what `CrossEncoder(folder).predict` does for a causal-LM checkpoint saved by
  sentence-transformers 6.x): the pair as messages with roles "query" and "document" rendered by the
  folder's chat template with the chat-template kwargs its sentence_bert_config.json declares, no
  clipping or stripping; raw score = the LogitScore module's logit("true") (- logit("false")), then the
  activation config_sentence_transformers.json declares (sigmoid when none).
Over-long prompts lose content tokens from the end (the document first, then the query if the query
alone is too long), never the template's fixed head or suffix, with a warning that counts them; with
truncate=False they raise.

`PromptFormat.query_pairs` builds the prompts of one query with many documents from tokens: the
query's part is tokenized once, each document's part once, and each prompt is their concatenation cut
as the recipe cuts it, so the work is linear in the text, not in query length x documents. It splits
each prompt where the tokenizer provably starts afresh (right after the special token that closes the
query's chat message; before "<Document>" in the Qwen3-Reranker content), and checks once per format
on awkward samples that the split gives the whole prompt's tokens; where it does not (another
tokenizer), each pair is tokenized whole, as `encode` does.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

FORMATS = ("zerank", "qwen3-reranker", "sentence-transformers")

QWEN3_RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN3_RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN3_RERANKER_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_RERANKER_MAX_LENGTH = 8192  # the model card's `max_length = 8192`: prompts are cut there

ZERANK_QUERY_CHARS = 2_000
ZERANK_DOCUMENT_CHARS = 10_000
ZERANK_TEMPERATURE = 5.0
ZERANK_QWEN_YES = 9454  # "Yes" in Qwen's vocabulary (not "yes", 9693)
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


class PromptTooLong(ValueError):
    """A prompt over the token limit, with truncation turned off (truncate=False)."""


def fit_to_length(ids: list[int], n_tail: int, n_fixed_head: int, max_length: int, truncate: bool, where: str
         ) -> tuple[list[int], bool]:
    """Cuts content tokens (just before the n_tail suffix tokens) so len(ids) <= max_length. The
    template's fixed head (n_fixed_head tokens) and suffix are never cut: the references keep them and
    cut the content (Qwen3-Reranker truncates the content's ids; sentence-transformers restores the
    template suffix after right-truncation)."""
    if len(ids) <= max_length:
        return ids, False
    if not truncate:
        raise PromptTooLong(f"{where}: the prompt is {len(ids)} tokens, over max_length={max_length}; "
                         f"pass truncate=True to cut the content's end, or raise max_length")
    if n_fixed_head + n_tail >= max_length:
        raise PromptTooLong(f"{where}: the prompt template alone is {n_fixed_head + n_tail} tokens, leaving no "
                            f"room for content under max_length={max_length}; raise max_length")
    return ids[:max_length - n_tail] + ids[len(ids) - n_tail:], True


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class ChatTemplateSlots:
    """Texts pasted into a chat template: `build(*texts)` gives the messages, rendered with `kwargs`.

    Rendering the Jinja template per text is slow; we render once with sentinels, split, and check the
    split reproduces a real rendering. If it does not (a template that transforms content), every call
    renders through the template instead (`pieces` is None).
    """

    def __init__(self, tokenizer, build, n_slots: int, kwargs: dict | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            tokenizer.chat_template = CHATML_TEMPLATE
        self.tokenizer, self.build, self.kwargs = tokenizer, build, dict(kwargs or {})
        marks = [f"\ue000SLOT{i}\ue000" for i in range(n_slots)]
        text = self.render_template(*marks)
        positions = [text.find(m) for m in marks]
        if any(text.count(m) != 1 for m in marks) or positions != sorted(positions):
            raise ValueError("the tokenizer's chat template does not render each message once, in order")
        pieces, rest = [], text
        for m in marks:
            before, rest = rest.split(m)
            pieces.append(before)
        pieces.append(rest)
        samples = ["what is\nthis?", "  a  document\n\twith tabs ", "third  text\n"][:n_slots]
        exact = self.render_template(*samples) == self._paste(pieces, samples)
        self.pieces: list[str] | None = pieces if exact else None
        self.head_text, self.tail_text = pieces[0], pieces[-1]   # what no content is ever cut from
        self.tail_ids = tokenizer(self.tail_text, add_special_tokens=False)["input_ids"]
        self.n_fixed_head = len(tokenizer(self.head_text, add_special_tokens=False)["input_ids"])

    @staticmethod
    def _paste(pieces, texts) -> str:
        out = pieces[0]
        for text, piece in zip(texts, pieces[1:]):
            out += text + piece
        return out

    def render_template(self, *texts: str) -> str:
        return self.tokenizer.apply_chat_template(self.build(*texts), tokenize=False, **self.kwargs)

    def render(self, *texts: str) -> str:
        return self.render_template(*texts) if self.pieces is None else self._paste(self.pieces, texts)


class PromptFormat:
    name: str
    score_words: tuple[str, ...]
    qwen_score_ids: tuple[int, ...]  # the score words' ids in Qwen's vocabulary
    default_max_length: int | None = None  # the recipe's own token limit, if it has one

    def __init__(self, tokenizer):
        """tokenizer None: a scorer of already-tokenized prompts (score_token_ids only), with Qwen's ids."""
        self.tokenizer = tokenizer
        self.score_token_ids = ([single_token_id(tokenizer, w) for w in self.score_words] if tokenizer is not None
                                else list(self.qwen_score_ids))

    def encode(self, pairs: Sequence[tuple[str, str]], max_length: int, truncate: bool = True,
               instruction: str | None = None) -> EncodedPrompts:
        raise NotImplementedError

    def _encode_counted(self, pairs, max_length: int, truncate: bool = True, instruction: str | None = None,
                        first: int = 0) -> tuple[EncodedPrompts, int, int]:
        """`encode` without the warning: (prompts, how many were cut, how many of those lost query tokens);
        errors name pairs[first + i]."""
        raise NotImplementedError

    def _split(self, instruction: str | None) -> PairSplit | None:
        """Where this format's prompt splits into a query part and a document part (None: nowhere)."""
        return None

    def query_pairs(self, query: str, max_length: int, truncate: bool = True,
                    instruction: str | None = None) -> QueryPairs:
        """The prompts of `query` with many documents, built from tokens (QueryPairs): the same ids,
        groups, errors and warnings as encode([(query, d) for d in documents], ...), the query tokenized
        once."""
        key = instruction
        checked = self.__dict__.setdefault("_checked_splits", {})
        if key not in checked:
            split = self._split(instruction)
            checked[key] = split if split is not None and self._split_matches(split, instruction) else None
        return QueryPairs(self, checked[key], query, max_length, truncate, instruction)

    def _split_matches(self, split: PairSplit, instruction: str | None) -> bool:
        """Whether the split prompts equal the whole ones on the awkward samples."""
        for q in _SPLIT_CHECK_QUERIES:
            whole = self._encode_counted([(q, d) for d in _SPLIT_CHECK_DOCUMENTS], 1 << 62, True, instruction)[0]
            if QueryPairs(self, split, q, 1 << 62, True, instruction).encode(_SPLIT_CHECK_DOCUMENTS) != whole.ids:
                return False
        return True

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The recipe's scores: logits [n, len(score_token_ids)] float32 -> scores [n]."""
        raise NotImplementedError

    def raw_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """The logit the recipe's activation reads (what a CrossEncoder with an identity activation
        returns): logits [n, len(score_token_ids)] -> [n]."""
        raise NotImplementedError

    @staticmethod
    def _group_ids(keys: Sequence[str]) -> list[int]:
        index: dict[str, int] = {}
        return [index.setdefault(k, len(index)) for k in keys]

    @staticmethod
    def _warn_truncated(n: int, n_query_cut: int, max_length: int):
        if n:
            warnings.warn(f"{n} prompt(s) were longer than max_length={max_length} tokens and lost the end of "
                          f"their content, kept the template's suffix"
                          + (f"; {n_query_cut} of them lost their whole document and part of the query"
                             if n_query_cut else "")
                          + " (pass truncate=False to raise instead)", stacklevel=3)


def _added_tokens(tokenizer) -> list[str]:
    """The texts the tokenizer splits out before anything else (special and other added tokens)."""
    return sorted(tokenizer.get_added_vocab(), key=len, reverse=True)


# Queries and documents at whose edges a split prompt would differ from the whole one if the tokenizer
# did not start afresh there: trailing and leading whitespace, punctuation that takes a newline along,
# combining marks, digits, CJK, partial and whole special tokens.
_SPLIT_CHECK_QUERIES = ("what is this?", "ends with spaces   ", "ends with newlines\n\n", "tab\t", "12",
                        "caf\u00e9", "e\u0301", "\u5bff\u53f8", "<|im_end|>", "partial <|im_", "!", "x")
_SPLIT_CHECK_DOCUMENTS = ("a document.", "  leading spaces", "\n\nleading newlines", "\u0301combining",
                          "99 problems", "|>", "<|im_end|> inside", "\u9162\u98ef", "?!", "")


@dataclass
class PairSplit:
    """A format's prompt for (query, document) as head_ids + tok(query_text(query)) +
    tok(document_text(document)) + tail_ids (document_ends_with_tail: tail_ids are the end of the
    document part's tokens already). n_fixed_head: leading tokens no truncation cuts."""
    head_ids: list[int]
    tail_ids: list[int]
    n_fixed_head: int
    query_text: object          # (query) -> str
    document_text: object       # (document) -> str
    document_ends_with_tail: bool


class QueryPairs:
    """The prompts of one query with many documents, built from tokens (see the module docstring):
    `encode(documents)` gives the next documents' prompts, exactly as `PromptFormat.encode` gives them for
    [(query, document), ...]; `finish()` warns about the truncated ones, as `encode` does.
    `shortest_prompt` is the fewest tokens any of its prompts can have (that of an empty document)."""

    def __init__(self, fmt: PromptFormat, split: PairSplit | None, query: str, max_length: int, truncate: bool,
                 instruction: str | None):
        self.fmt, self.split, self.query = fmt, split, query
        self.max_length, self.truncate, self.instruction = max_length, truncate, instruction
        self.n_done = self.n_truncated = self.n_query_cut = 0
        if split is None:  # each pair tokenized whole
            ids = fmt._encode_counted([(query, "")], 1 << 62, True, instruction)[0].ids[0]
            self.shortest_prompt = min(len(ids), max_length)
            return
        self.query_ids = fmt.tokenizer(split.query_text(query), add_special_tokens=False)["input_ids"]
        empty = self._document_ids("", 0)
        self.head_len = len(split.head_ids) + len(self.query_ids) + len(empty)  # tokens before the document's
        self.shortest_prompt = min(self.head_len + len(split.tail_ids), max_length)

    def _document_ids(self, document_ids_or_text, index: int) -> list[int]:
        split = self.split
        ids = document_ids_or_text
        if isinstance(ids, str):
            ids = self.fmt.tokenizer(split.document_text(ids), add_special_tokens=False)["input_ids"]
        if split.document_ends_with_tail:
            n_tail = len(split.tail_ids)
            if ids[len(ids) - n_tail:] != split.tail_ids:
                raise RuntimeError(f"pairs[{index}]: the prompt's tokens do not end with the template's suffix "
                                   f"{split.tail_ids}; cannot truncate safely")
            ids = ids[:len(ids) - n_tail]
        return ids

    def encode(self, documents: Sequence[str]) -> list[list[int]]:
        first = self.n_done
        self.n_done += len(documents)
        if self.split is None:
            encoded, n_truncated, n_query_cut = self.fmt._encode_counted(
                [(self.query, d) for d in documents], self.max_length, self.truncate, self.instruction, first)
            self.n_truncated += n_truncated
            self.n_query_cut += n_query_cut
            return encoded.ids
        split, max_length = self.split, self.max_length
        texts = [split.document_text(d) for d in documents]
        all_ids = self.fmt.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        head, tail, n_tail = split.head_ids, split.tail_ids, len(split.tail_ids)
        out = []
        for k, ids in enumerate(all_ids):
            content = self._document_ids(ids, first + k)
            n = len(head) + len(self.query_ids) + len(content) + n_tail
            if n <= max_length:
                out.append(head + self.query_ids + content + tail)
                continue
            where = f"pairs[{first + k}]"
            if not self.truncate:
                raise PromptTooLong(f"{where}: the prompt is {n} tokens, over max_length={max_length}; "
                                    f"pass truncate=True to cut the content's end, or raise max_length")
            if split.n_fixed_head + n_tail >= max_length:
                raise PromptTooLong(f"{where}: the prompt template alone is {split.n_fixed_head + n_tail} tokens, "
                                    f"leaving no room for content under max_length={max_length}; raise max_length")
            keep = max_length - n_tail
            prompt = (head + self.query_ids)[:keep]
            prompt += content[:keep - len(prompt)] + tail
            out.append(prompt)
            self.n_truncated += 1
            self.n_query_cut += self.head_len > keep
        return out

    def finish(self) -> None:
        self.fmt._warn_truncated(self.n_truncated, self.n_query_cut, self.max_length)


class _ChatPairFormat(PromptFormat):
    """A (query, document) pair rendered through the tokenizer's chat template as two messages, the whole
    prompt tokenized at once; truncation cuts content before the template's tail."""
    roles: tuple[str, str]
    add_special_tokens: bool  # as the reference tokenizes the rendered text

    def __init__(self, tokenizer, template_kwargs: dict | None = None):
        super().__init__(tokenizer)
        if tokenizer is None:
            return
        first, second = self.roles
        try:
            self.slots = ChatTemplateSlots(
                tokenizer, lambda q, d: [{"role": first, "content": q}, {"role": second, "content": d}], 2,
                template_kwargs)
        except ValueError as e:
            hint = (" (a sentence-transformers CrossEncoder folder renders pairs as 'query'/'document' messages: "
                    "try format='sentence-transformers')" if self.name == "zerank" else "")
            raise ValueError(f"the {self.name} format renders a pair as {first!r} and {second!r} messages, "
                             f"but {e}{hint}") from None
        self.tail_ids = self.slots.tail_ids

    @property
    def _pieces(self):  # the fast path's template pieces (None: each pair rendered through the template)
        return self.slots.pieces

    def prepare(self, query: str, document: str) -> tuple[str, str]:
        """The texts as the recipe hands them to the template."""
        return query, document

    def render(self, query: str, document: str) -> str:
        """The reference prompt text for one pair (after the recipe's own clipping and stripping)."""
        return self.slots.render(*self.prepare(query, document))

    def encode(self, pairs, max_length, truncate=True, instruction=None) -> EncodedPrompts:
        encoded, n_truncated, n_query_cut = self._encode_counted(pairs, max_length, truncate, instruction)
        self._warn_truncated(n_truncated, n_query_cut, max_length)
        return encoded

    def _encode_counted(self, pairs, max_length, truncate=True, instruction=None, first=0):
        if instruction is not None:
            raise ValueError(f"the {self.name} format takes no instruction")
        texts = [self.render(q, d) for q, d in pairs]
        ids = self.tokenizer(texts, add_special_tokens=self.add_special_tokens)["input_ids"]
        n_tail, n_truncated, n_query_cut = len(self.tail_ids), 0, 0
        head_len: dict[str, int] = {}
        for i, (q, _) in enumerate(pairs):
            if ids[i][len(ids[i]) - n_tail:] != self.tail_ids:
                raise RuntimeError(f"pairs[{first + i}]: the prompt's tokens do not end with the template's suffix "
                                   f"{self.tail_ids}; cannot truncate safely")
            if len(ids[i]) > max_length:
                ids[i], cut = fit_to_length(ids[i], n_tail, self.slots.n_fixed_head, max_length, truncate,
                                            f"pairs[{first + i}]")
                n_truncated += cut
                if q not in head_len:  # tokens up to the document's start
                    empty = self.tokenizer(self.render(q, ""), add_special_tokens=self.add_special_tokens)["input_ids"]
                    head_len[q] = len(empty) - n_tail
                n_query_cut += head_len[q] > max_length - n_tail
        return (EncodedPrompts(ids, self._group_ids([self.prepare(q, "")[0] for q, _ in pairs])), n_truncated,
                n_query_cut)

    def _split(self, instruction):
        """The query's message ends with a special token (ChatML's <|im_end|>): the tokenizer splits the
        text there before anything else, so the prompt's tokens are those of the text up to it followed
        by those of the rest."""
        if instruction is not None:
            raise ValueError(f"the {self.name} format takes no instruction")
        if self._pieces is None or self.tokenizer("", add_special_tokens=self.add_special_tokens)["input_ids"]:
            return None
        between = self._pieces[1]
        closing = next((t for t in _added_tokens(self.tokenizer) if between.startswith(t)), None)
        if closing is None:
            return None
        cut = len(closing)
        first, last = self._pieces[0], self._pieces[2]
        return PairSplit(head_ids=[], tail_ids=list(self.tail_ids), n_fixed_head=self.slots.n_fixed_head,
                         query_text=lambda q: first + self.prepare(q, "")[0] + between[:cut],
                         document_text=lambda d: between[cut:] + self.prepare("", d)[1] + last,
                         document_ends_with_tail=True)


class ZerankFormat(_ChatPairFormat):
    name = "zerank"
    score_words = ("Yes",)
    qwen_score_ids = (ZERANK_QWEN_YES,)
    roles = ("system", "user")
    add_special_tokens = True  # modeling_zeranker.py calls tokenizer(texts)

    def __init__(self, tokenizer, clip_chars: bool = True):
        """clip_chars: clip the query to 2,000 and the document to 10,000 characters before stripping
        (modeling_zeranker.py); False strips only (ZeroEntropy's serving code)."""
        self.clip_chars = bool(clip_chars)
        super().__init__(tokenizer, {"add_generation_prompt": True})

    @staticmethod
    def _render_with_template(tokenizer, query: str, document: str) -> str:
        messages = [{"role": "system", "content": query}, {"role": "user", "content": document}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def clip(query: str, document: str) -> tuple[str, str]:
        return query[:ZERANK_QUERY_CHARS].strip(), document[:ZERANK_DOCUMENT_CHARS].strip()

    def prepare(self, query, document):
        return self.clip(query, document) if self.clip_chars else (query.strip(), document.strip())

    def scores(self, logits):
        return torch.sigmoid(logits[:, 0] / ZERANK_TEMPERATURE)

    def raw_scores(self, logits):
        return logits[:, 0]


class SentenceTransformersFormat(_ChatPairFormat):
    """What sentence-transformers 6.x's CrossEncoder does with a causal-LM checkpoint: the pair as
    "query"/"document" messages through the folder's chat template (kwargs from sentence_bert_config.json's
    processing_kwargs["chat_template"]), texts untouched; LogitScore's true (minus false) logit."""
    name = "sentence-transformers"
    roles = ("query", "document")
    add_special_tokens = False  # apply_chat_template(tokenize=True) adds none

    def __init__(self, tokenizer, true_token_id: int, false_token_id: int | None = None,
                 template_kwargs: dict | None = None):
        self.score_words = ()
        self.qwen_score_ids = (true_token_id,) + (() if false_token_id is None else (false_token_id,))
        super().__init__(tokenizer, template_kwargs)
        self.score_token_ids = list(self.qwen_score_ids)  # the ids the checkpoint declares, whatever the words

    def scores(self, logits):
        return torch.sigmoid(self.raw_scores(logits))

    def raw_scores(self, logits):
        return logits[:, 0] if logits.shape[1] == 1 else logits[:, 0] - logits[:, 1]


class Qwen3RerankerFormat(PromptFormat):
    name = "qwen3-reranker"
    score_words = ("no", "yes")
    qwen_score_ids = (2152, 9693)
    default_max_length = QWEN3_RERANKER_MAX_LENGTH

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
        content = self.content(instruction or self.instruction, query, document)
        return QWEN3_RERANKER_PREFIX + content + QWEN3_RERANKER_SUFFIX

    def encode(self, pairs, max_length, truncate=True, instruction=None) -> EncodedPrompts:
        encoded, n_truncated, n_query_cut = self._encode_counted(pairs, max_length, truncate, instruction)
        self._warn_truncated(n_truncated, n_query_cut, max_length)
        return encoded

    def _encode_counted(self, pairs, max_length, truncate=True, instruction=None, first=0):
        instruction = instruction or self.instruction
        contents = [self.content(instruction, q, d) for q, d in pairs]
        body = self.tokenizer(contents, add_special_tokens=False)["input_ids"]
        ids, n_truncated, n_query_cut = [], 0, 0
        head_len: dict[str, int] = {}
        n_prefix, n_suffix = len(self.prefix_ids), len(self.suffix_ids)
        for i, (q, _) in enumerate(pairs):
            prompt = self.prefix_ids + body[i] + self.suffix_ids
            if len(prompt) > max_length:
                prompt, cut = fit_to_length(prompt, n_suffix, n_prefix, max_length, truncate, f"pairs[{first + i}]")
                n_truncated += cut
                if q not in head_len:
                    head_len[q] = n_prefix + len(self.tokenizer(
                        self.content(instruction, q, ""), add_special_tokens=False)["input_ids"])
                n_query_cut += head_len[q] > max_length - n_suffix
            ids.append(prompt)
        return (EncodedPrompts(ids, self._group_ids([self.content(instruction, q, "") for q, _ in pairs])),
                n_truncated, n_query_cut)

    def _split(self, instruction):
        """Qwen's pre-tokenizer always starts a new piece at the "<" of "<Document>" after a newline (no
        piece spans a newline followed by punctuation), and no added token spans it: the content's tokens
        are those of the text up to the newline followed by those of "<Document>: {document}"."""
        instruction = instruction or self.instruction
        marker = "<Document>: "
        full = self.content(instruction, "\ue000", "")
        if not full.endswith("\n" + marker) or any("\n<" in t for t in _added_tokens(self.tokenizer)):
            return None
        return PairSplit(head_ids=list(self.prefix_ids), tail_ids=list(self.suffix_ids),
                         n_fixed_head=len(self.prefix_ids),
                         query_text=lambda q: self.content(instruction, q, "")[:-len(marker)],
                         document_text=lambda d: marker + d, document_ends_with_tail=False)

    def scores(self, logits):
        return torch.softmax(logits, dim=-1)[:, 1]

    def raw_scores(self, logits):  # sigmoid(yes - no) is the softmax above
        return logits[:, 1] - logits[:, 0]


def make_format(name: str, tokenizer, instruction: str | None = None, *, clip_chars: bool | None = None,
                sentence_transformers: dict | None = None) -> PromptFormat:
    """name: one of FORMATS. clip_chars: zerank only (default True). sentence_transformers: for that
    format, {"true_token_id", "false_token_id", "template_kwargs"} as the checkpoint declares them."""
    if name != "zerank" and clip_chars is not None:
        raise ValueError(f"clip_chars applies to the zerank format only, not {name!r}")
    if name != "qwen3-reranker" and instruction is not None:
        raise ValueError(f"the {name} format takes no instruction")
    if name == "zerank":
        return ZerankFormat(tokenizer, True if clip_chars is None else clip_chars)
    if name == "qwen3-reranker":
        return Qwen3RerankerFormat(tokenizer, instruction)
    if name == "sentence-transformers":
        if not sentence_transformers:
            raise ValueError("the sentence-transformers format reads the checkpoint's LogitScore module: load "
                             "it with Reranker.from_pretrained")
        return SentenceTransformersFormat(tokenizer, **sentence_transformers)
    raise ValueError(f"unknown format {name!r}; choose one of {FORMATS}")

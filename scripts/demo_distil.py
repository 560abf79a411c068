"""Word rows distilled from the teacher's sentence embeddings, for scripts/train_demo.py.

The demo models score a text by the mean of its word rows. A word's row made from the teacher's embedding of
that word alone (PCA, rarity weight) says what the word means, not how much it counts in a sentence nor
which of its senses the teacher reads there. So the rows are fitted further, starting from those, to the
teacher's embeddings of whole texts:
- a bag of word rows times a projection P [dim, 384] should point where the teacher's embedding of the text
  points (cosine, plus an in-batch contrastive term: each text nearer its own embedding than the others');
- on the training lists, the bags' cosine similarities should order each list as the teacher's do (the
  distractors share a word with the query: the case a plain mean of word meanings gets wrong).
The texts: sentences generated from the teacher's word neighbourhoods, English sentences from the Python
standard library's own documentation (it ships with every Python), and each word alone.
Afterwards the similarity P P^T is folded into the rows (rows @ R^T where P^T = Q R), so the models compare
them by a plain dot product: the reranker's bilinear form and the embedder's map start from the identity.
"""
from __future__ import annotations

import ast
import glob
import random
import re
import sysconfig

import numpy as np
import torch
import torch.nn.functional as F

# Function words that glue generated sentences together, so the fit sees them as a text would have them.
GLUE = ["the", "a", "of", "and", "in", "to", "for", "with", "is", "on", "at", "from", "by", "it", "was", "are",
        "your", "how", "what", "can"]


def generated_sentences(rng: random.Random, pool: list[str], near: dict[str, list[str]], content: list[str],
                        n: int) -> list[str]:
    """n short texts: words of one topic (a common word and its teacher neighbours), a topic with stray
    words, query-like pairs, and any words of the vocabulary (so rare words are fitted too), glued by
    function words."""
    out = []
    for _ in range(n):
        kind, t = rng.random(), rng.choice(pool)
        if kind < 0.35:
            ws = rng.sample(near[t][:20], rng.randint(2, 6)) + ([t] if rng.random() < 0.6 else [])
        elif kind < 0.6:
            ws = rng.sample(near[t][:20], rng.randint(2, 4)) + [rng.choice(pool) for _ in range(rng.randint(1, 2))]
        elif kind < 0.8:
            ws = [t] + ([rng.choice(pool)] if rng.random() < 0.7 else [])
            ws += [rng.choice(near[t][:10])] if rng.random() < 0.3 else []
        else:
            ws = [rng.choice(content) for _ in range(rng.randint(1, 6))]
        rng.shuffle(ws)
        text = []
        for w in ws:
            if rng.random() < 0.6:
                text.append(rng.choice(GLUE))
            text.append(w)
        s = " ".join(text)
        out.append(s[:1].upper() + s[1:] + rng.choice([".", "", "?", "."]))
    return out


def stdlib_sentences() -> list[str]:
    """English sentences of 5-30 words from the running Python's documentation: the help topics
    (pydoc_data) and the standard library's docstrings; letters and punctuation only (no code)."""
    import pydoc_data.topics
    texts = list(pydoc_data.topics.topics.values())
    for path in sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/*.py")):
        try:
            tree = ast.parse(open(path, encoding="utf-8").read())
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue  # a file this Python cannot parse has no sentences for us
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    out = set()
    for text in texts:
        for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            if (5 <= len(s.split()) <= 30 and re.fullmatch(r"[A-Za-z ,;:'\-.?!()]+", s)
                    and sum(c.isalpha() for c in s) > 0.8 * len(s)):
                out.add(s)
    return sorted(out)


class Bags:
    """Texts as bags of word indices (their Qwen tokens that spell a word), for F.embedding_bag."""

    def __init__(self, tokenizer, token_word: np.ndarray, texts: list[str]):
        flat, offsets = [], []
        for ids in tokenizer(list(texts), add_special_tokens=False).input_ids:
            offsets.append(len(flat))
            flat += [w for w in token_word[ids].tolist() if w >= 0]
        self.flat, self.offsets = torch.tensor(flat, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
        self.ends = torch.cat([self.offsets[1:], torch.tensor([len(flat)])])

    def __len__(self):
        return len(self.offsets)

    def sums(self, rows: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        if which is None:
            return F.embedding_bag(self.flat, rows, self.offsets, mode="sum")
        parts = [self.flat[self.offsets[i]:self.ends[i]] for i in which.tolist()]
        offsets = torch.tensor([0] + [len(p) for p in parts[:-1]]).cumsum(0)
        return F.embedding_bag(torch.cat(parts), rows, offsets, mode="sum")


def bag_rankings(rows: torch.Tensor, queries: Bags, documents: Bags, sizes: list[int]) -> list[list[float]]:
    """Each list's documents scored as the demo reranker scores them: q . d / |d| of the row sums."""
    q, d = queries.sums(rows), F.normalize(documents.sums(rows), dim=1)
    out, at = [], 0
    for i, n in enumerate(sizes):
        out.append((d[at:at + n] @ q[i]).tolist())
        at += n
    return out


def distil_word_rows(init_rows: torch.Tensor, texts: Bags, targets: np.ndarray, lists: tuple[Bags, Bags, list, list],
                     choose, epochs: int, seed: int, lr: float = 0.003, tau: float = 0.1,
                     list_weight: float = 1.0) -> tuple[torch.Tensor, list]:
    """(rows with the fitted similarity folded in, [(epoch, choose's figures)]). `lists` is (query bags,
    document bags, [each list's document indices], [the teacher's cosines of each list's documents]);
    `choose(rows)` returns a tuple of development figures, larger is better: the epoch that maximises it
    is kept (epoch 0: the rows as they came)."""
    dim = init_rows.shape[1]
    centred = targets - targets.mean(0, keepdims=True)
    basis = np.linalg.svd(centred[:20000], full_matrices=False)[2][:dim]
    rows = torch.nn.Parameter(init_rows.clone())
    proj = torch.nn.Parameter(torch.from_numpy(basis.astype(np.float32)))
    target = torch.from_numpy(targets)
    lq, ld, doc_ids, teacher_cos = lists
    sizes = [len(c) for c in teacher_cos]
    opt = torch.optim.Adam([rows, proj], lr=lr)
    gen = torch.Generator().manual_seed(seed)

    def folded():
        return rows.detach() @ torch.linalg.qr(proj.detach().T).R.T

    best, history = (choose(folded()), folded()), [(0, choose(folded()))]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(texts), generator=gen)
        for at in range(0, len(texts), 512):
            idx = order[at:at + 512]
            z = F.normalize(texts.sums(rows, idx) @ proj, dim=1)
            t = target[idx]
            loss = (1 - (z * t).sum(1)).mean() + F.cross_entropy(z @ t.T / tau, torch.arange(len(idx)))
            picked = torch.randint(len(sizes), (64,), generator=gen)
            doc_idx = torch.cat([torch.as_tensor(doc_ids[i]) for i in picked.tolist()])
            q = F.normalize(lq.sums(rows, picked) @ proj, dim=1)
            d = F.normalize(ld.sums(rows, doc_idx) @ proj, dim=1)
            listwise, at_d = 0.0, 0
            for k, i in enumerate(picked.tolist()):
                s = d[at_d:at_d + sizes[i]] @ q[k]
                at_d += sizes[i]
                listwise = listwise + F.kl_div(F.log_softmax(s / 0.05, 0), F.softmax(teacher_cos[i] / 0.04, 0),
                                               reduction="sum")
            loss = loss + list_weight * listwise / len(picked)
            opt.zero_grad()
            loss.backward()
            opt.step()
        figures = choose(folded())
        history.append((epoch, figures))
        print(f"  word rows: epoch {epoch}, loss {loss.item():.3f}, development {figures}", flush=True)
        if figures > best[0]:
            best = (figures, folded())
    return best[1], history

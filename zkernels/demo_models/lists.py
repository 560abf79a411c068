"""Plain-English ranking lists: the BM25 baseline and the figures they are judged by.

Each list is (query, documents, index of the relevant document); its distractors share a word with the
query, so word overlap alone often picks the wrong one. Used to measure the trained demo models (the
training script prints its figures on its own development lists; the test suite has lists of its own).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

RankingList = tuple[str, Sequence[str], int]

_WORD = re.compile(r"[a-z0-9]+")
# Left out of BM25's terms, as search engines usually do: without this list BM25 is a weaker baseline,
# its first place often decided by "how", "to" or "for".
STOPWORDS = frozenset("""a an and are as at be by can do does for from has have how i in is it its my of on or our
so than that the their them then there these they this to was we were what when where which who why will with
you your""".split())


def words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def bm25_scores(query: str, documents: Sequence[str], corpus: Sequence[str] | None = None,
                k1: float = 1.2, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each document for the query; document frequencies and the mean length come from
    `corpus` (default: the documents themselves)."""
    corpus = list(documents if corpus is None else corpus)
    df = Counter(w for d in corpus for w in set(words(d)))
    mean_len = sum(len(words(d)) for d in corpus) / max(len(corpus), 1)
    n = len(corpus)
    scores = []
    for doc in documents:
        tf, length = Counter(words(doc)), len(words(doc))
        s = 0.0
        for w in set(words(query)):
            if tf[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * length / max(mean_len, 1e-9)))
        scores.append(s)
    return scores


def top1_accuracy(rankings: Sequence[Sequence[float]], lists: Sequence[RankingList]) -> float:
    """Share of lists whose highest score is the relevant document (a tie for first counts as a miss)."""
    hits = 0
    for scores, (_, _, relevant) in zip(rankings, lists):
        best = max(scores)
        hits += scores[relevant] == best and sum(s == best for s in scores) == 1
    return hits / len(lists)


def recall_at(rankings: Sequence[Sequence[float]], lists: Sequence[RankingList], k: int) -> float:
    """Share of lists whose relevant document is among the k highest scores."""
    hits = 0
    for scores, (_, _, relevant) in zip(rankings, lists):
        hits += sum(s > scores[relevant] for s in scores) < k
    return hits / len(lists)


def bm25_rankings(lists: Sequence[RankingList]) -> list[list[float]]:
    """BM25 scores of every list, its statistics taken over all the lists' documents together."""
    corpus = [d for _, docs, _ in lists for d in docs]
    return [bm25_scores(q, docs, corpus) for q, docs, _ in lists]

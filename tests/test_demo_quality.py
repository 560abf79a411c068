"""The trained demo models rank sensibly: on plain-English lists the training never saw, whose distractors
share a word with the query, the demo reranker puts the relevant document first and the demo embedder
retrieves it, more often than BM25 does. Both run through zkernels' own engine on the built checkpoints."""
import pytest
import torch

from zkernels.demo_models.lists import bm25_rankings, recall_at, top1_accuracy

# (query, documents, index of the relevant document)
LISTS = [
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
]


@pytest.fixture(scope="module")
def demo_models(demo_cache):
    import os
    old = os.environ.get("ZKERNELS_CACHE")
    os.environ["ZKERNELS_CACHE"] = str(demo_cache)
    try:
        from zkernels import Embedder, Reranker
        from zkernels.demo_models import demo_checkpoint, demo_embedder_checkpoint
        reranker = Reranker.from_pretrained(demo_checkpoint(), device="cpu", dtype=torch.float32)
        embedder = Embedder.from_pretrained(demo_embedder_checkpoint(), device="cpu", dtype=torch.float32)
    finally:
        if old is None:
            os.environ.pop("ZKERNELS_CACHE")
        else:
            os.environ["ZKERNELS_CACHE"] = old
    return reranker, embedder


def test_the_lists_are_hard_for_word_overlap():
    assert top1_accuracy(bm25_rankings(LISTS), LISTS) <= 0.7


def test_the_demo_reranker_puts_the_relevant_document_first(demo_models):
    reranker, _ = demo_models
    scores = [reranker.predict([(q, d) for d in docs]).tolist() for q, docs, _ in LISTS]
    misses = [q for (q, _, r), s in zip(LISTS, scores) if max(range(len(s)), key=s.__getitem__) != r]
    # at least 8 of the 12 (four times chance, and BM25 gets 2 here); the shipped model gets 8
    assert top1_accuracy(scores, LISTS) >= 0.65, f"missed: {misses}"
    assert top1_accuracy(scores, LISTS) >= top1_accuracy(bm25_rankings(LISTS), LISTS) + 0.4


def test_the_demo_reranker_scores_spread_between_relevant_and_not(demo_models):
    reranker, _ = demo_models
    relevant, others = [], []
    for q, docs, r in LISTS:
        s = reranker.predict([(q, d) for d in docs])
        relevant.append(float(s[r]))
        others += [float(x) for i, x in enumerate(s) if i != r]
    assert sum(relevant) / len(relevant) - sum(others) / len(others) >= 0.2


@pytest.mark.parametrize("dimensions", [None, 64])
def test_the_demo_embedder_retrieves_the_relevant_document(demo_models, dimensions):
    _, embedder = demo_models
    rankings = []
    for q, docs, _ in LISTS:
        eq = embedder.encode_query([q], dimensions=dimensions)
        ed = embedder.encode_document(list(docs), dimensions=dimensions)
        rankings.append((ed @ eq[0]).tolist())
    assert recall_at(rankings, LISTS, 5) >= 0.8
    assert top1_accuracy(rankings, LISTS) >= 0.6 and top1_accuracy(rankings, LISTS) > top1_accuracy(
        bm25_rankings(LISTS), LISTS)

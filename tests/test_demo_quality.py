"""The trained demo models rank sensibly: on plain-English lists the training never saw, whose distractors
share a word with the query, the demo reranker puts the relevant document first and the demo embedder
retrieves it, more often than BM25 does. Both run through zkernels' own engine on the built checkpoints."""
import pytest
import torch

from zkernels.demo_models.lists import bm25_rankings, recall_at, top1_accuracy

# (query, documents, index of the relevant document)
LISTS = [
    ("how to boil an egg", [
        "The boil on his neck needed a doctor's attention.",
        "Egg prices rose again at the farm shop this spring.",
        "How to wrap a present neatly with little tape.",
        "Lower the egg into simmering water, cook it for seven minutes, then cool it in cold water and peel it.",
        "The ferry crossed the channel in under two hours.",
        "Zebras have stripes that confuse biting flies."], 3),
    ("benefits of drinking water", [
        "Drinking and driving is a crime in every state.",
        "Drinking enough water keeps your kidneys working, helps your skin and stops tiredness and headaches.",
        "Water polo is played in a deep swimming pool.",
        "The benefits office is closed on public holidays.",
        "The choir sang carols in the town square.",
        "Mars has two small, oddly shaped moons."], 1),
    ("how to change a baby's nappy", [
        "Change is the only constant, said the philosopher.",
        "The baby grand piano filled most of the room.",
        "Lay the infant on a soft mat, remove the dirty diaper, wipe the skin clean and fasten a fresh one.",
        "How to paint a ceiling without drips.",
        "The stadium roof can open in fine weather.",
        "Pine trees keep their needles all winter."], 2),
    ("protecting your skin from the sun", [
        "The sun rises in the east and sets in the west.",
        "Protecting the castle was the duty of every knight.",
        "Skin grafts help burn victims recover.",
        "Wear a hat, stay in the shade at midday and put on sunscreen every two hours to avoid sunburn.",
        "The postman delivers letters before ten.",
        "Beavers build dams from branches and mud."], 3),
    ("how to make coffee", [
        "How to make friends in a new city.",
        "Coffee tables come in oak, glass and steel.",
        "Grind the beans, pour hot water over the grounds in a filter and let the brew drip into the cup.",
        "The orchestra played a symphony by Mozart.",
        "Volcanic ash closed airports across Europe.",
        "Make sure the windows are locked before you leave."], 2),
    ("what do bees make", [
        "Bees visit flowers and turn the nectar into honey, which they store in wax combs in the hive.",
        "Make a wish before you blow out the candles.",
        "The spelling bee was won by a ten-year-old girl.",
        "What do you want for your birthday?",
        "The bridge was painted red to stop it rusting.",
        "Glaciers are melting faster than expected."], 0),
    ("tips for a job interview", [
        "The tips of the mountains were covered in snow.",
        "The job of a goalkeeper is to stop the ball.",
        "Before an interview, research the company, prepare answers about your experience, dress "
        "smartly and arrive early.",
        "Interview with a famous actor about her new film.",
        "Sea turtles return to the beach where they hatched.",
        "The bakery uses a wood-fired oven."], 2),
    ("how to keep a dog cool in summer", [
        "Keep calm and carry on, said the wartime poster.",
        "Summer holidays start at the end of July.",
        "Hot dog stands line the street outside the stadium.",
        "Give your pet plenty of fresh water, walk it early or late and never leave it in a parked car on a hot day.",
        "The telescope was built on top of a mountain.",
        "Copper turns green when it is exposed to air."], 3),
    ("ways to reduce stress", [
        "Stress fractures are common in long-distance runners.",
        "Reduce the heat and let the sauce simmer.",
        "Ways of the world: a novel in three parts.",
        "Regular exercise, enough sleep, talking to friends and slow deep breathing help you feel calmer.",
        "The parliament voted on the new tax law.",
        "Coral reefs are home to many kinds of fish."], 3),
    ("how do birds fly", [
        "Flies carry germs from rubbish to food.",
        "Time flies when you are having fun.",
        "How do you spell your surname?",
        "Their wings push air down and back, and the curved shape of the wing gives lift as they move forward.",
        "The carpenter sanded the table until it was smooth.",
        "Diesel engines are used in most lorries."], 3),
    ("what to pack for a beach holiday", [
        "A pack of wolves howled in the forest.",
        "Bring swimwear, sun cream, a towel, sunglasses, sandals and a light shirt for the evenings by the sea.",
        "The holiday season is busy for shops.",
        "Beach volleyball became an Olympic sport in 1996.",
        "The judge sentenced him to five years.",
        "Silicon chips power every modern phone."], 1),
    ("how to stop a nosebleed", [
        "Stop the bus, I need to get off here.",
        "His nose was broken in a boxing match.",
        "How to stop a cat scratching the sofa.",
        "Sit up, lean forward and pinch the soft part of your nose for ten minutes while breathing through your mouth.",
        "The harvest festival is held every October.",
        "Satellite images show the storm growing."], 3),
    ("the planets of the solar system", [
        "Solar panels on the roof cut our electricity bill.",
        "The system crashed and the files were lost.",
        "Mercury, Venus, Earth and Mars are rocky worlds; Jupiter, Saturn, Uranus and Neptune are "
        "giants of gas and ice.",
        "Planets is the title of a famous suite by Holst.",
        "Our cat sleeps on the warm windowsill.",
        "The recipe needs two cups of sugar."], 2),
    ("how to save energy at home", [
        "Save the date: our wedding is in June.",
        "Energy drinks are full of sugar and caffeine.",
        "Home is where the heart is, as the saying goes.",
        "Insulate the loft, switch off lights you are not using, turn the heating down a degree and "
        "use LED bulbs to save energy.",
        "The ship sank in a storm off the coast.",
        "Kangaroos carry their young in a pouch."], 3),
    ("causes of earthquakes", [
        "The causes of the fire are being investigated.",
        "Earthquakes is the name of a San Jose football club.",
        "The ground shakes when huge plates of rock that make up the earth's crust slip past each other along faults.",
        "The bride wore a long white dress.",
        "Library fines are charged for late returns.",
        "He plays the trumpet in a jazz band."], 2),
    ("first aid for a burn", [
        "The first man on the moon was Neil Armstrong.",
        "Aid workers delivered food to the flooded villages.",
        "Burn the old letters in the garden fire.",
        "Cool the area under cold running water for twenty minutes, then cover it loosely with cling film.",
        "Otters hold hands when they sleep.",
        "The shop sells second-hand furniture."], 3),
    ("how to write a good essay", [
        "Write your name at the top of the form.",
        "Good morning, everyone, and welcome.",
        "Plan an argument, open with a clear thesis, support each paragraph with evidence and end "
        "with a short conclusion.",
        "The essay prize was awarded to a student from Leeds.",
        "Mountain goats climb steep cliffs with ease.",
        "The lorry was loaded with frozen fish."], 2),
    ("why do leaves change colour in autumn", [
        "She leaves for work at eight every morning.",
        "Change your password every few months.",
        "As days grow short, trees stop making green chlorophyll, revealing yellow and orange pigments beneath.",
        "The colour of the new car is a deep blue.",
        "The hospital opened a new children's ward.",
        "Sound travels faster in water than in air."], 2),
    ("how to treat a cold", [
        "The cold war lasted more than forty years.",
        "Treat yourself to a day at the spa.",
        "Rest, drink warm fluids, gargle salt water for a sore throat and take paracetamol to ease the aches.",
        "Cold storage keeps vegetables fresh for weeks.",
        "The painting was sold for a record price.",
        "Hedgehogs hibernate through the winter."], 2),
    ("how to catch a fish", [
        "Catch the early train to avoid the crowds.",
        "Fish and chips is a popular takeaway.",
        "Bait the hook with a worm, cast the line near weeds, wait for a bite and reel the fish in steadily.",
        "How to catch a cold: stand in the rain.",
        "The museum has a fine collection of clocks.",
        "Bamboo is one of the fastest growing plants."], 2),
    ("price of a new phone", [
        "The price of freedom is eternal vigilance.",
        "New year celebrations start at midnight.",
        "Phone the school if your child is ill.",
        "A new smartphone costs between three hundred and over a thousand dollars, depending on storage.",
        "Rivers carry sediment down to the sea.",
        "The shepherd counted his sheep at dusk."], 3),
    ("how to clean a carpet", [
        "Clean energy comes from wind and the sun.",
        "The red carpet was rolled out for the film stars.",
        "Vacuum slowly, blot stains with a cloth and warm soapy water, and shampoo the carpet once a year.",
        "How to clean a fish before cooking it.",
        "The prime minister visited the factory.",
        "Swallows fly south for the winter."], 2),
    ("symptoms of diabetes", [
        "Symptoms of a failing hard drive include clicking noises.",
        "Being very thirsty, passing urine often, feeling tired and losing weight can all be symptoms of diabetes.",
        "The diabetes charity held a fun run in the park.",
        "The referee showed the player a red card.",
        "Thunder is the sound of air heated by lightning.",
        "The children built a sandcastle."], 1),
    ("how to learn a new language", [
        "Learn the rules before you play the game.",
        "Body language says more than words.",
        "New York is the largest city in the United States.",
        "Practise a little every day, listen to native speakers, learn common words first and speak from the start.",
        "Ducks waterproof their feathers with oil.",
        "The bill was paid by the company."], 3),
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
    assert len(LISTS) >= 20 and all(len(docs) == 6 for _, docs, _ in LISTS)
    assert top1_accuracy(bm25_rankings(LISTS), LISTS) <= 0.6


def reranker_rankings(reranker):
    return [reranker.predict([(q, d) for d in docs]).tolist() for q, docs, _ in LISTS]


def test_the_demo_reranker_puts_the_relevant_document_first(demo_models):
    reranker, _ = demo_models
    scores = [reranker.predict([(q, d) for d in docs]).tolist() for q, docs, _ in LISTS]
    misses = [q for (q, _, r), s in zip(LISTS, scores) if max(range(len(s)), key=s.__getitem__) != r]
    # the target: first in at least 80% of the lists, 20 of these 24 (chance is 1 in 6; BM25 gets
    # 2 here); the shipped model gets 21
    assert top1_accuracy(scores, LISTS) >= 0.8, f"missed: {misses}"
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
    # the target: recall@5 at least as good as the reranker's top-1 target
    assert recall_at(rankings, LISTS, 5) >= 0.8
    assert top1_accuracy(rankings, LISTS) >= top1_accuracy(bm25_rankings(LISTS), LISTS) + 0.3

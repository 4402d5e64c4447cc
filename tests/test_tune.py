"""rag tune: the label-free choice of retrieval mode and abstain threshold, on real collections.

Two corpora built so that the right choice is known for real, not only in the synthetic questions:
in PARAPHRASED every document names its subject with a different word in each sentence (feline,
kitty, puss...), so a question in other words than a sentence's finds nothing for BM25 to match
while dense retrieval finds the meaning; in OPAQUE the documents are order records, one template
filled with sequential order numbers, which BM25 matches exactly and MiniLM barely tells apart. Hand-written questions check
each corpus's premise with real labels.
"""

import json
import os
import subprocess
import sys

import pytest

from rag.retriever import Retriever

PARAPHRASED = {
    "cat": [
        "The feline sleeps roughly 16 hours every day, curled beside the radiator.",
        "Our kitty was adopted from an animal shelter in 2019 as a frightened stray.",
        "This puss stalks moths at dusk and catches about 3 of them each week.",
        "The tabby gulps down 2 tins of salmon flavoured food every morning.",
    ],
    "car": [
        "The automobile was bought second hand in 2016 from a dealer in Leeds.",
        "Our motor needs fresh oil after every 8000 kilometres of driving.",
        "This vehicle carries up to 5 passengers together with their luggage.",
        "The hatchback burns around 6 litres of petrol per hundred kilometres on motorways.",
    ],
    "doctor": [
        "The physician sees about 30 patients on a busy Monday at the practice.",
        "Our GP trained at a teaching hospital for 6 years before qualifying.",
        "This medic prescribes antibiotics only after 3 days of persistent fever.",
        "The clinician retires in 2031 after decades caring for the village.",
    ],
    "house": [
        "The dwelling was built from local stone in 1874 by a quarry owner.",
        "Our home has 4 bedrooms under a steep slate roof.",
        "This residence sits 200 metres from the nearest bus stop.",
        "The cottage was rewired in 2005, when its fuse box was replaced.",
    ],
    "ship": [
        "The vessel left port on 12 March 2021 with a full cargo hold.",
        "Our freighter can haul 9000 tonnes of grain across the Atlantic.",
        "This craft is crewed by 14 sailors working in rotating watches.",
        "The steamer reaches a top speed of 18 knots in calm seas.",
    ],
    "lawyer": [
        "The attorney charges 250 euros per hour for contract disputes.",
        "Our solicitor has handled property conveyancing since 1998 in the town.",
        "This barrister won 7 appeals before the high court last term.",
        "The counsel advised settling the claim within 30 days to avoid trial.",
    ],
    "forest": [
        "The woodland covers 40 hectares of ancient oak and beech.",
        "Our grove was replanted in 1952 after a devastating storm.",
        "This timberland shelters 12 pairs of nesting buzzards each spring.",
        "The thicket gets so dense that sunlight reaches the ground only 2 months a year.",
    ],
    "bread": [
        "The loaf is baked at 230 degrees for crust and colour.",
        "Our sourdough rises overnight for 14 hours in a cool larder.",
        "This baguette sells for 2 euros at the corner boulangerie.",
        "The bun dough rests for 45 minutes before it is shaped and glazed.",
    ],
    "song": [
        "The melody was composed in 1963 on an upright piano.",
        "Our tune climbed to number 4 in the national charts.",
        "This ballad lasts about 5 minutes when performed live.",
        "The anthem is sung by 2000 fans before every home match.",
    ],
    "rain": [
        "The downpour dropped 60 millimetres on the valley overnight.",
        "Our showers usually arrive after 4 o'clock in the afternoon in April.",
        "This drizzle lingered for 3 days and soaked the hay meadows.",
        "The precipitation total for 2022 broke the regional record.",
    ],
    "bicycle": [
        "The bike weighs just 8 kilograms thanks to its carbon frame.",
        "Our tandem was restored in 2014 with new wheels and brakes.",
        "This two-wheeler has 21 gears for the hilly commute.",
        "The racer was ridden 150 kilometres on a single summer day.",
    ],
    "mountain": [
        "The peak rises 3400 metres above the glacier lake.",
        "Our summit was first climbed in 1865 by a team of shepherds.",
        "This massif holds 9 named glaciers on its northern flank.",
        "The alp is snowbound for about 7 months of the year.",
    ],
}
# Real questions in other words than the documents', answered by the named document.
PARAPHRASED_QUESTIONS = [
    ("How long does the pet cat doze each day?", "cat"), ("When was the car purchased?", "car"),
    ("How many people does the doctor treat on Mondays?", "doctor"), ("When was the house constructed?", "house"),
    ("How much cargo can the ship transport?", "ship"), ("What is the lawyer's hourly fee?", "lawyer"),
    ("How big is the forest?", "forest"), ("How hot is the oven for the bread?", "bread"),
    ("When was the song written?", "song"), ("How much rain fell in one night?", "rain"),
    ("How heavy is the bicycle?", "bicycle"), ("How high is the mountain?", "mountain"),
]

ORDERS = [str(48213300 + n) for n in range(24)]  # sequential order numbers: one digit tells them apart
ORDER_TEMPLATE = [
    "Order {o} was packed at the north warehouse on {d[0]} March 2023.",
    "The courier collected order {o} from the loading bay on {d[1]} March 2023.",
    "Payment for order {o} cleared on {d[2]} April 2023 after a manual check.",
    "A refund request for order {o} was closed on {d[3]} May 2023 without changes.",
]


def opaque_documents() -> dict[str, list[str]]:
    return {f"order_{o}": [line.format(o=o, d=[1 + (n * 7 + j * 5) % 28 for j in range(4)]) for line in ORDER_TEMPLATE]
            for n, o in enumerate(ORDERS)}


OPAQUE_QUESTIONS = [(f"When did the courier pick up order {o}?", f"order_{o}") for o in ORDERS]


def build(home, name, documents, embedder, chunker):
    from ingest.pipeline import ingest
    from rag.store import Collection

    docs = home / f"{name}-docs"
    docs.mkdir(parents=True)
    for stem, lines in documents.items():
        (docs / f"{stem}.txt").write_text(" ".join(lines) + "\n")
    collection = Collection.open(home / name, embedder.name, embedder.dim, create=True)
    assert ingest([docs], collection, embedder, chunker).failed == 0
    return collection


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("tune-home")


@pytest.fixture(scope="module")
def paraphrased(home, embedder, chunker):
    return build(home, "paraphrased", PARAPHRASED, embedder, chunker)


@pytest.fixture(scope="module")
def opaque(home, embedder, chunker):
    return build(home, "opaque", opaque_documents(), embedder, chunker)


def hit1(collection, embedder, questions, mode) -> float:
    retriever = Retriever(collection, embedder, weights=(1.0, 1.0))
    found = [h[0].source.endswith(f"/{stem}.txt") if (h := retriever.search(q, k=1, mode=mode)) else False
             for q, stem in questions]
    return sum(found) / len(found)


def test_premises_hold_for_real_questions(paraphrased, opaque, embedder):
    assert hit1(paraphrased, embedder, PARAPHRASED_QUESTIONS, "dense") >= 0.75
    assert hit1(paraphrased, embedder, PARAPHRASED_QUESTIONS, "bm25") <= 0.35
    assert hit1(opaque, embedder, OPAQUE_QUESTIONS, "bm25") == 1.0
    assert hit1(opaque, embedder, OPAQUE_QUESTIONS, "dense") <= 0.5


def test_tune_chooses_dense_where_bm25_is_useless(paraphrased, embedder):
    from rag.tune import tune

    report = tune(paraphrased, embedder, questions=40, record=False, neutral=None)
    scores = {c.name: c.scores for c in report.candidates}
    assert report.mode == "dense", scores
    assert scores["dense"]["ndcg@10"] > scores["bm25"]["ndcg@10"] + 0.2


def test_tune_chooses_bm25_where_dense_is_useless(opaque, embedder):
    from rag.tune import tune

    report = tune(opaque, embedder, questions=40, record=False, neutral=None)
    scores = {c.name: c.scores for c in report.candidates}
    assert report.mode == "bm25", scores
    assert scores["bm25"]["ndcg@10"] > scores["dense"]["ndcg@10"] + 0.2
    assert report.weights[1] > report.weights[0]  # the hybrid weights lean to BM25 too


def test_hidden_copy_cuts_each_question_sentence(paraphrased, embedder, tmp_path):
    from rag.tune import draw_probes, hidden_copy

    probes = draw_probes(paraphrased, 12, seed=1)
    copy = hidden_copy(paraphrased, embedder, probes, tmp_path / "copy")
    texts = {c.id: c.text for c in copy.all_chunks()}
    originals = {c.id: c.text for c in paraphrased.all_chunks()}
    assert copy.count()[1] == paraphrased.count()[1]
    for probe in probes:
        assert probe.hidden not in probe.question  # the answer span is gone from the question
        for cid in probe.relevant:
            assert probe.hidden in originals[cid] and probe.hidden not in " ".join(texts[cid].split())


def test_teacher_questions_are_its_last_paraphrase_with_the_answer_sentence_hidden(paraphrased):
    """A stand-in teacher (a real one needs a model server: test_finetune_data covers that path with
    vLLM): it asks about the number in each passage's first sentence."""
    import re

    from rag.tune import draw_probes

    def ask(prompt: str) -> str:
        passage = prompt.split(":\n", 1)[1].split("\n\nWrite up to", 1)[0]
        first = passage.split(". ")[0]
        number = re.search(r"\d+", first).group()
        return json.dumps({"pairs": [{"question": "Which number is given?", "answer": number,
                                      "paraphrases": ["What figure is stated?", "Which figure does it give first?"]}]})

    probes = draw_probes(paraphrased, 12, seed=0, ask=ask)
    chunks = {c.id: c.text for c in paraphrased.all_chunks()}
    assert len(probes) == 12
    for probe in probes:
        assert probe.question == "Which figure does it give first?"
        (chunk_id,) = probe.relevant
        assert chunks[chunk_id].startswith(probe.hidden) and re.search(r"\d", probe.hidden)


def test_choice_and_threshold_are_recorded_and_read_back(opaque, embedder):
    from rag.tune import tune

    report = tune(opaque, embedder, questions=24, false_abstention=0.1)
    retriever = Retriever(opaque, embedder)  # a new retriever reads what tune recorded
    assert retriever.default_mode() == report.mode == "bm25"
    assert retriever.weights == report.weights
    threshold = float(opaque.get_meta("abstain_threshold"))
    assert threshold == pytest.approx(report.threshold, abs=1e-4)
    assert report.false_abstention <= 0.1
    recorded = json.loads(opaque.get_meta("tune"))
    assert recorded["questions"] == 24 and recorded["mode"] == "bm25" and len(recorded["candidates"]) == 15
    # unrelated everyday questions fall below the threshold: the gate refuses most of them
    assert report.abstention["neutral"]["n"] >= 100 and report.abstention["neutral"]["abstained"] >= 0.8
    hits = retriever.search("When did payment for order 48213307 clear?", k=3)  # mode auto: bm25 now
    assert hits[0].source.endswith("order_48213307.txt") and max(h.dense for h in hits) >= threshold

    tune(opaque, embedder, questions=12, gate=False)
    assert opaque.get_meta("abstain_threshold") == ""  # the gate reads this as: no threshold


def test_calibrate_meets_the_false_abstention_target():
    from rag.tune import calibrate

    scores = [i / 100 for i in range(100)]
    threshold = calibrate(scores, 0.05)
    assert sum(s < threshold for s in scores) == 5 and threshold == 0.05
    assert calibrate(scores, 0.0) == 0.0


def test_too_few_questions_is_an_error_that_says_what_to_do(home, embedder, chunker):
    from rag.tune import TuneError, tune

    collection = build(home, "tiny", {"note": ["Nothing here has a date or a number in it at all, sadly."]},
                       embedder, chunker)
    with pytest.raises(TuneError, match="only 0 synthetic questions.*add documents, or give a teacher"):
        tune(collection, embedder, questions=20)


def test_cli_tune_json_prints_one_object(paraphrased, opaque, home):
    env = {**os.environ, "RAG_HOME": str(home), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, "-m", "rag.cli", "tune", "-c", "paraphrased", "--json", "--questions",
                           "20", "--negatives", "opaque"], capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # one object, nothing else on stdout
    assert out["collection"] == "paraphrased" and out["mode"] == "dense" and out["questions"] == 20
    assert set(out["abstention"]) == {"neutral", "collection:opaque"}
    assert 0 <= out["abstention"]["collection:opaque"]["abstained"] <= 1
    assert float(paraphrased.get_meta("abstain_threshold")) == pytest.approx(out["threshold"], abs=1e-4)

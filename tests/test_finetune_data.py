"""Fine-tuning data from a collection: offline questions, the three modes, the leakage checks."""

import json

import pytest

from rag.finetune_data import (
    BLANK, DataError, build_dataset, check_leakage, key_span, normalise_question, read_dataset, sentences,
)
from rag.prompts import BASE_SYSTEM, NO_ANSWER, RAG_SYSTEM


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("sentence, span", [
    ("The Korvik Island Lighthouse was first lit on 14 March 1887.", "14 March 1887"),
    ("Green tea is brewed at around 70 to 80 degrees Celsius, for two minutes.", "70 to 80 degrees Celsius"),
    ("A full battery cleans for about 95 minutes on the standard level.", "95 minutes"),
    ("It was designed by the engineer Halvard Brekke, who also drew the breakwater.", "Halvard Brekke"),
    ("The robot only joins 2.4 GHz Wi-Fi networks.", "2.4 GHz"),
    ("Since The Tidy app is optional, nothing here is a fact to ask about.", None),
])
def test_key_span_picks_dates_numbers_then_names(sentence, span):
    assert key_span(sentence) == span


def test_sentences_drop_headings_and_join_wrapped_lines():
    text = "## The light\nThe lantern holds a second-order Fresnel lens\nmade in Paris. It turns.\n| a | b |\n"
    assert sentences(text) == ["The lantern holds a second-order Fresnel lens made in Paris."]


def test_offline_qa_data_is_grounded_in_chunks_and_holds_out_unseen_phrasings(sample_collection, tmp_path):
    report = build_dataset(sample_collection, tmp_path, mode="qa", paraphrases=3, heldout_fraction=0.25, seed=1)
    train, heldout = rows(tmp_path / "train.jsonl"), rows(tmp_path / "heldout.jsonl")
    assert report.facts >= 15 and report.train == len(train) and report.heldout == len(heldout)
    assert report.heldout == round(0.25 * report.facts)  # one phrasing from a quarter of the facts
    chunk_text = {c.id: c.text for c in sample_collection.all_chunks()}
    for row in train + heldout:
        assert BLANK in row["question"] and row["span"] in row["answer"]
        assert " ".join(row["answer"].split()) in " ".join(chunk_text[row["chunk_ids"][0]].split())
        assert row["messages"][0] == {"role": "system", "content": BASE_SYSTEM}
        assert row["messages"][-1] == {"role": "assistant", "content": row["answer"]}
    train_questions = {normalise_question(r["question"]) for r in train}
    assert not any(normalise_question(r["question"]) in train_questions for r in heldout)
    held_facts = {r["fact_id"] for r in heldout}
    assert held_facts <= {r["fact_id"] for r in train}  # the fact is trained, the phrasing is not
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["generator"] == "offline" and meta["counts"]["train"] == len(train) and len(meta["sha256"]) == 2
    again = build_dataset(sample_collection, tmp_path / "again", mode="qa", paraphrases=3, heldout_fraction=0.25, seed=1)
    assert (tmp_path / "again" / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
    assert again.train == report.train  # deterministic for a seed


def test_eval_questions_are_excluded_from_training(sample_collection, tmp_path):
    build_dataset(sample_collection, tmp_path / "a", paraphrases=2)
    victim = rows(tmp_path / "a" / "train.jsonl")[0]["question"]
    report = build_dataset(sample_collection, tmp_path / "b", paraphrases=2, exclude_questions=[victim.upper()])
    assert report.excluded == 1
    assert victim not in {r["question"] for r in rows(tmp_path / "b" / "train.jsonl")}


def test_raft_examples_mix_oracle_and_distractors_in_the_rag_prompt(sample_collection, tmp_path):
    build_dataset(sample_collection, tmp_path, mode="raft", paraphrases=2, distractors=2, oracle_p=0.7, seed=3)
    train = rows(tmp_path / "train.jsonl")
    with_oracle = [r for r in train if r["oracle"]]
    assert 0.5 < len(with_oracle) / len(train) < 0.9
    text_of = {c.id: " ".join(c.text.split()) for c in sample_collection.all_chunks()}
    cited = set()
    for row in train:
        system, user, assistant = row["messages"]
        assert system["content"] == RAG_SYSTEM and user["content"].count("(source: ") == len(row["chunk_ids"])
        answer = " ".join(row["answer"].split())
        if row["oracle"]:
            n = int(assistant["content"].rsplit("[", 1)[1].rstrip("]"))
            assert len(row["chunk_ids"]) == 3 and assistant["content"] == f"{row['answer']} [{n}]"
            # the cited number is the passage the answer was taken from, not a distractor
            assert answer in text_of[row["chunk_ids"][n - 1]]
            assert all(answer not in text_of[c] for i, c in enumerate(row["chunk_ids"]) if i != n - 1)
            cited.add(n)
        else:
            assert len(row["chunk_ids"]) == 2 and assistant["content"] == row["answer"]
            assert all(answer not in text_of[c] for c in row["chunk_ids"])
    assert cited == {1, 2, 3}  # the oracle's place varies, so citing "[1]" always would be wrong


FAQ = {
    "robot-faq.md": """# Robot FAQ

## 1.1. How do I reset the robot to factory settings?

Hold the power button and the home button together for ten seconds. The status light blinks white three times when the reset is done.

## 1.2. Why does the robot stop in the middle of a room?

The robot stops when its cliff sensors are dirty or covered. Wipe the four sensors under the bumper with a dry cloth and restart the cleaning run.

## 1.3. How long does a full battery last?

A full battery cleans for about 95 minutes on the standard suction level. On the strongest level it lasts about 40 minutes.

## 1.4. Which Wi-Fi networks can the robot join?

The robot only joins 2.4 GHz networks that use WPA2. It cannot join networks that need a login page.
""",
    "kettle-faq.md": """# Kettle FAQ

## 2.1. How do I descale the kettle?

Fill the kettle with equal parts water and white vinegar and let it stand for an hour. Rinse it three times with clean water before the next use.

## 2.2. Why does the kettle switch off before the water boils?

The kettle switches off early when limescale covers the heating plate. Descaling it every month keeps the switch working.

## 2.3. What is the kettle's capacity?

The kettle holds 1.7 litres of water at the maximum mark. The minimum for a safe boil is 0.5 litres.
""",
}


def test_reader_examples_quote_and_cite_the_oracle_or_say_no_answer(tmp_path, embedder, chunker):
    from ingest.pipeline import ingest
    from rag.store import Collection

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in FAQ.items():
        (docs / name).write_text(text)
    coll = Collection.open(tmp_path / "faq", embedder.name, embedder.dim, create=True)
    ingest([docs], coll, embedder, chunker)
    report = build_dataset(coll, tmp_path / "data", mode="reader", paraphrases=1, distractors=2, oracle_p=0.7,
                           heldout_fraction=0.0, seed=1)
    train = rows(tmp_path / "data" / "train.jsonl")
    assert report.mode == "reader" and train
    chunks = {c.id: c for c in coll.all_chunks()}
    # FAQ headings become natural questions, numbering dropped, answered by the first sentences under them
    faq = {r["question"]: r for r in train if r["fact_id"].startswith("h")}
    assert "How do I descale the kettle?" in faq and "How long does a full battery last?" in faq
    for row in train:
        system, user, assistant = row["messages"]
        assert system["content"] == RAG_SYSTEM and len(row["chunk_ids"]) == 3  # as many passages either way
        passages = user["content"].split("<<<CONTEXT\n", 1)[1].split("\nCONTEXT>>>", 1)[0].split("\n\n[")
        assert len(passages) == 3
        distractors = [c for c in row["chunk_ids"] if c != row["oracle_chunk"]]
        assert len(distractors) == (2 if row["oracle"] else 3)
        # hard negatives: other sections than the oracle's, none of which states the answer
        assert all(chunks[c].heading != chunks[row["oracle_chunk"]].heading for c in distractors)
        assert all(row["evidence"] not in chunks[c].text for c in distractors)
        if row["oracle"]:
            n = int(assistant["content"].rsplit("[", 1)[1].rstrip("]"))
            assert row["chunk_ids"][n - 1] == row["oracle_chunk"]
            quoted = " ".join(assistant["content"].rsplit(" [", 1)[0].split())
            assert quoted in " ".join(passages[n - 1].split())
        else:
            assert assistant["content"] == NO_ANSWER
    # most prompts do not repeat the question as a passage heading, so the answer is found by its content
    context = lambda r: r["messages"][1]["content"].split("<<<CONTEXT", 1)[1].split("CONTEXT>>>", 1)[0]  # noqa: E731
    with_heading = sum(r["question"] in context(r) for r in faq.values())
    assert with_heading < len(faq) / 2
    assert {r["oracle"] for r in train} == {True, False}


def test_training_answers_end_the_turn_as_the_chat_template_does(smollm2_dir):
    """Generation stops at the template's end of turn (<|im_end|>), so that is what an answer must end
    with in training, even where a converted tokenizer names another token as its eos."""
    from transformers import AutoTokenizer

    from rag.finetune import tokenize_rows

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.eos_token = "<|im_start|>"  # what one GGUF conversion (transformers 5.17) set
    row = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A [1]"}]}
    (example,), _ = tokenize_rows([row], tokenizer, 64)
    learnt = tokenizer.decode([i for i in example["labels"] if i != -100])
    assert learnt == "A [1]<|im_end|>\n"


def test_cpt_rows_are_chunk_texts(sample_collection, tmp_path):
    report = build_dataset(sample_collection, tmp_path, mode="cpt", heldout_fraction=0.2)
    train, heldout = rows(tmp_path / "train.jsonl"), rows(tmp_path / "heldout.jsonl")
    assert report.train + report.heldout == len(sample_collection.all_chunks()) and heldout
    assert all(set(r) == {"id", "text", "source", "chunk_ids"} for r in train + heldout)


def test_leaks_and_bad_files_are_caught(tmp_path):
    with pytest.raises(DataError, match="1 held-out examples also appear in training \\(first: h1\\)"):
        check_leakage([{"id": "t1", "question": "Who is it?"}], [{"id": "h1", "question": "who is it"}])
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"text": "a"}\n{oops\n')
    (folder / "heldout.jsonl").write_text("")
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid JSON"):
        read_dataset(folder)
    (folder / "train.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: expected an object with 'messages' or 'text'"):
        read_dataset(folder)
    with pytest.raises(DataError, match=r"nothing/train.jsonl: missing"):
        read_dataset(tmp_path / "nothing")


def test_bad_options_and_empty_collections(sample_collection, collection, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of qa, cpt, raft, reader; got 'sft'"):
        build_dataset(sample_collection, tmp_path, mode="sft")
    with pytest.raises(ValueError, match="heldout_fraction must be in"):
        build_dataset(sample_collection, tmp_path, heldout_fraction=1.5)
    with pytest.raises(DataError, match="holds no chunks: ingest documents first"):
        build_dataset(collection, tmp_path)


@pytest.mark.slow
def test_teacher_questions_through_a_real_vllm_server(vllm_server, sample_collection, tmp_path):
    """SmolLM2 as the teacher, its reply constrained to the JSON schema by vLLM."""
    from rag.finetune_data import teacher_ask

    ask = teacher_ask(vllm_server.base_url, "smollm2")
    report = build_dataset(sample_collection, tmp_path, mode="qa", paraphrases=2, ask=ask, teacher_name="smollm2",
                           max_chunks=4, heldout_fraction=0.5)
    assert report.generator == "teacher:smollm2" and report.facts > 0
    assert all(r["question"].strip() and r["answer"].strip() for r in rows(tmp_path / "train.jsonl"))

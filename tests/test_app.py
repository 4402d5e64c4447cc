"""The Streamlit UI through streamlit.testing (no browser): chat, modes, upload, server errors."""

import pytest
from streamlit.testing.v1 import AppTest

from conftest import ROOT


@pytest.fixture
def app(monkeypatch, sample_collection, tiny_model_dir, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAG_ADAPTERS_DIR", str(tmp_path / "no-adapters"))
    monkeypatch.setenv("RAG_HOME", str(sample_collection.folder.parent))
    monkeypatch.setenv("RAG_COLLECTION", "sample")
    monkeypatch.setenv("RAG_MODEL", str(tiny_model_dir))  # plumbing only: the tiny model's text is noise
    monkeypatch.setenv("RAG_MAX_TOKENS", "8")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    return at


def _assistant_messages(at):
    return [m for m in at.chat_message if m.name == "assistant"]


def test_chat_answers_with_numbered_sources(app):
    app.chat_input[0].set_value("How long is the Tidy T3 warranty?").run()
    assert not app.exception
    [reply] = _assistant_messages(app)
    [sources] = reply.expander
    assert sources.label == "Sources (3)"
    headers = [m.value for m in sources.markdown if m.value.startswith("**[")]
    assert headers[0].startswith("**[1] ") and "tidy\\_t3\\_manual\\.html" in headers[0]
    # The tiny model's noise is supported by no passage: the best passage sentence is quoted instead,
    # its [n] linked to the source, where that sentence is highlighted.
    answer = reply.markdown[0].value
    assert answer.startswith("Quote from [\\[") and "](#src-1-" in answer
    assert "Low confidence" in reply.info[0].value
    assert any(":orange-background[" in m.value and "two\\-year warranty" in m.value for m in sources.markdown)
    app.chat_input[0].set_value("Who designed the Korvik lighthouse?").run()
    assert len(_assistant_messages(app)) == 2  # history kept across turns
    app.sidebar.button[0].click().run()  # "Clear chat"
    assert _assistant_messages(app) == []


def test_mode_switch_to_base_has_no_sources_and_lora_needs_an_adapter(app):
    mode = next(r for r in app.sidebar.radio if r.label == "Mode")
    mode.set_value("base").run()
    app.chat_input[0].set_value("What is tea?").run()
    [reply] = _assistant_messages(app)
    assert reply.expander == []
    next(r for r in app.sidebar.radio if r.label == "Mode").set_value("lora").run()
    assert "No LoRA adapter in" in app.sidebar.warning[0].value
    app.chat_input[0].set_value("What is tea?").run()
    assert "choose an adapter for the LoRA modes" in app.error[0].value


def test_upload_good_and_bad_files(app, monkeypatch, tmp_path):
    from rag.store import Collection

    monkeypatch.setenv("RAG_HOME", str(tmp_path))
    monkeypatch.setenv("RAG_COLLECTION", "uploads")
    app.run()
    app.sidebar.file_uploader[0].set_value([
        ("../../escape.md", b"The Korvik ferry runs from May to September.", "text/markdown"),
        ("empty.txt", b"", "text/plain"),
    ]).run()
    next(b for b in app.sidebar.button if b.label == "Ingest uploads").click().run()
    assert not app.exception
    errors = [e.value for e in app.sidebar.error]
    assert any("empty.txt: empty file" in e for e in errors)
    assert "files new 1" in app.sidebar.success[0].value
    coll = Collection.open(tmp_path / "uploads")
    [path] = coll.file_hashes()
    assert path == str(tmp_path / "uploads" / "uploads" / "escape.md")  # stored inside the collection only
    assert not (tmp_path / "escape.md").exists()


def test_unreachable_server_is_explained(app):
    backend = next(r for r in app.sidebar.radio if r.label == "Backend")
    backend.set_value("Server (OpenAI-compatible)").run()
    app.sidebar.text_input[0].set_value("http://127.0.0.1:9/v1").run()
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in app.sidebar.error[0].value
    app.chat_input[0].set_value("How long is the Tidy T3 warranty?").run()
    assert "cannot reach the model server" in app.error[0].value


def test_lora_modes_pick_from_the_adapter_registry(app, monkeypatch, sample_collection, tiny_model_dir, tmp_path):
    from rag.finetune import FinetuneConfig, train
    from rag.finetune_data import build_dataset

    build_dataset(sample_collection, tmp_path / "data", paraphrases=1)
    train(FinetuneConfig(data=tmp_path / "data", name="ui-demo", base_model=str(tiny_model_dir),
                         adapters_dir=tmp_path / "adapters", rank=4, max_steps=1, batch_size=2, patience=0, check=0,
                         progress=False))
    monkeypatch.setenv("RAG_ADAPTERS_DIR", str(tmp_path / "adapters"))
    app.run()
    next(r for r in app.sidebar.radio if r.label == "Mode").set_value("lora+rag").run()
    picker = next(s for s in app.sidebar.selectbox if s.label == "Adapter")
    assert picker.options == ["ui-demo"]
    app.chat_input[0].set_value("Who designed the Korvik lighthouse?").run()
    assert not app.exception and not app.error
    [reply] = _assistant_messages(app)
    assert reply.expander[0].label == "Sources (3)"


def test_a_newcomer_without_collections_meets_an_empty_state_not_an_error(monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAG_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("RAG_COLLECTION", raising=False)
    monkeypatch.setenv("RAG_MODEL", str(tiny_model_dir))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    assert "There is no collection yet" in at.info[0].value and "rag ingest PATH --collection default" in at.info[0].value
    at.chat_input[0].set_value("When was the lighthouse first lit?").run()
    assert not at.exception and not at.error
    assert any("There is no collection yet" in i.value for i in at.info)


def test_the_collection_defaults_to_one_that_exists(monkeypatch, sample_collection, tiny_model_dir):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAG_HOME", str(sample_collection.folder.parent))
    monkeypatch.delenv("RAG_COLLECTION", raising=False)  # "default" does not exist; "sample" does
    monkeypatch.setenv("RAG_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("RAG_MAX_TOKENS", "8")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    picker = next(s for s in at.sidebar.selectbox if s.label == "Collection")
    assert picker.value == "sample" and "default" not in picker.options
    at.chat_input[0].set_value("How long is the Tidy T3 warranty?").run()
    assert not at.exception and not at.error

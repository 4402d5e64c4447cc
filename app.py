"""Streamlit chat over your collections: `streamlit run app.py`.

Only widgets wired to library calls live here; retrieval, prompting, generation, ingest and upload
handling are in rag/ and ingest/.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and FAISS load OpenMP; see rag/cli.py _quiet
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import streamlit as st

from ingest.pipeline import ingest
from ingest.uploads import save_uploads
from rag.adapters import list_adapters
from rag.components import (
    embedding_dtype,
    embedding_model,
    make_assistant,
    make_chunker,
    make_embedder,
    make_generator,
    make_retriever,
    open_collection,
)
from rag.errors import ConfigError, RagError
from rag.generator import check_server
from rag.modes import ANSWER_MODES
from rag.retriever import Retriever
from rag.settings import MODES, Settings, load_settings
from rag.store import DB_NAME, list_collections

UPLOAD_WAIT_S = 600.0  # how long an upload queues behind another ingest into the same collection

st.set_page_config(page_title="ragvsft chat", page_icon="📚", layout="wide")


@st.cache_resource(show_spinner="Loading the embedding model…")
def embedder_for(model: str, device: str, dtype: str):
    return make_embedder(Settings(device=device, embedding_dtype=dtype), model=model)


@st.cache_resource(show_spinner="Loading the language model… (the first start converts it, ~20 s)")
def generator_for(settings: Settings, adapter: str | None):
    return make_generator(settings, adapter=adapter)


@st.cache_resource(show_spinner="Opening the collection…")
def retriever_for(settings: Settings, model: str) -> Retriever:
    # Kept across messages: the FAISS index and the BM25 index are built once, and the retriever
    # reloads by itself when an ingest commits a new generation. `model` (embedding_model(settings))
    # is part of the key: `rag tune` (its adaptation) re-embeds the collection with another model.
    embedder = embedder_for(model, settings.device, embedding_dtype(settings))
    return make_retriever(settings, embedder)  # with the settings' reranker


base = load_settings(environ=os.environ)
collections = [info.name for info in list_collections(base.home) if not info.damaged]

with st.sidebar:
    st.header("Settings")
    # Only collections that exist: a newcomer's missing "default" is never offered as if it were one.
    choices = collections or [base.collection]
    collection = st.selectbox("Collection", choices, index=choices.index(base.collection) if base.collection in choices else 0)
    backend_label = st.radio("Backend", ["Embedded model", "Server (OpenAI-compatible)"],
                             index=0 if base.backend == "local" else 1)
    backend = "local" if backend_label == "Embedded model" else "server"
    base_url = base.base_url
    served: list[str] = []
    if backend == "server":
        base_url = st.text_input("Server URL", base.base_url)
        models, status = check_server(base_url, base.api_key)
        (st.success if models is not None else st.error)(("✅ " if models is not None else "⛔ ") + status)
        served = models or []
    # RAG first: the product's point; then the others in their defined order.
    answer_mode = st.radio("Mode", sorted(ANSWER_MODES, key=lambda name: name != "rag"), index=0,
                           format_func=lambda name: ANSWER_MODES[name].label)
    # The registry (rag adapters) locally, with the shipped reader adapter when the model is the embedded
    # SmolLM2 it was trained for; a server offers what it serves: vLLM lists the base model first, then
    # each --lora-modules name (`rag serve` registers the registry's and the shipped ones).
    adapters = served[1:] if backend == "server" else [
        info.name for info in list_adapters(base.adapters_dir, shipped=True) if info.fits(base.model)]
    adapter = None
    if ANSWER_MODES[answer_mode].adapter:
        if adapters:
            adapter = st.selectbox("Adapter", adapters)
        elif backend == "server":
            st.warning("The server serves no LoRA adapter: train one (rag finetune) and restart `rag serve`.")
        else:
            st.warning(f"No LoRA adapter in {base.adapters_dir}: train one with "
                       "`rag finetune-data` then `rag finetune`.")
    k = st.slider("Passages (top-k)", 1, 10, base.k)
    retrieval = st.selectbox("Retrieval", MODES, index=MODES.index(base.mode),
                             help="auto: the mode `rag tune` chose for this collection, else hybrid")
    if st.button("Clear chat"):
        st.session_state.messages = []

settings = base.replace(collection=collection, backend=backend, base_url=base_url, k=k, mode=retrieval)
try:
    embedder = embedder_for(embedding_model(settings), settings.device, embedding_dtype(settings))
except RagError as exc:  # e.g. an adapted collection whose model folder was deleted
    st.error(str(exc))
    st.stop()

with st.sidebar.expander("Add documents", expanded=not collections):
    uploads = st.file_uploader("PDF, text, Markdown or HTML", type=["pdf", "txt", "md", "html", "htm"],
                               accept_multiple_files=True)
    if uploads and st.button("Ingest uploads"):
        saved, errors = save_uploads(settings.collection_dir, [(u.name, u.getvalue()) for u in uploads])
        bar = st.progress(0.0, text="Ingesting…")

        def progress(event):
            where = f" · {event.file.name}: {event.file_chunks_done}/{event.file_chunks_total} chunks" if event.file else ""
            bar.progress(event.files_done / max(1, event.files_total),
                         text=f"{event.files_done}/{event.files_total} files{where}")

        coll = open_collection(settings, embedder, create=True)
        # Another user's upload may be ingesting into this collection: queue behind it.
        report = ingest(saved, coll, embedder, make_chunker(settings, embedder), settings=settings,
                        wait=UPLOAD_WAIT_S, progress=progress)
        for line in errors + report.errors:
            st.error(line)
        st.success(report.summary())

st.title("Chat with your documents")
st.caption(f"Collection **{settings.collection}** · mode **{ANSWER_MODES[answer_mode].label}** · "
           f"{'embedded SmolLM2' if backend == 'local' else base_url}")

if "messages" not in st.session_state:
    st.session_state.messages = []

NO_COLLECTION = (
    f"There is no collection yet under `{settings.home}`. Add documents with **Add documents** in the sidebar, "
    f"or in a terminal: `rag ingest PATH --collection {settings.collection}` (files, folders or globs; PDF, "
    "text, Markdown, HTML), then ask here."
)
if not (settings.collection_dir / DB_NAME).exists():
    st.info(NO_COLLECTION)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def md_escape(text: str) -> str:
    """Document text shown as literal text inside Markdown: no headings, links or HTML from a file."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def link_markers(text: str, turn: int, n_sources: int) -> str:
    """[n] in an answer becomes a link to source n of this turn."""
    return re.sub(r"\[(\d+)\]", lambda m: f"[\\[{m[1]}\\]](#src-{turn}-{m[1]})"
                  if 1 <= int(m[1]) <= n_sources else m[0], text)


def show_answer(message: dict, turn: int) -> None:
    sources = message.get("sources", [])
    st.markdown(link_markers(message["content"], turn, len(sources)))
    if message.get("low_confidence"):
        reason = ("the documents do not seem to answer this; the passages below are related" if message.get("kind") == "abstained"
                  else "the answer is a quote: the model's own answer was not supported by the passages or did "
                       "not answer the question"
                  if message.get("kind") == "quote" else "most of the answer is not supported by the passages")
        st.info(f"Low confidence: {reason}. Check the sources.")
    unsupported = [c["sentence"] for c in message.get("citations", []) if not c["supported"]]
    if unsupported and message.get("kind") == "answer":
        st.warning("Not supported by any source: " + " · ".join(f"“{s}”" for s in unsupported))
    show_sources(message, turn)


def show_sources(message: dict, turn: int) -> None:
    sources = message.get("sources", [])
    if not sources:
        return
    label = "Related, but not an answer" if message.get("kind") == "abstained" else "Sources"
    with st.expander(f"{label} ({len(sources)})", expanded=turn == len(st.session_state.messages) - 1):
        if message.get("query") and message["query"] != message.get("question"):
            st.caption(f"Retrieved with the standalone question: {message['query']}")
        for n, src in enumerate(sources, start=1):
            where = src["source"] + (f", page {src['page']}" if src["page"] is not None else "")
            where += f" · {src['heading']}" if src.get("heading") else ""
            st.markdown(f'<span id="src-{turn}-{n}"></span>', unsafe_allow_html=True)
            st.markdown(f"**[{n}] {md_escape(where)}** · score {src['score']:.4f}")
            text, span = src["text"], src.get("highlight")
            if span:
                st.markdown(md_escape(text[:span[0]]) + " :orange-background[" + md_escape(text[span[0]:span[1]])
                            + "] " + md_escape(text[span[1]:]))
            else:
                st.text(text)


for turn, message in enumerate(st.session_state.messages):
    with st.chat_message(message["role"]):
        if message["role"] == "assistant":
            show_answer(message, turn)
        else:
            st.markdown(message["content"])

question = st.chat_input("Ask a question about your documents")
if question:
    history = [{"role": m["role"], "content": m["content"]} for m in st.session_state.messages]
    st.session_state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            if ANSWER_MODES[answer_mode].adapter and adapter is None:
                raise ConfigError("choose an adapter for the LoRA modes (none is available yet)")
            use_rag = ANSWER_MODES[answer_mode].retrieval
            if use_rag and not (settings.collection_dir / DB_NAME).exists():
                st.info(NO_COLLECTION)
                st.stop()
            retriever = (retriever_for(settings.replace(k=base.k, mode=base.mode), embedding_model(settings))
                         if use_rag else None)
            assistant = make_assistant(settings, generator_for(settings, adapter), retriever)
            with st.spinner("Retrieving…"):
                stream = assistant.ask_stream(question, answer_mode, history)
            placeholder = st.empty()
            placeholder.write_stream(iter(stream))
            answer = stream.answer
            message = {"role": "assistant", "content": answer.answer, "question": question, **{
                key: value for key, value in answer.as_dict().items()
                if key in ("kind", "sources", "citations", "low_confidence", "query", "notes")}, "gated": answer.gated}
            turn = len(st.session_state.messages)
            st.session_state.messages.append(message)
            placeholder.empty()
            show_answer(message, turn)
        except RagError as exc:  # the user's to fix; any other exception is a bug and shows its traceback
            st.error(str(exc))

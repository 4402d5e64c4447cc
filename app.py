"""Streamlit chat over your collections: `streamlit run app.py`.

Only widgets wired to library calls live here; retrieval, prompting, generation, ingest and upload
handling are in rag/ and ingest/.
"""

from __future__ import annotations

import os

import streamlit as st

from ingest.pipeline import ingest
from ingest.uploads import save_uploads
from rag.adapters import list_adapters
from rag.answer import Assistant
from rag.components import make_chunker, make_embedder, make_generator, open_collection
from rag.errors import ConfigError, RagError
from rag.generator import check_server
from rag.retriever import Retriever
from rag.settings import MODES, Settings, load_settings
from rag.store import list_collections

os.environ.setdefault("HF_HUB_OFFLINE", "1")
UPLOAD_WAIT_S = 600.0  # how long an upload queues behind another ingest into the same collection
ANSWER_MODES = {"RAG": "rag", "Base model": "base", "LoRA": "lora", "LoRA + RAG": "lora+rag"}

st.set_page_config(page_title="ragvsft chat", page_icon="📚", layout="wide")


@st.cache_resource(show_spinner="Loading the embedding model…")
def embedder_for(model: str, device: str):
    return make_embedder(Settings(embedding_model=model, device=device))


@st.cache_resource(show_spinner="Loading the language model… (the first start converts it, ~20 s)")
def generator_for(settings: Settings, adapter: str | None):
    return make_generator(settings, adapter=adapter)


@st.cache_resource(show_spinner="Opening the collection…")
def retriever_for(settings: Settings) -> Retriever:
    # Kept across messages: the FAISS index and the BM25 index are built once, and the retriever
    # reloads by itself when an ingest commits a new generation.
    embedder = embedder_for(settings.embedding_model, settings.device)
    return Retriever(open_collection(settings, embedder), embedder)


base = load_settings(environ=os.environ)
collections = [info.name for info in list_collections(base.home)]

with st.sidebar:
    st.header("Settings")
    choices = sorted(set(collections) | {base.collection})
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
    mode_label = st.radio("Mode", list(ANSWER_MODES), index=0)
    # The registry (rag adapters) for the embedded model; a server offers what it serves: vLLM lists
    # the base model first, then each --lora-modules name (`rag serve` registers the registry's).
    adapters = served[1:] if backend == "server" else [info.name for info in list_adapters(base.adapters_dir)]
    adapter = None
    if ANSWER_MODES[mode_label].startswith("lora"):
        if adapters:
            adapter = st.selectbox("Adapter", adapters)
        elif backend == "server":
            st.warning("The server serves no LoRA adapter: train one (rag finetune) and restart `rag serve`.")
        else:
            st.warning(f"No LoRA adapter in {base.adapters_dir}: train one with "
                       "`rag finetune-data` then `rag finetune`.")
    k = st.slider("Passages (top-k)", 1, 10, base.k)
    retrieval = st.selectbox("Retrieval", MODES, index=MODES.index(base.mode))
    if st.button("Clear chat"):
        st.session_state.messages = []

settings = base.replace(collection=collection, backend=backend, base_url=base_url, k=k, mode=retrieval)
embedder = embedder_for(settings.embedding_model, settings.device)

with st.sidebar.expander("Add documents"):
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
        report = ingest(saved, coll, embedder, make_chunker(settings, embedder), index_type=settings.index_type,
                        exact_threshold=settings.exact_threshold, wait=UPLOAD_WAIT_S, progress=progress)
        for line in errors + report.errors:
            st.error(line)
        st.success(report.summary())

st.title("Chat with your documents")
st.caption(f"Collection **{settings.collection}** · mode **{mode_label}** · "
           f"{'embedded SmolLM2' if backend == 'local' else base_url}")

if "messages" not in st.session_state:
    st.session_state.messages = []


def show_sources(sources: list[dict]) -> None:
    if not sources:
        return
    with st.expander(f"Sources ({len(sources)})"):
        for n, src in enumerate(sources, start=1):
            where = src["source"] + (f", page {src['page']}" if src["page"] is not None else "")
            st.markdown(f"**[{n}] {where}** · score {src['score']:.4f}")
            st.text(src["text"])


for message in st.session_state.messages:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
        show_sources(message.get("sources", []))

question = st.chat_input("Ask a question about your documents")
if question:
    st.session_state.messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            answer_mode = ANSWER_MODES[mode_label]
            if answer_mode.startswith("lora") and adapter is None:
                raise ConfigError("choose an adapter for the LoRA modes (none is available yet)")
            use_rag = answer_mode in ("rag", "lora+rag")
            retriever = retriever_for(settings.replace(k=base.k, mode=base.mode)) if use_rag else None
            generator = generator_for(settings, adapter)
            assistant = Assistant(generator, retriever, k=settings.k, retrieval_mode=settings.mode,
                                  max_tokens=settings.max_tokens, temperature=settings.temperature)
            with st.spinner("Retrieving…"):
                stream = assistant.ask_stream(question, "rag" if use_rag else "base")
            text = st.write_stream(iter(stream))
            sources = [hit.as_dict() for hit in stream.sources]
            show_sources(sources)
            st.session_state.messages.append({"role": "assistant", "content": text, "sources": sources})
        except RagError as exc:  # the user's to fix; any other exception is a bug and shows its traceback
            st.error(str(exc))

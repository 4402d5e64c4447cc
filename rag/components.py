"""Components: build the embedder, chunker, collection, retriever, generator and assistant from Settings.

The one place where settings turn into objects; the CLI, the UI and the eval harness all call it.
"""

from __future__ import annotations

from rag.adapters import resolve_adapter
from rag.answer import Assistant
from rag.chunking import Chunker
from rag.embedding import Embedder, SentenceTransformerEmbedder
from rag.generator import GenerationError, Generator, LocalGenerator, OpenAIGenerator
from rag.models import resolve_model
from rag.retriever import Retriever
from rag.settings import Settings
from rag.store import Collection


def make_embedder(settings: Settings) -> Embedder:
    return SentenceTransformerEmbedder(settings.embedding_model, settings.device, settings.embed_batch_size)


def make_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(embedder.tokenizer, embedder.max_seq_length, settings.chunk_size, settings.chunk_overlap)


def open_collection(settings: Settings, embedder: Embedder | None = None, create: bool = False) -> Collection:
    return Collection.open(
        settings.collection_dir,
        model=embedder.name if embedder else None,
        dim=embedder.dim if embedder else None,
        create=create,
    )


def make_retriever(settings: Settings, embedder: Embedder | None = None) -> Retriever:
    embedder = embedder or make_embedder(settings)
    return Retriever(open_collection(settings, embedder), embedder)


def make_generator(settings: Settings, adapter: str | None = None) -> Generator:
    """`adapter`: a registered adapter's name (or, locally, any peft folder). A server is asked for
    it by name in each request's `model` field; it must be one the server lists."""
    if settings.backend == "server":
        generator = OpenAIGenerator(
            settings.base_url, adapter or settings.model, settings.api_key,
            timeout=settings.request_timeout, max_retries=settings.max_retries,
            connect_timeout=settings.connect_timeout, first_token_timeout=settings.first_token_timeout,
            tokenizer=settings.server_tokenizer or None,
        )
        if adapter:
            served = generator.list_models()
            if adapter not in served:
                raise GenerationError(
                    f"the model server at {settings.base_url} does not serve adapter {adapter!r} (it serves: "
                    f"{', '.join(served) or 'nothing'}); restart `rag serve` after training it"
                )
        return generator
    adapter_path = str(resolve_adapter(adapter, settings.adapters_dir).path) if adapter else None
    return LocalGenerator(resolve_model(settings.model, settings.cache_dir), settings.device, adapter=adapter_path)


def make_assistant(settings: Settings, generator: Generator, retriever: Retriever | None) -> Assistant:
    """The one place an Assistant is made: retrieval, gate, fallback and decoding from `settings`."""
    rewrite = settings.rewrite
    if rewrite == "auto":
        rewrite = "model" if settings.backend == "server" else "keywords"
    return Assistant(generator, retriever, k=settings.k, retrieval_mode=settings.mode, max_tokens=settings.max_tokens,
                     temperature=settings.temperature, abstain_threshold=settings.abstain_threshold,
                     fallback=settings.fallback, rewrite=rewrite, context_window=settings.context_window,
                     min_coverage=settings.min_coverage)

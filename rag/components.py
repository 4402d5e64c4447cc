"""Components: build the embedder, chunker, collection, retriever, generator and assistant from Settings.

The one place where settings turn into objects; the CLI, the UI and the eval harness all call it.
"""

from __future__ import annotations

from rag.adapters import AdapterError, resolve_adapter
from rag.answer import Assistant
from rag.chunking import Chunker
from rag.embedding import Embedder, SentenceTransformerEmbedder, model_name
from rag.errors import ConfigError
from rag.generator import GenerationError, Generator, LocalGenerator, OpenAIGenerator
from rag.models import resolve_model
from rag.rerank import CrossEncoderReranker, LLMReranker, Reranker
from rag.retriever import Retriever
from rag.settings import Settings
from rag.store import Collection, adapted_folder, base_of, recorded_dtype, recorded_model


def embedding_dtype(settings: Settings, *, fresh: bool = False) -> str:
    """`embedding_dtype`, where "auto" is the precision the collection's vectors were embedded in, so
    queries and new files match them; for a new collection (or `fresh`: re-embedding it), "auto"
    stays, the fastest precision this machine computes natively (rag/embedding.py)."""
    if settings.embedding_dtype == "auto" and not fresh:
        return recorded_dtype(settings.collection_dir) or "auto"
    return settings.embedding_dtype


def embedding_model(settings: Settings) -> str:
    """The model that embeds for the settings' collection: `embedding_model`, or, when the collection
    was adapted to (by `rag tune`), its adapted copy of that model, a folder inside it."""
    recorded = recorded_model(settings.collection_dir)
    folder = adapted_folder(settings.collection_dir, recorded) if recorded else None
    if folder is None or base_of(recorded) != model_name(settings.embedding_model):
        return settings.embedding_model
    if not folder.is_dir():
        raise ConfigError(
            f"collection '{settings.collection}' is embedded with its adapted model {recorded!r}, but its folder "
            f"{folder} is missing: re-embed it with the base model: rag tune -c {settings.collection} --base-embedder"
        )
    return str(folder)


def make_embedder(settings: Settings, *, fresh: bool = False, model: str | None = None) -> Embedder:
    """`model`: this one instead of `embedding_model(settings)`."""
    return SentenceTransformerEmbedder(model or embedding_model(settings), settings.device,
                                       settings.embed_batch_size, embedding_dtype(settings, fresh=fresh))


def make_chunker(settings: Settings, embedder: Embedder) -> Chunker:
    return Chunker(embedder.tokenizer, embedder.max_seq_length, settings.chunk_size, settings.chunk_overlap)


def open_collection(settings: Settings, embedder: Embedder | None = None, create: bool = False) -> Collection:
    """With `create` (to write into it), the embedder must embed in the collection's precision:
    vectors of two precisions are never mixed in one collection (`rag ingest --reembed` converts it)."""
    collection = Collection.open(
        settings.collection_dir,
        model=embedder.name if embedder else None,
        dim=embedder.dim if embedder else None,
        create=create,
    )
    if create and embedder is not None:
        recorded = collection.embedding_dtype
        if recorded is None:
            collection.set_meta({"embedding_dtype": embedder.dtype})
        elif recorded != embedder.dtype:
            collection.close()
            raise ConfigError(
                f"collection '{collection.name}' holds {recorded} vectors but embedding_dtype gives {embedder.dtype}: "
                f"set embedding_dtype to auto (or {recorded}), or re-embed it: rag ingest --reembed -c {collection.name}"
            )
    return collection


def make_retriever(settings: Settings, embedder: Embedder | None = None, collection: Collection | None = None,
                   generator: Generator | None = None) -> Retriever:
    """The settings' collection (or `collection`, already open) behind the settings' reranker;
    `generator`: the model the LLM reranker asks, when the caller has it loaded already."""
    embedder = embedder or make_embedder(settings)
    collection = collection or open_collection(settings, embedder)
    return Retriever(collection, embedder, reranker=make_reranker(settings, generator),
                     rerank_depth=settings.rerank_depth, section_weight=settings.section_weight)


def make_reranker(settings: Settings, generator: Generator | None = None) -> Reranker | None:
    """None when rerank is "none"; "llm" asks `generator`, else the settings' own model (no adapter)."""
    if settings.rerank == "cross-encoder":
        return CrossEncoderReranker(settings.rerank_model, settings.device)
    if settings.rerank == "llm":
        return LLMReranker(generator or make_generator(settings))
    return None


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
    info = resolve_adapter(adapter, settings.adapters_dir) if adapter else None
    if info is not None and not info.fits(settings.model):
        raise AdapterError(f"adapter {adapter!r} ships for the embedded SmolLM2 ({info.base_model}); it does not fit "
                           f"model {settings.model!r}")
    return LocalGenerator(resolve_model(settings.model, settings.cache_dir), settings.device,
                          adapter=str(info.path) if info else None)


def make_assistant(settings: Settings, generator: Generator, retriever: Retriever | None) -> Assistant:
    """The one place an Assistant is made: retrieval, gate, fallback and decoding from `settings`."""
    rewrite = settings.rewrite
    if rewrite == "auto":
        rewrite = "model" if settings.backend == "server" else "keywords"
    return Assistant(generator, retriever, k=settings.k, retrieval_mode=settings.mode, max_tokens=settings.max_tokens,
                     temperature=settings.temperature, abstain_threshold=settings.abstain_threshold,
                     fallback=settings.fallback, rewrite=rewrite, context_window=settings.context_window,
                     min_coverage=settings.min_coverage)

"""The distributed ingest engine: the files, decisions and collection of ingest/pipeline.py, with
the parsing and embedding done by Ray Data on a cluster.

The driver (this process) discovers and hashes the files and decides new / changed / unchanged /
pruned with the steps it shares with the local engine, holding the collection's write lock all the
while. Only new and changed files go to Ray:
- read + parse + chunk as a `flat_map` over files (`parse_rows`); a file that cannot be ingested
  comes back as a row holding its one-line error, never as a failed task;
- embedding as `map_batches` over a fixed pool of `EmbedActor`s, each loading the model once (on a
  GPU with `gpus_per_actor` > 0); Ray Data restarts a dead actor and retries its batch;
- the rows and their vectors written as Parquet shards (`shard_schema`) to `<collection>/staging/`.
The driver then reads the shards one at a time (first the file outcomes, then the chunks in
batches) and commits them through the store's Writer as one generation: the collection is as it
was before or as it is after, never half. The staging folder goes after the commit; one left by a
killed driver is removed by the next writer of the collection (an orphan, rag/store.py).

It does not schedule Ray itself (cluster size, autoscaling, object spilling are Ray's), and it does
not know about indexes: the commit builds or extends them as for the local engine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ingest.pipeline import (
    IngestReport,
    check_file,
    commit,
    parse_file,
    prune_missing,
    record_failure,
    record_landed,
    start_report,
)
from rag.bm25 import remove_tree
from rag.chunking import Chunk, Chunker, indexed_text
from rag.embedding import Embedder
from rag.errors import ConfigError, MissingDependency
from rag.loading import LoadError
from rag.settings import Settings
from rag.store import STAGING_NAME, Collection

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import ray
    import ray.data
except ImportError:
    raise MissingDependency("the Ray engine needs Ray Data: pip install -e '.[ray]'") from None

CHUNK, FILE = "chunk", "file"  # the two kinds of shard row: a chunk, and one outcome row per file
READ_BATCH = 8192  # shard rows the driver holds at a time while committing
CPUS_PER_ACTOR = 1  # each embedding actor's CPU slot (Ray then gives torch one thread); GPU actors too


def shard_schema(dim: int) -> pa.Schema:
    """A staged row. Chunk rows carry a chunk and its vector; each file sent to Ray has one file
    row: its error line ("" when it chunked), its loading warnings (JSON list) and its chunk count."""
    return pa.schema([
        ("kind", pa.string()), ("path", pa.string()),
        ("id", pa.string()), ("page", pa.int64()), ("start", pa.int64()), ("end", pa.int64()),
        ("text", pa.string()), ("heading", pa.string()),
        ("error", pa.string()), ("warnings", pa.string()), ("n_chunks", pa.int64()),
        ("vector", pa.list_(pa.float32(), dim)),  # L2-normalised; null on file rows
    ])


@dataclass
class RayOptions:
    address: str | None = None  # None: RAY_ADDRESS, else the cluster last started here, else a new local Ray
    embed_actors: int = 1  # embedding actors, each holding one copy of the model
    gpus_per_actor: float = 0.0  # > 0: actors run on GPUs (fractions share one)
    batch_size: int = 256  # chunks per map_batches call

    def __post_init__(self) -> None:
        if self.embed_actors < 1:
            raise ConfigError(f"embed_actors must be at least 1, got {self.embed_actors!r}")
        if self.gpus_per_actor < 0:
            raise ConfigError(f"gpus_per_actor must be 0 or more, got {self.gpus_per_actor!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size!r}")


def ingest_ray(
    paths: Iterable[str | Path],
    collection: Collection,
    embedder: Embedder,
    chunker: Chunker,
    *,
    settings: Settings | None = None,
    options: RayOptions | None = None,
    prune: bool = False,
    wait: float = 0.0,
    embed_actor: type["EmbedActor"] | None = None,
) -> IngestReport:
    """`ingest.pipeline.ingest` on Ray: the same report, the same collection. `embedder` names the
    model and precision the actors load (and gives the dimension); `chunker` is shipped to the parse
    tasks as it is. Uses the Ray this process is connected to, else connects to or starts one
    (`options.address`) and shuts it down after. `embed_actor`: the class the pool runs (EmbedActor)."""
    settings = settings or Settings()
    options = options or RayOptions()
    start = time.perf_counter()
    report, files = start_report(collection.name, paths)
    staging = collection.folder / STAGING_NAME
    # Taking the lock removes a staging folder a killed driver left (rag/store.py orphans).
    with collection.writer(settings.index_type, settings.exact_threshold, wait=wait) as writer:
        known = collection.file_hashes(chunker.signature)  # "" for a file chunked otherwise: read again
        writer.parsed_with = chunker.signature
        todo: dict[str, tuple[str, int]] = {}
        for path in files:
            hashed = check_file(path, known, writer, report)
            if hashed is not None:
                todo[str(path)] = hashed
        if todo:
            # The actors load the driver's model in its precision, so their vectors are the local engine's.
            model = {"model": getattr(embedder, "source", embedder.name), "dtype": embedder.dtype,
                     "batch_size": settings.embed_batch_size}
            _run_job(list(todo), staging, chunker, model, options, embed_actor or EmbedActor, settings.max_file_mb)
            outcomes = read_outcomes(staging)
            landed: dict[str, tuple[str, int, int]] = {}
            for key, (sha, size) in todo.items():
                if key not in outcomes:
                    raise RuntimeError(f"the Ray job wrote no outcome for {key}; nothing was committed")
                error, warnings, n_chunks = outcomes[key]
                if error:
                    record_failure(report, writer, key, known, error, parsed=True)
                else:
                    landed[key] = (sha, size, n_chunks)
                    record_landed(report, key, known, warnings)
            writer.replace_files(landed, lambda: read_chunks(staging, embedder.dim))
        if prune:
            prune_missing(writer, known, report)
        commit(writer, report)
        remove_tree(staging)
    report.seconds = time.perf_counter() - start
    return report


def _run_job(keys: list[str], staging: Path, chunker: Chunker, model: dict, options: RayOptions,
             embed_actor: type["EmbedActor"], max_file_mb: float | None = None) -> None:
    """Parse, chunk and embed the files `keys` on Ray; the rows land as Parquet shards in `staging`.
    `model`: the embedding actors' keyword arguments but the device."""
    started = not ray.is_initialized()
    if started:
        ray.init(address=options.address)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if options.embed_actors * CPUS_PER_ACTOR >= cpus:
            # A fixed pool that holds every CPU starves the parse tasks: Ray Data would wait forever.
            fits = (cpus - 1) // CPUS_PER_ACTOR
            raise ConfigError(
                f"{options.embed_actors} embedding actor(s) would hold all {cpus} CPUs of the Ray cluster and leave "
                "none to parse files: " + (f"use --embed-actors {fits} or less, or " if fits else "")
                + "give Ray more CPUs (ray start --num-cpus N)"
            )
        device = "cuda" if options.gpus_per_actor > 0 else "cpu"
        dataset = (
            ray.data.from_items([{"path": key} for key in keys])
            .flat_map(parse_rows, fn_kwargs={"chunker": chunker, "max_file_mb": max_file_mb})
            .map_batches(
                embed_actor, fn_constructor_kwargs={**model, "device": device},
                batch_size=options.batch_size, batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=options.embed_actors),
                num_cpus=CPUS_PER_ACTOR, num_gpus=options.gpus_per_actor or None,
            )
        )
        dataset.write_parquet(str(staging))
    finally:
        if started:
            ray.shutdown()


def parse_rows(row: dict, chunker: Chunker, max_file_mb: float | None = None) -> list[dict]:
    """The `flat_map` step: one file to its chunk rows and its file row. A LoadError is data here
    (the file row's `error`), so one bad file never fails the job."""
    key = row["path"]
    try:
        doc, chunks = parse_file(Path(key), chunker, max_file_mb)
    except LoadError as exc:
        return [_file_row(key, error=str(exc))]
    rows = [{"kind": CHUNK, "path": key, "id": c.id, "page": c.page, "start": c.start, "end": c.end,
             "text": c.text, "heading": c.heading, "error": "", "warnings": "", "n_chunks": 0} for c in chunks]
    return rows + [_file_row(key, warnings=doc.warnings, n_chunks=len(chunks))]


def _file_row(key: str, *, error: str = "", warnings: Iterable[str] = (), n_chunks: int = 0) -> dict:
    return {"kind": FILE, "path": key, "id": "", "page": None, "start": 0, "end": 0, "text": "", "heading": "",
            "error": error, "warnings": json.dumps(list(warnings)), "n_chunks": n_chunks}


class EmbedActor:
    """The `map_batches` step, one instance per actor of the pool: the model is loaded once, then
    each batch of rows gets its vectors (chunk rows; file rows pass through with none)."""

    def __init__(self, model: str, device: str, batch_size: int, dtype: str):
        from rag.embedding import SentenceTransformerEmbedder

        self.embedder = SentenceTransformerEmbedder(model, device, batch_size, dtype)
        self.schema = shard_schema(self.embedder.dim)

    def __call__(self, batch: pa.Table) -> pa.Table:
        is_chunk = pc.equal(batch.column("kind"), CHUNK).to_numpy(zero_copy_only=False)  # (n,) bool
        texts = batch.filter(is_chunk)
        vectors = np.zeros((batch.num_rows, self.embedder.dim), dtype=np.float32)  # (n, dim)
        vectors[is_chunk] = self.embedder.embed(
            [indexed_text(h, t) for h, t in zip(texts.column("heading").to_pylist(), texts.column("text").to_pylist())]
        )
        columns = {name: batch.column(name) for name in self.schema.names if name != "vector"}
        columns["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.ravel()), self.embedder.dim, mask=pa.array(~is_chunk)
        )
        return pa.table(columns).cast(self.schema)


def shards(staging: Path) -> list[Path]:
    return sorted(staging.glob("*.parquet"))


def read_outcomes(staging: Path) -> dict[str, tuple[str, list[str], int]]:
    """path -> (error line or "", warnings, number of chunks), from the file rows of every shard
    (only those columns are read). A row written twice by a retried task is read once."""
    outcomes = {}
    for shard in shards(staging):
        table = pq.read_table(shard, columns=["kind", "path", "error", "warnings", "n_chunks"])
        table = table.filter(pc.equal(table.column("kind"), FILE))
        for key, error, warnings, n_chunks in zip(*(table.column(c).to_pylist()
                                                    for c in ("path", "error", "warnings", "n_chunks"))):
            outcomes[key] = (error, json.loads(warnings), n_chunks)
    return outcomes


def read_chunks(staging: Path, dim: int) -> Iterator[tuple[list[Chunk], np.ndarray]]:
    """(chunks, (m, dim) float32 vectors) from the chunk rows of the shards, one shard and at most
    READ_BATCH rows at a time, so the driver never holds a whole shard."""
    columns = ["kind", "path", "id", "page", "start", "end", "text", "heading", "vector"]
    for shard in shards(staging):
        parquet = pq.ParquetFile(shard)
        width = parquet.schema_arrow.field("vector").type.list_size
        if width != dim:
            raise RuntimeError(f"{shard}: vectors of dimension {width}, but the collection's are {dim}")
        for batch in parquet.iter_batches(batch_size=READ_BATCH, columns=columns):
            rows = pa.Table.from_batches([batch])
            rows = rows.filter(pc.equal(rows.column("kind"), CHUNK))
            if not rows.num_rows:
                continue
            vectors = rows.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, dim)
            fields = ("id", "path", "page", "start", "end", "text", "heading")  # Chunk's own order
            chunks = [Chunk(*values) for values in zip(*(rows.column(c).to_pylist() for c in fields))]
            yield chunks, vectors

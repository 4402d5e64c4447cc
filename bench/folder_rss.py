"""Peak memory of `rag ingest` on a large folder: does RSS stay bounded as chunks are embedded?

A folder of generated documents (seeded; Markdown, HTML and prose text from bench/large_inputs.py,
`--file-kb` each, `--mb` in all) is ingested by ingest.pipeline.ingest into a new collection with the
default settings, in a fresh process per arm, while a thread samples the process's RSS every 0.25 s.
Reported per arm: peak RSS, RSS when a quarter, half, three quarters and all of the chunks were
embedded, the growth per 1,000 chunks over the second half, chunks/s, and the size on disk of the
collection's index, BM25 and SQLite files (what must grow with the corpus).

Arms (`--arms`): `trim` is the product as it is; `no-trim` is the same with the embedder's
malloc_trim after each batch turned off (rag.embedding.release_freed_memory a no-op), the code before
the fix, so both run on the same folder in one run.

    python bench/folder_rss.py [--mb 4] [--arms trim,no-trim] [--model PATH] [--out bench/results/folder_rss.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

KINDS = ("markdown", "html", "prose")


def write_folder(folder: Path, mb: float, file_kb: float) -> dict:
    from bench.large_inputs import MB, SUFFIX, blocks

    folder.mkdir(parents=True, exist_ok=True)
    total, files, rng = int(mb * MB), 0, random.Random(0)
    streams = {kind: blocks(kind, random.Random(kind)) for kind in KINDS}
    written = 0
    while written < total:
        kind = rng.choice(KINDS)
        size = min(int(file_kb * 1024 * rng.uniform(0.5, 1.5)), total - written)
        parts, length = [], 0
        while length < size:
            piece = next(streams[kind])
            parts.append(piece[: size - length])
            length += len(parts[-1])
        text = "".join(parts)
        if kind == "html":
            text = f"<html><body>\n{text}\n</body></html>\n"
        path = folder / f"{files // 100:03d}" / f"doc{files:05d}{SUFFIX.get(kind, '.txt')}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="ascii")
        written += len(text)
        files += 1
    return {"files": files, "bytes": written}


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(arm: str, folder: Path, model: str | None) -> dict:
    import rag.embedding
    from ingest.pipeline import ingest
    from rag.components import make_chunker, make_embedder
    from rag.settings import Settings
    from rag.store import Collection

    if arm == "no-trim":
        rag.embedding.release_freed_memory = lambda: None
    settings = Settings(**({"embedding_model": model} if model else {}))
    embedder = make_embedder(settings)
    base = rss_mb()
    samples: list[tuple[float, int, float]] = []  # (seconds, chunks embedded, RSS MB)
    state = {"chunks": 0, "stop": False}
    start = time.perf_counter()

    def sample() -> None:
        while not state["stop"]:
            samples.append((time.perf_counter() - start, state["chunks"], rss_mb()))
            if len(samples) % 60 == 0:
                print(f"  {arm}: {samples[-1][0]:.0f} s, {samples[-1][1]} chunks, RSS {samples[-1][2]:.0f} MB",
                      file=sys.stderr, flush=True)
            time.sleep(0.25)

    def progress(event) -> None:
        state["chunks"] = event.chunks_embedded

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        collection = Collection.open(Path(tmp) / "big", embedder.name, embedder.dim, create=True)
        report = ingest([folder], collection, embedder, make_chunker(settings, embedder), settings=settings,
                        progress=progress)
        seconds = time.perf_counter() - start
        state["stop"] = True
        thread.join()
        samples.append((seconds, state["chunks"], rss_mb()))
        disk = {}
        for path in collection.folder.rglob("*"):
            if path.is_file():
                kind = "sqlite" if ".sqlite" in path.name or path.suffix in (".db", ".db-wal") else (
                    "bm25" if "bm25" in str(path.relative_to(collection.folder)) else "index")
                disk[kind] = disk.get(kind, 0) + path.stat().st_size
    chunks = report.chunks_added
    peak = max(samples, key=lambda s: s[2])
    if os.environ.get("FOLDER_RSS_SAMPLES"):
        Path(os.environ["FOLDER_RSS_SAMPLES"]).write_text(json.dumps(samples))
    at = {}
    for share in (0.25, 0.5, 0.75, 1.0):
        hits = [s for s in samples if s[1] >= share * chunks]
        at[f"{share:g}"] = round(hits[0][2], 1) if hits else None
    half = [s for s in samples if s[1] >= chunks / 2]
    growth = None
    if len(half) > 1 and half[-1][1] > half[0][1]:
        growth = round((half[-1][2] - half[0][2]) / (half[-1][1] - half[0][1]) * 1000, 1)
    return {"arm": arm, "device": getattr(getattr(embedder, "_model", None), "device", None).__str__(),
            "dtype": embedder.dtype, "files": report.new + report.changed, "chunks": chunks, "seconds": round(seconds, 1),
            "chunks_per_s": round(chunks / seconds, 1), "rss_base_mb": round(base, 1),
            "rss_peak_mb": round(peak[2], 1), "rss_peak_at": {"seconds": round(peak[0], 1), "chunks": peak[1]}, "rss_at_share_of_chunks_mb": at,
            "rss_growth_mb_per_1000_chunks_second_half": growth,
            "disk_mb": {k: round(v / 2**20, 1) for k, v in sorted(disk.items())},
            "errors": len(report.errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the generated folder")
    parser.add_argument("--file-kb", type=float, default=100.0, help="mean file size")
    parser.add_argument("--arms", default="trim,no-trim")
    parser.add_argument("--model", help="embedding model name or folder (default: the settings' default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "folder_rss.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.folder), args.model)))
        return

    from bench.machine import describe

    began = time.perf_counter()
    out = {"benchmark": "folder_rss", "date": time.strftime("%Y-%m-%d"), "machine": describe(), "mb": args.mb,
           "file_kb": args.file_kb, "arms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        out["folder"] = write_folder(Path(tmp) / "docs", args.mb, args.file_kb)
        print(f"folder: {out['folder']} in {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        for arm in [a for a in args.arms.split(",") if a]:
            command = [sys.executable, __file__, "--child", arm, "--folder", str(Path(tmp) / "docs")]
            if args.model:
                command += ["--model", args.model]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
            if done.returncode:
                raise SystemExit(f"{arm} failed (its error above)")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            out["arms"][arm] = row
            print(f"{arm:8} {row['chunks']} chunks in {row['seconds']} s ({row['chunks_per_s']}/s): RSS "
                  f"{row['rss_base_mb']:.0f} MB after the model, peak {row['rss_peak_mb']:.0f} MB, second half "
                  f"{row['rss_growth_mb_per_1000_chunks_second_half']} MB per 1,000 chunks", file=sys.stderr)
    out["seconds"] = round(time.perf_counter() - began, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["arms"], indent=2))


if __name__ == "__main__":
    main()

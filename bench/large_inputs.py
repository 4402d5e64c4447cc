"""Pathological inputs: seconds per MB of parsing and chunking at 1, 10 and 50 MB, and of the whole
ingest (embedding included) at 1 and 10 MB, with peak memory.

Kinds of input, generated (seeded) into a temporary folder:
- line: one line of words, no newline (the 50 MB line that once ran for over ten minutes);
- char: one character repeated, no whitespace at all (langchain's last resort, single characters);
- prose: sentences, paragraphs and line breaks;
- markdown: a "##" section every ~800 bytes with a fenced code block;
- html: an <h2> every ~800 bytes, half of them "Part<br>n" (a title its rendered text lacks);
- numbered: every other line a numbered heading ("12 Item ..."), every section a short one.

Each measurement runs in a fresh process, so that its peak RSS (ru_maxrss) is its own: `parse` is
rag.loading.load + Chunker.split with the embedder's tokenizer alone (rss_base_mb: after loading it);
`langchain` is the same with langchain's own RecursiveCharacterTextSplitter (one tokenizer call per
split; the splitter before this benchmark), at 1 MB only; `ingest` is ingest.pipeline.ingest into a
scratch collection with the default embedder and settings.

    python bench/large_inputs.py [--sizes 1,10,50] [--ingest-sizes 1,10] [--out bench/results/large_inputs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MB = 2**20
KINDS = ("line", "char", "prose", "markdown", "html", "numbered")
SUFFIX = {"markdown": ".md", "html": ".html"}
LARGEST_FOR = {"markdown": 10, "html": 10, "numbered": 10}  # the three kinds go to 50 MB
INGEST_KINDS = {1: ("line", "char", "prose"), 10: ("prose",)}  # embedding is the slow, linear part
WORDS = ("the a of to and in is was for on with as by at from lighthouse keeper storm island light "
         "lens granite harbour marmot meadow eagle whistle burrow colony winter summer model adapter "
         "layer token chunk index query answer passage document section chapter backup tool disk "
         "memory cache server request timeout retry vacuum cleaner filter battery charge dock").split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 22))).capitalize() + "."


def blocks(kind: str, rng: random.Random):
    """Endless pieces of text of one kind; the file is cut at the size wanted."""
    n = 0
    while True:
        n += 1
        if kind == "line":
            yield " ".join(rng.choice(WORDS) for _ in range(2000)) + " "
        elif kind == "char":
            yield "a" * MB
        elif kind == "prose":
            yield "\n".join(" ".join(sentence(rng) for _ in range(rng.randint(1, 4))) for _ in range(4)) + "\n\n"
        elif kind == "markdown":
            yield (f"## Section {n}\n\n" + " ".join(sentence(rng) for _ in range(6)) + "\n\n```\nrag ingest part"
                   f"{n}.txt\n```\n\n" + " ".join(sentence(rng) for _ in range(3)) + "\n\n")
        elif kind == "html":
            title = f"Part<br>{n}" if n % 2 else f"Section {n}"
            yield f"<h2>{title}</h2>\n<p>" + " ".join(sentence(rng) for _ in range(8)) + "</p>\n"
        elif kind == "numbered":
            yield f"{n % 90 + 1} Item {rng.choice(WORDS)} {rng.choice(WORDS)}\n{sentence(rng)}\n"


def write_input(folder: Path, kind: str, mb: float) -> Path:
    path = folder / f"{kind}_{mb:g}mb{SUFFIX.get(kind, '.txt')}"
    size, rng = int(mb * MB), random.Random(f"{kind}{mb}")
    with path.open("w", encoding="ascii") as fh:
        if kind == "html":
            fh.write("<html><body>\n")
        for piece in blocks(kind, rng):
            room = size - fh.tell()
            if room <= len(piece):
                fh.write(piece[:room])
                break
            fh.write(piece)
        if kind == "html":
            fh.write("\n</body></html>\n")
    return path


def rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def child(stage: str, path: Path) -> dict:
    """One measurement, in this (fresh) process."""
    if stage == "ingest":
        from bench.corpus import scratch_collection
        from rag.components import make_embedder
        from rag.settings import Settings

        settings = Settings()
        embedder = make_embedder(settings)
        base = rss_mb()
        start = time.perf_counter()
        collection = scratch_collection("large", [path], settings, embedder)
        seconds = time.perf_counter() - start
        chunks = collection.count()[1]
        shutil.rmtree(collection.folder.parent)
        return {"seconds": seconds, "chunks": chunks, "rss_base_mb": base, "rss_peak_mb": rss_mb()}

    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from transformers import AutoTokenizer

    from rag.chunking import Chunker
    from rag.embedding import resolve_model_path
    from rag.loading import load
    from rag.settings import Settings

    folder = Path(resolve_model_path(Settings().embedding_model))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    max_seq_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    chunker = Chunker(tokenizer, max_seq_length, Settings().chunk_size, Settings().chunk_overlap)
    if stage == "langchain":  # the splitter as it was: langchain's own, one tokenizer call per split
        chunker._make_splitter = lambda size, overlap: RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=size, chunk_overlap=min(overlap, size // 2))
        chunker._splitter = chunker._make_splitter(chunker.chunk_size, chunker.chunk_overlap)
    base = rss_mb()
    start = time.perf_counter()
    doc = load(path)
    loaded = time.perf_counter()
    chunks = chunker.split(doc, str(path))
    done = time.perf_counter()
    return {"seconds": done - start, "load_s": loaded - start, "split_s": done - loaded, "chunks": len(chunks),
            "rss_base_mb": base, "rss_peak_mb": rss_mb()}


def measure(stage: str, path: Path, mb: float, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", stage, "--file", str(path)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        print(f"{stage:9} {path.name:22} over {timeout:.0f} s", file=sys.stderr)
        return {"timeout_s": timeout}
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{stage} {path.name} failed:\n{exc.stderr[-3000:]}") from None
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["s_per_mb"] = row["seconds"] / mb
    row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    print(f"{stage:9} {path.name:22} {row['seconds']:8.1f} s  {row['s_per_mb']:6.2f} s/MB  "
          f"{row['chunks']:7} chunks  peak {row['rss_peak_mb']:.0f} MB", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="MB, parse and chunk")
    parser.add_argument("--ingest-sizes", default="1,10", help="MB, whole ingest (embedding included)")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "large_inputs.json"))
    parser.add_argument("--child", choices=("parse", "langchain", "ingest"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.file))))
        return

    from bench.machine import describe
    from rag.settings import Settings

    sizes = [float(s) for s in args.sizes.split(",") if s]
    ingest_sizes = [float(s) for s in args.ingest_sizes.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    began = time.perf_counter()
    results: dict = {"machine": describe(), "mb": MB, "max_file_mb_default": Settings().max_file_mb,
                     "parse": {}, "langchain": {}, "ingest": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in kinds:
            for mb in sizes:
                if mb > LARGEST_FOR.get(kind, mb):
                    continue
                path = write_input(folder, kind, mb)
                results["parse"].setdefault(kind, {})[f"{mb:g}"] = measure("parse", path, mb, args.timeout)
                if mb == 1 and kind in ("line", "char", "prose"):
                    results["langchain"].setdefault(kind, {})["1"] = measure("langchain", path, mb, args.timeout)
                if kind in INGEST_KINDS.get(int(mb), ()) and mb in ingest_sizes:
                    results["ingest"].setdefault(kind, {})[f"{mb:g}"] = measure("ingest", path, mb, args.timeout)
                path.unlink()
    results["seconds"] = round(time.perf_counter() - began, 1)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['seconds']:.0f} s; written {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

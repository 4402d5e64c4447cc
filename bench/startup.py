"""Start-up of the `rag` command: time to first result in a fresh process, this working tree against
a pristine copy of HEAD, side by side in one run.

Each command runs end to end in a new interpreter (wall clock, median of `runs`, the two trees
interleaved so load on the machine hits both alike): `rag --help`, `rag collections`, `rag retrieve`,
`rag ask` with a short answer, and `import rag.cli` alone. Both trees run `python -m rag.cli` with
this same venv, each first on PYTHONPATH, from a neutral folder; the collection is data/sample
ingested into a temporary RAG_HOME, so the user's collections are never read. It also records which
heavy modules `rag collections` imports (`-X importtime`), torch among them.

    python bench/startup.py [--runs 3] [--max-tokens 16] [--out bench/results/startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTION = "When was the Korvik Island Lighthouse first lit?"
# Modules a command that loads no model should not pay for; faiss is read by `rag collections`
# (it opens each collection's index, so a damaged one is listed as such).
HEAVY = ("torch", "transformers", "sentence_transformers", "peft", "faiss", "bm25s", "scipy", "ftfy", "pypdf",
         "pypdfium2", "pdfminer", "numpy")


def pristine_head(folder: Path) -> str:
    """Extract HEAD's tracked files into `folder`; returns HEAD's SHA."""
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def wall(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from spawning `argv` to its exit; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return seconds


def heavy_imports(argv: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The HEAVY top-level modules the command imports, read from `-X importtime`."""
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd, capture_output=True,
                          text=True, check=True)
    names = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:") and "|" in line}
    return sorted(names & set(HEAVY))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per command and tree")
    parser.add_argument("--max-tokens", type=int, default=16, help="rag ask --max-tokens: a short answer")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "startup.json"))
    args = parser.parse_args()
    from bench.machine import describe

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    base, home, neutral = work / "head", work / "home", work / "cwd"
    for folder in (base, home, neutral):
        folder.mkdir()
    head = pristine_head(base)
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip())
    common = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "RAG_HOME": str(home)}
    trees = {"before": base, "after": ROOT}
    envs = {arm: {**common, "PYTHONPATH": str(tree)} for arm, tree in trees.items()}
    for arm, tree in trees.items():  # PYTHONPATH must win over the venv's editable install of ROOT
        where = subprocess.run([sys.executable, "-c", "import rag; print(rag.__file__)"], env=envs[arm],
                               cwd=neutral, capture_output=True, text=True, check=True).stdout.strip()
        assert Path(where).is_relative_to(tree), f"{arm}: rag imported from {where}, not {tree}"

    cli = [sys.executable, "-m", "rag.cli"]
    wall(cli + ["ingest", str(ROOT / "data" / "sample"), "--collection", "sample"], envs["after"], neutral)
    commands = {
        "rag --help": cli + ["--help"],
        "rag collections": cli + ["collections"],
        "rag retrieve": cli + ["retrieve", "-c", "sample", QUESTION],
        "rag ask": cli + ["ask", "-c", "sample", "--max-tokens", str(args.max_tokens), QUESTION],
        "import rag.cli": [sys.executable, "-c", "import rag.cli"],
    }
    walls: dict[str, dict[str, list[float]]] = {name: {arm: [] for arm in trees} for name in commands}
    for run in range(args.runs):
        for name, argv in commands.items():
            for arm in trees:
                walls[name][arm].append(wall(argv, envs[arm], neutral))
            print(f"run {run + 1}: {name}: " + ", ".join(f"{arm} {walls[name][arm][-1]:.2f} s" for arm in trees),
                  file=sys.stderr, flush=True)
    imported = {arm: {name: heavy_imports(commands[name], envs[arm], neutral)
                      for name in ("import rag.cli", "rag --help", "rag collections")} for arm in trees}

    summary = {}
    for name, by_arm in walls.items():
        before, after = (statistics.median(by_arm[arm]) for arm in ("before", "after"))
        summary[name] = {"before_s": round(before, 3), "after_s": round(after, 3),
                         "saved_s": round(before - after, 3), "after_over_before": round(after / before, 3)}
    out = {"benchmark": "startup", "date": time.strftime("%Y-%m-%d"), "machine": describe(),
           "load_average_at_end": os.getloadavg(), "seconds": round(time.time() - started),
           "before": {"tree": f"git archive HEAD ({head})"}, "after": {"tree": "working tree", "dirty": dirty},
           "env": {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}, "runs": args.runs,
           "question": QUESTION, "max_tokens": args.max_tokens,
           "commands": {name: " ".join(argv[1:]) for name, argv in commands.items()},
           "summary_median_s": summary, "heavy_modules_imported": imported,
           "collections_imports_torch": {arm: "torch" in imported[arm]["rag collections"] for arm in trees},
           "walls_s": walls}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'command':16} {'before s':>9} {'after s':>8} {'saved s':>8}")
    for name, row in summary.items():
        print(f"{name:16} {row['before_s']:9.2f} {row['after_s']:8.2f} {row['saved_s']:8.2f}")
    print(json.dumps({"heavy_modules_imported": imported}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

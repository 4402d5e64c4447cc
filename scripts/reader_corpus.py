"""Fetch the reader adapter's training documents: FAQs from Debian documentation packages.

The reader adapter (`make reader-adapter`) learns to answer from numbered passages: quote the one
that answers and cite it, or say the no-answer sentence when none does. It needs natural questions
with known answers, and FAQs are exactly that: each question is a heading, the answer the text under
it. These packages are on no eval set of this project (the sample corpus and the Python FAQ) and are
not `debian-faq` or `perl-doc`, which are kept for independent checks:

  zsh-doc      The Z-Shell FAQ, 6 HTML chapters
  git-doc      gitfaq.html
  fetchmail    fetchmail-FAQ.html
  sqlite3-doc  faq.html (saved as sqlite-faq.html)
  vim-doc      the Vim FAQ, plain text: its "N.M. Question?" lines become Markdown headings here,
               so the chunker sees the same sections the HTML FAQs give it

    python scripts/reader_corpus.py --out data/reader/docs      # apt-get download (needs apt)

Downloads go to --cache (default ~/.cache/ragvsft/reader-debs) and are reused. It does not ingest.
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# package -> (file inside the package, name in --out)
FILES = {
    "zsh-doc": [(f"usr/share/doc/zsh-common/html/FAQ0{n}.html", f"zsh-FAQ0{n}.html") for n in range(1, 7)],
    "git-doc": [("usr/share/doc/git-doc/gitfaq.html", "gitfaq.html")],
    "fetchmail": [("usr/share/doc/fetchmail/fetchmail-FAQ.html", "fetchmail-FAQ.html")],
    "sqlite3-doc": [("usr/share/doc/sqlite3/faq.html", "sqlite-faq.html")],
    "vim-doc": [("usr/share/doc/vim/FAQ.gz", "vim-faq.md")],
}
RESERVED = {"debian-faq", "perl-doc"}  # independent checks of the product: never training data
_SECTION = re.compile(r"^SECTION (\d+) - (.+)$")
_QUESTION = re.compile(r"^(\d+\.\d+)\. (\S.*)$")


def vim_faq_markdown(text: str) -> str:
    """The Vim FAQ's body with "SECTION n - TITLE" as `#` and each "N.M. Question" (which may wrap
    over lines up to a blank one) as `##` headings; the index before the body is dropped."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("SECTION 1 - ")]
    body = lines[starts[-1]:] if starts else lines  # the first "SECTION 1" heads the index
    out: list[str] = []
    i = 0
    while i < len(body):
        line = body[i]
        if section := _SECTION.match(line):
            out += [f"# {section.group(2).title()}", ""]
        elif question := _QUESTION.match(line):
            words = [question.group(2).strip()]
            while i + 1 < len(body) and body[i + 1].strip():
                i += 1
                words.append(body[i].strip())
            out += [f"## {question.group(1)}. {' '.join(words)}", ""]
        else:
            out.append(line)
        i += 1
    return "\n".join(out) + "\n"


def fetch(package: str, cache: Path) -> Path:
    """The package's .deb in `cache`, downloaded with apt-get the first time."""
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
        found = sorted(cache.glob(f"{package}_*.deb"))
    return found[-1]


def build(out: Path, cache: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for package, files in FILES.items():
        assert package not in RESERVED
        deb = fetch(package, cache)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
            for inner, name in files:
                source, target = Path(tmp) / inner, out / name
                if name.endswith(".md"):
                    target.write_text(vim_faq_markdown(gzip.decompress(source.read_bytes()).decode("utf-8")),
                                      encoding="utf-8")
                else:
                    shutil.copyfile(source, target)
                written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/reader/docs"))
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ragvsft" / "reader-debs")
    args = parser.parse_args()
    try:
        written = build(args.out, args.cache)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        sys.exit(f"reader_corpus: cannot fetch or unpack a package ({exc}); this needs apt-get and dpkg-deb")
    print(f"{len(written)} files in {args.out}")


if __name__ == "__main__":
    main()

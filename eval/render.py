"""Render `Results` as text: report.md, the self-contained report.html, and `compare`'s lines.

The report is laid out once, as blocks (headings, paragraphs, tables, figures) built from the data;
markdown and HTML are two writers of the same blocks, so neither is parsed back from the other.
Means show with their 95 % intervals, and "–" marks what does not apply. It does not compute
results (eval/aggregate.py), draw plots (eval/plots.py) or read and write files (eval/report.py).
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from eval.results import EMPTY, Interval, Results, is_missing

LABELS = {"exact_match": "EM", "token_f1": "F1", "fact_recall": "fact recall", "semantic_sim": "semantic sim",
          "abstention": "abstains (unanswerable)", "false_abstention": "false abstention",
          "cites": "cites a passage", "citation_correct": "citation correct", "faithfulness": "faithfulness proxy",
          "judge_faithfulness": "judge faithfulness", "judge_relevance": "judge relevance"}
# (row label, Cost column, digits)
COST_ROWS = (("latency p50 (s)", "latency_p50_s", 2), ("latency p95 (s)", "latency_p95_s", 2),
             ("tokens/s", "tokens_per_s", 1), ("prompt tokens / answer", "prompt_tokens_mean", 0),
             ("index build (s)", "index_build_s", 2), ("fine-tune (s)", "finetune_s", 1),
             ("knowledge update (s)", "update_s", 2), ("update: fact recall", "update_fact_recall", 2))
COMPARED_COSTS = ("latency_p50_s", "tokens_per_s", "prompt_tokens_mean")


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figures:
    names: list[str]  # PNG files beside the report


Block = Heading | Paragraph | Table | Figures


def _ci(value: Interval) -> str:
    if is_missing(value.mean):
        return "–"
    return f"{value.mean:.2f} [{value.low:.2f}, {value.high:.2f}]"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if is_missing(value) else f"{value:.{digits}f}"


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def blocks(results: Results, figures: bool = True) -> list[Block]:
    """The report, top to bottom."""
    arms = list(results.arms)
    prov = results.provenance
    backend = (prov.get("settings") or {}).get("backend")
    out: list[Block] = [
        Heading(1, f"Eval report: {results.name}"),
        Paragraph(f"{results.n_questions} questions, arms {', '.join(arms)}, backend {backend}; "
                  f"git {str(prov.get('git_sha'))[:10]}{' (dirty)' if prov.get('git_dirty') else ''}, "
                  f"{prov.get('created')}. Means with 95 % bootstrap intervals; – = does not apply."),
        Heading(2, "Quality"),
        Table(["metric", *arms], [[label(name), *(_ci(results.arms[a].metric(name)) for a in arms)]
                                  for name in results.metric_names]),
        Heading(2, "Cost: building, answering and updating (measured)"),
        Table(["", *arms], [[row, *(_num(results.arms[a].cost.column(key), digits) for a in arms)]
                            for row, key, digits in COST_ROWS]),
    ]
    if results.differences:
        out += [Heading(2, "Paired differences (a − b, paired bootstrap)"),
                Table(["a − b", "metric", "diff [95 % CI]", "p"],
                      [[f"{d.a} − {d.b}", label(d.metric), f"{_num(d.mean_diff)} [{_num(d.low)}, {_num(d.high)}]",
                        _num(d.p_value, 3)] for d in results.differences])]
    if results.retrieval:
        r = results.retrieval.metrics
        out += [Heading(2, "Retrieval (chunks holding the gold evidence)"),
                Paragraph(f"hit@k {_ci(r.get('hit_at_k', EMPTY))} · MRR {_ci(r.get('mrr', EMPTY))} · "
                          f"nDCG@10 {_ci(r.get('ndcg_at_10', EMPTY))}")]
    splits = results.splits
    if splits.known_facts and splits.new_facts:
        out += [Heading(2, "Fact recall: facts the base model knows vs new facts"),
                Table(["split", "n", *arms],
                      [[name.replace("_", " "), str(next(iter(split.values())).n), *(_ci(split[a]) for a in arms)]
                       for name, split in (("known_facts", splits.known_facts), ("new_facts", splits.new_facts))])]
    if splits.by_source:
        headline = label(results.headline)
        # n: questions scored (an interval from 1 is no interval)
        out += [Heading(2, f"{headline[0].upper() + headline[1:]} per source document"),
                Table(["source", "n", *arms],
                      [[src, str(max(per_arm[a].n for a in arms)), *(_ci(per_arm[a]) for a in arms)]
                       for src, per_arm in splits.by_source.items()])]
    if results.knowledge_update:
        ku = results.knowledge_update
        out.append(Paragraph(f"Knowledge update: {ku.questions} questions about new documents; RAG ingests them, "
                             f"LoRA trains a new adapter ({ku.lora_train_steps} steps); base cannot update."))
    if figures:
        out.append(Figures(list(results.plots)))
    return out


def _markdown_row(cells: list[str]) -> str:
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def to_markdown(report: list[Block]) -> str:
    parts = []
    for block in report:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = [_markdown_row(block.header), "|" + "---|" * len(block.header)]
            parts.append("\n".join(lines + [_markdown_row(row) for row in block.rows]))
        else:
            parts.append("Plots: " + ", ".join(f"![{name}]({name})" for name in block.names))
    return "\n\n".join(parts) + "\n"


def to_html(report: list[Block], title: str, folder: Path) -> str:
    """A self-contained page: the tables, and the figures (read from `folder`) inlined as base64 PNGs."""
    body = []
    for block in report:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append("<table>")
            body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in block.header) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            body.append("</table>")
        else:
            for name in block.names:
                data = base64.b64encode((folder / name).read_bytes()).decode()
                body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
                            f'<figcaption>{name}</figcaption></figure>')
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;margin:1rem 0}"
             "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def markdown(results: Results, figures: bool = True) -> str:
    """report.md; without `figures`, no line of plot links (for a page that shows the plots itself)."""
    return to_markdown(blocks(results, figures))


def html_page(results: Results, folder: Path) -> str:
    return to_html(blocks(results), results.name, folder)


def compare(a: Results, b: Results) -> list[str]:
    """Lines: per arm and metric present in both, A, B and B − A; then the cost columns."""
    lines = [(f"A = {a.name} ({str(a.provenance.get('git_sha'))[:10]})   "
              f"B = {b.name} ({str(b.provenance.get('git_sha'))[:10]})"),
             f"{'arm':10} {'metric':24} {'A':>8} {'B':>8} {'B − A':>8}"]
    for arm in [x for x in a.arms if x in b.arms]:
        for name in a.metric_names:
            va, vb = a.arms[arm].metric(name).mean, b.arms[arm].metric(name).mean
            if not (is_missing(va) and is_missing(vb)):  # skip a metric neither run scored
                lines.append(_compared(arm, label(name), va, vb))
        for key in COMPARED_COSTS:
            lines.append(_compared(arm, key, a.arms[arm].cost.column(key), b.arms[arm].cost.column(key)))
    return lines


def _compared(arm: str, name: str, va: float | None, vb: float | None) -> str:
    diff = "–" if is_missing(va) or is_missing(vb) else f"{vb - va:+.3f}"
    return f"{arm:10} {name:24} {_num(va, 3):>8} {_num(vb, 3):>8} {diff:>8}"

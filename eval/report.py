"""Reports: aggregate per-question scores into per-arm tables with bootstrap intervals, paired arm
differences, splits and costs; write results.json (with provenance), report.md, report.html (plots
embedded) and the plots as PNG. `compare` prints the differences between two results.json files.
It does not run models.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import json
import math
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from eval import metrics
from eval.config import ARMS, RAG_ARMS, EvalConfig
from eval.scoring import ANSWER_METRICS, RETRIEVAL_METRICS, score_answer, score_retrieval, similarities
from rag.errors import ConfigError

PAIRS = (("rag", "base"), ("lora", "base"), ("lora+rag", "rag"), ("lora+rag", "lora"), ("rag", "lora"))
PAIRED_METRICS = ("fact_recall", "token_f1", "semantic_sim")
PACKAGES = ("ragvsft", "torch", "transformers", "peft", "sentence-transformers", "faiss-cpu", "bm25s", "openai")
LABELS = {"exact_match": "EM", "token_f1": "F1", "fact_recall": "fact recall", "semantic_sim": "semantic sim",
          "abstention": "abstains (unanswerable)", "false_abstention": "false abstention",
          "cites": "cites a passage", "citation_correct": "citation correct", "faithfulness": "faithfulness proxy",
          "judge_faithfulness": "judge faithfulness", "judge_relevance": "judge relevance"}


def _clean(value):
    """JSON cannot hold NaN: None instead, recursively; floats rounded to 4 places."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _ci(values, config: EvalConfig) -> dict:
    mean, low, high = metrics.bootstrap_ci(values, n_resamples=config.bootstrap, seed=config.seed)
    n = sum(1 for v in values if not math.isnan(v))
    return {"mean": mean, "low": low, "high": high, "n": n}


def provenance(settings, config: EvalConfig, model: str, adapter,
               root: Path = Path(__file__).resolve().parent.parent) -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return ""

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    model_hash = None
    config_file = Path(model) / "config.json"
    if config_file.is_file():
        listing = sorted((p.name, p.stat().st_size) for p in Path(model).iterdir() if p.is_file())
        model_hash = hashlib.sha256((config_file.read_text() + json.dumps(listing)).encode()).hexdigest()[:16]
    return {
        "git_sha": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain")),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "packages": versions,
        "model": model, "model_hash": model_hash, "embedding_model": settings.embedding_model,
        "qa_sha256": hashlib.sha256(Path(config.qa or Path(config.beir) / "queries.jsonl").read_bytes()).hexdigest()[:16],
        "adapter": None if adapter is None else {"name": adapter.name, "method": adapter.card.get("method"),
                                                 "rank": adapter.rank, "data_sha256": adapter.card.get("data_sha256")},
        "config": config.as_dict(),
        "settings": {k: str(v) for k, v in settings.__dict__.items() if k not in ("api_key",)},
    }


def aggregate(config: EvalConfig, data, embedder, k: int = 3) -> dict:
    rows = {row["id"]: row for row in data.questions}
    sims = similarities(embedder, data.records, rows)
    per_record = []
    for record, sim in zip(data.records, sims):
        scores = score_answer(record, rows[record.qid], sim)
        scores.update(getattr(record, "judge", {}) or {})
        per_record.append((record, scores))
    by_arm: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)  # arm -> qid -> scores
    for record, scores in per_record:
        by_arm[record.arm][record.qid] = scores
    metric_names = list(ANSWER_METRICS) + sorted({k for _, s in per_record for k in s if k.startswith("judge_")})
    qids = [row["id"] for row in data.questions]

    arms = {}
    for arm in config.arms:
        table = {name: _ci([by_arm[arm][q].get(name, math.nan) for q in qids], config) for name in metric_names}
        records = [r for r, _ in per_record if r.arm == arm]
        latency = metrics.latency_summary([r.seconds for r in records])
        tokens = [r.completion_tokens for r in records if r.completion_tokens]
        prompts = [r.prompt_tokens for r in records if r.prompt_tokens]
        speed = sum(tokens) / sum(r.seconds for r in records if r.completion_tokens) if tokens else math.nan
        cost = {"latency_p50_s": latency["p50"], "latency_p95_s": latency["p95"], "tokens_per_s": speed,
                "prompt_tokens_mean": sum(prompts) / len(prompts) if prompts else math.nan,
                "index_build_s": data.costs.get("index_build_s") if arm in RAG_ARMS else None,
                "finetune_s": data.costs.get("finetune_s") if arm in ("lora", "lora+rag") else None}
        update = (data.update.get("arms") or {}).get(arm)
        if update:
            cost["update_s"] = update["update_s"]
            cost["update_fact_recall"] = update["fact_recall"]
        arms[arm] = {"metrics": table, "cost": cost, "latencies": [r.seconds for r in records]}

    # Splits and the quality-vs-cost plot need one metric: fact recall when the questions list key facts,
    # else token F1 (a BEIR-made set has gold answers but no facts). Paired rows only for scored metrics.
    headline = "fact_recall" if any(row.get("facts") for row in data.questions) else "token_f1"
    paired = [name for name in PAIRED_METRICS if any(arms[arm]["metrics"][name]["n"] for arm in config.arms)]
    differences = []
    for a, b in PAIRS:
        if a in by_arm and b in by_arm:
            for name in paired:
                diff = metrics.paired_bootstrap([by_arm[a][q][name] for q in qids], [by_arm[b][q][name] for q in qids],
                                                n_resamples=config.bootstrap, seed=config.seed)
                differences.append({"a": a, "b": b, "metric": name, **diff})

    splits = {}
    scored = {q for q in qids if "base" in by_arm and not math.isnan(by_arm["base"][q]["fact_recall"])}
    if scored:  # facts the base model already knows (it recalls them all) vs new facts
        known = {q for q in scored if by_arm["base"][q]["fact_recall"] == 1.0}
        for label, group in (("known_facts", known), ("new_facts", scored - known)):
            splits[label] = {arm: _ci([by_arm[arm][q]["fact_recall"] for q in qids if q in group], config)
                             for arm in config.arms}
    sources = sorted({rows[q].get("source") for q in qids if rows[q].get("source")})
    splits["by_source"] = {src: {arm: _ci([by_arm[arm][q][headline] for q in qids if rows[q].get("source") == src],
                                          config) for arm in config.arms} for src in sources}

    retrieval = {}
    if data.rankings:
        per_q = {q: score_retrieval(data.rankings[q], data.relevant.get(q, []), k) for q in qids}
        retrieval = {name: _ci([per_q[q][name] for q in qids], config) for name in RETRIEVAL_METRICS}
        retrieval["per_question"] = per_q
    questions = [{"id": q, "question": rows[q]["question"], "gold": rows[q].get("answer"),
                  "answers": {arm: {"answer": next(r.answer for r, _ in per_record if r.qid == q and r.arm == arm),
                                    **by_arm[arm][q]} for arm in config.arms}} for q in qids]
    return {"arms": arms, "differences": differences, "splits": splits, "retrieval": retrieval,
            "costs": data.costs, "knowledge_update": data.update, "questions": questions,
            "metric_names": metric_names, "headline": headline}


def _fmt(ci: dict | None, pct: bool = True) -> str:
    if not ci or ci.get("mean") is None or (isinstance(ci["mean"], float) and math.isnan(ci["mean"])):
        return "–"
    if pct:
        return f"{ci['mean']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"
    return f"{ci['mean']:.3g}"


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def markdown(results: dict) -> str:
    arms = list(results["arms"])
    names = results["metric_names"]
    lines = [f"# Eval report: {results['name']}", "",
             f"{results['n_questions']} questions, arms {', '.join(arms)}, backend {results['provenance']['settings']['backend']}; "
             f"git {str(results['provenance']['git_sha'])[:10]}{' (dirty)' if results['provenance']['git_dirty'] else ''}, "
             f"{results['provenance']['created']}. Means with 95 % bootstrap intervals; – = does not apply.", "",
             "## Quality", "", "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for name in names:
        lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(_fmt(results["arms"][a]["metrics"][name]) for a in arms) + " |")
    lines += ["", "## Cost (the seed table's columns, measured)", "",
              "| | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    cost_rows = (("latency p50 (s)", "latency_p50_s", 2), ("latency p95 (s)", "latency_p95_s", 2),
                 ("tokens/s", "tokens_per_s", 1), ("prompt tokens / answer", "prompt_tokens_mean", 0),
                 ("index build (s)", "index_build_s", 2), ("fine-tune (s)", "finetune_s", 1),
                 ("knowledge update (s)", "update_s", 2), ("update: fact recall", "update_fact_recall", 2))
    for label, key, digits in cost_rows:
        lines.append(f"| {label} | " + " | ".join(_num(results["arms"][a]["cost"].get(key), digits) for a in arms) + " |")
    if results["differences"]:
        lines += ["", "## Paired differences (a − b, paired bootstrap)", "", "| a − b | metric | diff [95 % CI] | p |",
                  "|---|---|---|---|"]
        for d in results["differences"]:
            lines.append(f"| {d['a']} − {d['b']} | {LABELS.get(d['metric'], d['metric'])} | "
                         f"{_num(d['mean_diff'])} [{_num(d['low'])}, {_num(d['high'])}] | {_num(d['p_value'], 3)} |")
    if results["retrieval"]:
        r = results["retrieval"]
        lines += ["", "## Retrieval (chunks holding the gold evidence)", "",
                  f"hit@k {_fmt(r['hit_at_k'])} · MRR {_fmt(r['mrr'])} · nDCG@10 {_fmt(r['ndcg_at_10'])}"]
    splits = results["splits"]
    if splits.get("known_facts"):
        lines += ["", "## Fact recall: facts the base model knows vs new facts", "",
                  "| split | n | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
        for label in ("known_facts", "new_facts"):
            n = next(iter(splits[label].values()))["n"]
            lines.append(f"| {label.replace('_', ' ')} | {n} | " + " | ".join(_fmt(splits[label][a]) for a in arms) + " |")
    if splits.get("by_source"):
        headline = LABELS[results.get("headline", "fact_recall")]
        lines += ["", f"## {headline[0].upper() + headline[1:]} per source document", "",
                  "| source | n | " + " | ".join(arms) + " |",
                  "|---|---|" + "---|" * len(arms)]
        for src, per_arm in splits["by_source"].items():  # n: questions scored (an interval from 1 is no interval)
            n = max(per_arm[a]["n"] for a in arms)
            lines.append(f"| {src} | {n} | " + " | ".join(_fmt(per_arm[a]) for a in arms) + " |")
    if results["knowledge_update"]:
        ku = results["knowledge_update"]
        lines += ["", f"Knowledge update: {ku['questions']} questions about new documents; RAG ingests them, "
                  f"LoRA trains a new adapter ({ku['lora_train_steps']} steps); base cannot update."]
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in results["plots"]), ""]
    return "\n".join(lines)


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["arms"])
    colours = dict(zip(ARMS, ("#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c")))
    files = []
    shown = [m for m in ("fact_recall", "token_f1", "semantic_sim", "faithfulness", "citation_correct", "abstention")
             if any(results["arms"][a]["metrics"][m]["n"] for a in arms)] or ["exact_match"]  # all-empty: one empty panel
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], shown):
        cis = [results["arms"][a]["metrics"][name] for a in arms]
        means = [c["mean"] if c["mean"] is not None else 0 for c in cis]
        errs = [[max(0, (c["mean"] or 0) - (c["low"] or 0)) for c in cis], [max(0, (c["high"] or 0) - (c["mean"] or 0)) for c in cis]]
        ax.bar(arms, means, yerr=errs, capsize=4, color=[colours[a] for a in arms])
        ax.set_title(LABELS.get(name, name))
        ax.set_ylim(0, 1.05)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "quality.png")
    plt.close(fig)
    files.append("quality.png")

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    ax.boxplot([results["arms"][a]["latencies"] for a in arms], tick_labels=arms)
    ax.set_ylabel("seconds per answer")
    ax.set_title("Latency per answer")
    fig.tight_layout()
    fig.savefig(out / "latency.png")
    plt.close(fig)
    files.append("latency.png")

    headline = results.get("headline", "fact_recall")
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=100)
    for a in arms:
        quality = results["arms"][a]["metrics"][headline]["mean"] or 0
        cost = results["arms"][a]["cost"]["latency_p50_s"] or 0
        prompt = results["arms"][a]["cost"]["prompt_tokens_mean"] or 50
        ax.scatter([cost], [quality], s=max(30, prompt / 2), color=colours[a], label=a, alpha=0.8)
    ax.set_xlabel("latency p50 (s)  ·  marker area ∝ prompt tokens")
    ax.set_ylabel(LABELS[headline])
    ax.set_title("Quality vs cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "quality_vs_cost.png")
    plt.close(fig)
    files.append("quality_vs_cost.png")
    return files


def html_page(results: dict, md: str, out: Path) -> str:
    """A self-contained page: the tables, and the plots inlined as base64 PNGs."""
    body = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("Plots:"):
            for name in results["plots"]:
                data = base64.b64encode((out / name).read_bytes()).decode()
                body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
             "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(results['name'])}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(config: EvalConfig, settings, data, embedder, model: str, adapter=None) -> dict:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    results = aggregate(config, data, embedder, k=settings.k)
    results.update(name=config.name, n_questions=len(data.questions), provenance=provenance(settings, config, model, adapter))
    results = _clean(results)
    results["plots"] = plots(results, out)
    md = markdown(results)
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(html_page(results, md, out), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def load_results(path: Path) -> dict:
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{file}: no results.json (run rag eval first)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc.msg})") from None


def compare(a: dict, b: dict) -> list[str]:
    """Lines: per arm and metric present in both, A, B and B − A; then the cost columns."""
    lines = [f"A = {a['name']} ({str(a['provenance']['git_sha'])[:10]})   B = {b['name']} ({str(b['provenance']['git_sha'])[:10]})",
             f"{'arm':10} {'metric':24} {'A':>8} {'B':>8} {'B − A':>8}"]
    for arm in [x for x in a["arms"] if x in b["arms"]]:
        for name in a["metric_names"]:
            ma, mb = a["arms"][arm]["metrics"].get(name, {}), b["arms"][arm]["metrics"].get(name, {})
            va, vb = ma.get("mean"), mb.get("mean")
            if va is None and vb is None:
                continue
            diff = "–" if va is None or vb is None else f"{vb - va:+.3f}"
            lines.append(f"{arm:10} {LABELS.get(name, name):24} {_num(va, 3):>8} {_num(vb, 3):>8} {diff:>8}")
        for key in ("latency_p50_s", "tokens_per_s", "prompt_tokens_mean"):
            va, vb = a["arms"][arm]["cost"].get(key), b["arms"][arm]["cost"].get(key)
            diff = "–" if va is None or vb is None else f"{vb - va:+.3f}"
            lines.append(f"{arm:10} {key:24} {_num(va, 3):>8} {_num(vb, 3):>8} {diff:>8}")
    return lines

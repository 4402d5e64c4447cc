"""A report folder: write one run's results.json (with provenance), report.md, report.html and the
plots. Reading one back is eval.results.load_results.

Pages are rendered from the results as read back from their JSON form, so report.md, report.html
and a later `load_results` show the same (rounded) numbers. It does not run models or score
(eval/runner.py, eval/aggregate.py).
"""

from __future__ import annotations

import json

from eval.aggregate import aggregate
from eval.config import EvalConfig
from eval.plots import plots
from eval.provenance import provenance
from eval.render import html_page, markdown
from eval.results import RESULTS_FILE, Results
from eval.runner import RunData


def write_report(config: EvalConfig, settings, data: RunData, embedder, model: str, adapter=None) -> Results:
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    results = aggregate(config, data, embedder, k=settings.k)
    results.provenance = provenance(settings, config, model, adapter, embedder=getattr(embedder, "name", None))
    results = Results.from_json(results.to_json())  # what results.json will hold: NaN as missing, rounded
    results.plots = plots(results, out)
    (out / "report.md").write_text(markdown(results), encoding="utf-8")
    (out / "report.html").write_text(html_page(results, out), encoding="utf-8")
    (out / RESULTS_FILE).write_text(json.dumps(results.to_json(), indent=1) + "\n", encoding="utf-8")
    return results

"""Eval reports: lists the reports `rag eval` wrote and shows their tables, plots and answers.

Reports are read with eval.results.load_results and laid out by eval.render, as report.md is."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from eval.render import markdown
from eval.results import RESULTS_FILE, load_results
from rag.errors import RagError

SEARCHED = (f"reports/*/{RESULTS_FILE}", f"eval/experiments/*/report/{RESULTS_FILE}")

st.title("Evaluation reports")
reports = sorted({p.parent for pattern in SEARCHED for p in Path(".").glob(pattern)})
if not reports:
    st.info(
        "No eval reports yet. `make eval-sample` compares base, RAG, LoRA and LoRA+RAG on the sample "
        "corpus and writes reports/sample/; `rag eval --qa FILE --out reports/NAME ...` does it for yours."
    )
else:
    chosen = st.selectbox("Report", reports, format_func=lambda p: str(p))
    try:
        results = load_results(chosen)
    except RagError as exc:
        st.error(str(exc))
        st.stop()
    st.markdown(markdown(results, figures=False))
    for name in results.plots:
        if (chosen / name).is_file():
            st.image(str(chosen / name), caption=name)
    with st.expander(f"Answers ({len(results.questions)} questions)"):
        for question in results.questions:
            st.markdown(f"**{question.id}. {question.question}** — gold: {question.gold or '(unanswerable)'}")
            for arm, body in question.answers.items():
                st.markdown(f"- *{arm}*: {body.answer}")
    st.caption(f"HTML version: {chosen / 'report.html'}")

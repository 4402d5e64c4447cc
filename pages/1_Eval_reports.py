"""Eval reports: lists the reports `rag eval` wrote and shows their tables, plots and answers."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

SEARCHED = ("reports/*/results.json", "eval/experiments/*/report/results.json")

st.title("Evaluation reports")
reports = sorted({p.parent for pattern in SEARCHED for p in Path(".").glob(pattern)})
if not reports:
    st.info(
        "No eval reports yet. `make eval-sample` compares base, RAG, LoRA and LoRA+RAG on the sample "
        "corpus and writes reports/sample/; `rag eval --qa FILE --out reports/NAME ...` does it for yours."
    )
else:
    chosen = st.selectbox("Report", reports, format_func=lambda p: str(p))
    results = json.loads((chosen / "results.json").read_text(encoding="utf-8"))
    summary = chosen / "report.md"
    if summary.is_file():
        text = summary.read_text(encoding="utf-8")
        st.markdown("\n".join(line for line in text.splitlines() if not line.startswith("Plots:")))
    for name in results.get("plots", []):
        if (chosen / name).is_file():
            st.image(str(chosen / name), caption=name)
    with st.expander(f"Answers ({len(results.get('questions', []))} questions)"):
        for question in results.get("questions", []):
            st.markdown(f"**{question['id']}. {question['question']}** — gold: {question.get('gold') or '(unanswerable)'}")
            for arm, body in question["answers"].items():
                st.markdown(f"- *{arm}*: {body['answer']}")
    st.caption(f"HTML version: {chosen / 'report.html'}")

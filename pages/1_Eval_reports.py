"""Eval reports: lists the reports the eval harness wrote and shows their tables and plots."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

REPORTS = Path("reports")

st.title("Evaluation reports")
reports = sorted(p.parent for p in REPORTS.glob("*/results.json")) if REPORTS.is_dir() else []
if not reports:
    st.info(
        "No eval reports yet. The evaluation harness (base vs RAG vs LoRA vs LoRA+RAG) writes them "
        "under `reports/NAME/`; once it lands, `make eval-sample` makes one on the sample corpus."
    )
else:
    chosen = st.selectbox("Report", reports, format_func=lambda p: p.name)
    summary = chosen / "report.md"
    if summary.is_file():
        st.markdown(summary.read_text(encoding="utf-8"))
    for image in sorted(chosen.glob("*.png")):
        st.image(str(image), caption=image.stem)

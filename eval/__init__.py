"""Evaluation harness: offline metrics, BEIR-format data sets, and RAG-vs-LoRA comparison runs."""

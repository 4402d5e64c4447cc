"""Bulk ingest: `python -m ingest PATH...` works like `rag ingest PATH...`."""

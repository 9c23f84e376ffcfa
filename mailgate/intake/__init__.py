"""Intakes: SMTP/LMTP, IMAP (and the pipe in cli/ingest.py): bytes in, `accept` out.

An intake stores the raw bytes and acknowledges only after the commit; it never parses or decides
and never imports the pipeline (an import-linter contract in pyproject.toml keeps it so).
"""

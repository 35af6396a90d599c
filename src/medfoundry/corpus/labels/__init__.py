"""Label rules of the corpus, one module per rule (each documented in docs/corpus.md)."""

"""Data: sources, streaming tokenization, download, tokenizers."""

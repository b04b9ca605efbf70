"""Text to ids to batches: the corpus, the tokenizers, training windows and
paired data for encoder-decoders (docs/ARCHITECTURE.md)."""

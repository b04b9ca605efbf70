"""Text from a trained model: sampling, beam search, encoder-decoder
replies and the interactive prompt loop."""

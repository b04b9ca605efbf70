"""The special tokens and their fixed ids, read by the tokenizers and by the
models (an encoder-decoder masks PAD and starts its reply at BOS).

Every tokenizer reserves id 0 for `<unk>`; one built for pairs reserves
PAD, BOS and EOS too, at ids 1-3; one built for the masked task all four
and MASK at id 4. The models need only the ids, the
tokenizers also the strings; both import them from here, so that no model
imports the tokenizer module.
"""

UNK = "<unk>"
UNK_ID = 0
# Pairs (encoder-decoders): padding, the start and the end of a reply.
PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
PAD_ID, BOS_ID, EOS_ID = 1, 2, 3
SPECIALS = (UNK, PAD, BOS, EOS)
# A masked model's blank (lm_jax/tasks/masked.py): reserved by tokenizers
# built for the masked task, and by every byte-level BPE
# (lm_jax/data/bpe.py), at the id after EOS.
MASK = "<mask>"
MASK_ID = 4
MASKED_SPECIALS = SPECIALS + (MASK,)

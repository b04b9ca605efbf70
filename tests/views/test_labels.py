"""lm_jax/views/labels.py: labels a font cannot draw, in a drawn figure."""

import warnings

import numpy as np

from lm_jax.models.base import Internals
from lm_jax.views import internals, labels


def test_cjk_tick_labels_show_code_points_without_warnings(tmp_path):
  tokens = ["\u4e2d", "\u6587", "a", "\n", " "]
  shown, families = labels.tick_labels(tokens)
  # matplotlib ships no CJK font; with one installed the glyphs are drawn.
  cjk = [f for f, chars in labels._font_chars().items() if 0x4E2D in chars]
  if cjk:
    assert shown[:2] == tokens[:2] and families[1] in cjk
  else:
    assert shown[:2] == ["U+4E2D", "U+6587"] and families == ["DejaVu Sans"]
  assert shown[2:] == ["a", "\u23ce", "\u2423"]
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    maps = Internals(values=np.full((1, 2, 5, 5), 0.2),
                     panels=("head 0", "head 1"), columns="tokens",
                     signed=(False, False))
    internals.plot_internals(maps, tokens, tmp_path / "attention.png")
  assert not [w for w in caught if "Glyph" in str(w.message)]

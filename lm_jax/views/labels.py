"""Tokens as tick labels a figure can draw: the loss plot's run names and
the heat maps' tokens (lm_jax/views/plotting.py, lm_jax/views/internals.py
both read it, so neither imports the other)."""

from __future__ import annotations

import functools

DEFAULT_FONT = "DejaVu Sans"  # matplotlib's own, always installed


@functools.cache
def _font_chars() -> dict[str, frozenset[int]]:
  """The code points each installed font family draws.

  Read once (about 1 s for the ~70 fonts matplotlib ships); "Last Resort"
  draws a box for every character, which is no better than a missing glyph.
  """
  from matplotlib import font_manager
  from matplotlib.ft2font import FT2Font
  chars: dict[str, frozenset[int]] = {}
  for font in font_manager.fontManager.ttflist:
    if font.name.startswith("Last Resort"):
      continue
    try:
      drawn = frozenset(FT2Font(font.fname).get_charmap())
    except (OSError, RuntimeError):  # a font file FreeType cannot read
      continue
    chars[font.name] = chars.get(font.name, frozenset()) | drawn
  return chars


def tick_labels(tokens: list[str], symbols: bool = True
                ) -> tuple[list[str], list[str]]:
  """Visible tick labels and the font families that draw them.

  Newline and space are shown as symbols (unless `symbols` is False). A
  character no installed font draws (CJK on a machine without a CJK font)
  is shown as its code point, `U+4E2D`, instead of an empty box and a
  "Glyph missing" warning.
  """
  fonts = _font_chars()
  families = [DEFAULT_FONT]
  labels = []
  for token in tokens:
    shown = (token.replace("\n", "\u23ce").replace(" ", "\u2423")
             if symbols else token)
    parts = []
    for ch in shown:
      if not any(ord(ch) in fonts.get(f, ()) for f in families):
        family = next((f for f, drawn in sorted(fonts.items())
                       if ord(ch) in drawn), None)
        if family is None:
          parts.append(f"U+{ord(ch):04X}")
          continue
        families.append(family)
      parts.append(ch)
    labels.append("".join(parts))
  return labels, families

"""Winners against noise (lm_jax/sweep/seeds.py), on synthetic result rows:
members grouped by their settings over seeds, the winner named only
beyond the seed spread, and no spread claimed with one seed."""

from lm_jax.sweep import seeds


def row(lr, seed, best, final=None, diverged_at=None):
  settings = {"train.learning_rate": lr}
  if seed is not None:
    settings["seed"] = seed
  return dict(settings=settings, best_val_loss=best,
              final_val_loss=best if final is None else final,
              diverged_at=diverged_at)


KEYS = ["train.learning_rate", "seed"]


def test_a_margin_beyond_the_seed_spread_names_the_winner():
  results = [row(3e-3, 0, 1.500), row(3e-3, 1, 1.510),
             row(1e-3, 0, 1.548), row(1e-3, 1, 1.554)]
  rows = seeds.by_settings(results, KEYS)
  assert [r["setting"] for r in rows] == ["learning_rate=0.003",
                                          "learning_rate=0.001"]
  assert rows[0]["seeds"] == 2 and abs(rows[0]["best_mean"] - 1.505) < 1e-9
  assert abs(rows[0]["best_spread"] - 0.00707) < 1e-4
  text = seeds.verdict(rows)
  assert text.startswith("learning_rate=0.003 beats learning_rate=0.001 by "
                         "0.046 nats, 6.5x the seed spread (0.007)")


def test_a_margin_within_the_spread_is_no_winner():
  results = [row("char_lstm", 0, 1.600), row("char_lstm", 1, 1.620),
             row("char_tf", 0, 1.610), row("char_tf", 1, 1.622)]
  text = seeds.verdict(seeds.by_settings(results, KEYS))
  assert "differ by 0.006 nats, within the seed spread" in text
  assert text.endswith("no winner.")


def test_one_seed_says_no_spread_is_known():
  results = [row(3e-3, None, 1.50), row(1e-3, None, 1.55)]
  rows = seeds.by_settings(results, ["train.learning_rate"])
  assert rows[0]["best_spread"] is None
  text = seeds.verdict(rows)
  assert "ahead of learning_rate=0.001 by 0.050 nats" in text
  assert "no spread is known" in text
  assert "| learning_rate=0.003 | 1 | 1.5000 | 1.5000 |" in seeds.table(rows)


def test_diverged_members_are_left_out_of_the_mean():
  results = [row(1e-2, 0, 1.4), row(1e-2, 1, 9.9, diverged_at=40),
             row(1e-3, 0, 1.5), row(1e-3, 1, 1.5)]
  rows = seeds.by_settings(results, KEYS)
  top = rows[0]
  assert top["setting"] == "learning_rate=0.01" and top["seeds"] == 2
  assert top["best_mean"] == 1.4 and top["best_spread"] is None
  summary = seeds.summary(results, KEYS)
  assert "| learning_rate=0.001 | 2 | 1.5000 ± 0.0000 |" in summary


def test_tokenizers_compare_on_bits_per_character_and_metrics_never_mix():
  def tok(name, seed, bpc, loss, metric="nats per token (next token)"):
    return dict(settings={"data.tokenizer": name, "seed": seed},
                best_val_loss=loss, best_val_bpc=bpc, final_val_loss=loss,
                tokenizer=name, metric=metric)
  results = [tok("char", 0, 3.50, 1.20), tok("char", 1, 3.51, 1.21),
             tok("word", 0, 2.20, 5.00), tok("word", 1, 2.30, 5.10)]
  rows = seeds.by_settings(results, ["data.tokenizer", "seed"])
  assert rows[0]["setting"] == "tokenizer=word"  # on bpc, not nats/token
  assert "bits per character" in seeds.verdict(rows)
  assert "best bits per character" in seeds.table(rows)
  masked = [dict(r, tokenizer="char") for r in results[:2]] + [
      dict(tok("mlm", 0, 2.0, 1.0, "nats per hidden character, at masking "
               "rate 0.15"), tokenizer="char")]
  text = seeds.verdict(seeds.by_settings(masked, ["data.tokenizer", "seed"]))
  assert "measure different things" in text and text.endswith("no winner "
                                                               "by val loss.")

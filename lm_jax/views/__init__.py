"""What the learner sees: the model summary, progress lines, loss plots and
the model's internals drawn as heat maps."""

"""One optimiser update and its parts: the loss, the optimisers and
schedules, the jitted train and eval steps, data parallelism."""

"""What a run leaves on disk and loading it back: the run directory, Orbax
checkpoints, the metrics files and the one-file model."""

"""Training: the config (every option declared once), the engine, checkpoints, the LR schedule
and post-training gate calibration. Method specifics come in through :class:`dmnn.Method`."""

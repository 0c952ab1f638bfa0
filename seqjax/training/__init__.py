"""Training: optimizer, train state, losses/metrics, checkpoints, metrics writers, mesh,
and the one trainer (``seqjax.training.loop.train``) that serves every task and model."""

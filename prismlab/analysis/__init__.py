"""After training: evaluating a run's checkpoints, judging generated samples, fitted latent priors."""

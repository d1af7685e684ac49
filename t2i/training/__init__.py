"""Training: one explicit loop (`loop.train`) and small recipes (autoencoder, diffusion, clip)."""

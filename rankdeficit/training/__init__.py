"""Training: the loop (`train.train_and_evaluate`), its jitted steps, losses, optimiser,
mesh sharding, the target-logits-norm temperature and the collapse monitor."""

"""Building the model: the build configuration, data mixing, packing, the training loop with its
loss, attention and checkpoints, several processes, evaluation, artifacts and the staged build."""

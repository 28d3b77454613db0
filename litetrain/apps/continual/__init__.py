"""Continual learning on the device: a bounded replay buffer (`replay.ReplayBuffer`, reservoir
sampling into fixed memory; also behind `Personalizer.bound_samples`), a classifier file whose head
grows class by class with EWC and L2-SP generated in its train graph and the Fisher diagonal computed
by a signature (`model.continual_file`), and the Split Animal-MNIST comparison with its PyTorch twin
(`benchmark`, `reference`; examples/continual_split_mnist.py)."""

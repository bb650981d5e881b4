"""nn.Modules for the experiments."""

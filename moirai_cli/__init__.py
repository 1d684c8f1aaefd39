"""moirai-cli: zero-shot probabilistic forecasting with the Moirai models (1.x, MoE, 2.0) in plain PyTorch."""

__version__ = "0.1.0"

"""moirai-cli: zero-shot probabilistic forecasting with Moirai-MoE in plain PyTorch."""

__version__ = "0.1.0"

"""moirai-cli: zero-shot probabilistic forecasting with the Moirai models (1.x, MoE, 2.0) in plain PyTorch."""

from moirai_cli.runtime import let_idle_threads_sleep

__version__ = "0.1.0"

let_idle_threads_sleep()  # before anything imports torch; see its docstring

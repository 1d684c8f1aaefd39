"""The user-facing forecaster: load a checkpoint once, forecast batches of series.

INTERFACE CONTRACT (bodies being written by the engine work; signatures are stable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch

DEFAULT_MODEL = "Salesforce/moirai-moe-1.0-R-small"


@dataclass
class Forecast:
    """Sample paths for N series: samples has shape (N, S, H, V) (V = number of target variates)."""

    samples: np.ndarray  # (N, S, H, V) float32

    @property
    def mean(self) -> np.ndarray:
        """(N, H, V) mean over sample paths."""
        return self.samples.mean(axis=1)

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """(N, Q, H, V) empirical quantiles of the sample paths."""
        return np.quantile(self.samples, np.asarray(levels), axis=1).transpose(1, 0, 2, 3)


class MoiraiForecaster:
    """A loaded Moirai-MoE checkpoint ready to forecast."""

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        cache_dir: str | None = None,
        device: str = "auto",
        dtype: torch.dtype = torch.float32,
    ) -> "MoiraiForecaster":
        raise NotImplementedError

    def predict(
        self,
        target: Sequence[np.ndarray],  # each (T_i,) or (T_i, V); NaN = missing
        horizon: int,
        *,
        past_covariates: Sequence[np.ndarray] | None = None,  # each (T_i, Cp)
        known_covariates: Sequence[np.ndarray] | None = None,  # each (T_i + horizon, Ck)
        context_length: int = 4000,
        num_samples: int = 100,
        patch_size: int | Literal["auto"] = 16,
        batch_size: int = 32,
        seed: int | None = None,
        decoding: Literal["exact", "cached"] = "exact",
        progress: Callable[[int], None] | None = None,  # called with the number of series just finished
    ) -> Forecast:
        raise NotImplementedError

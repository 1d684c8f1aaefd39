"""Bring series that float32 or the reference's scaler would spoil to a unit scale before the network, and back.

The network sees float32 values, standardised by a scaler that adds 1e-5 to each variance (the
reference's). For ordinary series neither matters, and their values pass through untouched, so their
forecasts are the reference's, bit for bit. A column (a target variate or a covariate) of one series
is re-expressed as (x - shift) / scale, both float64, when any of these holds over the observed values
of its context window (the last `context_length` rows, what the network sees):

- tiny: its spread, the standard deviation (for a constant column: its level), is above zero and
  below sqrt(1e-5) ~ 0.0032, where the variance floor would swamp the series' own variation;
- coarse: rounding a value to float32 moves it by more than a tenth of the scale the reference's
  scaler would use, sqrt(variance + 1e-5) (a level of 1e8 or more with unit variation);
- huge: a value's magnitude is above 1e30, too close to float32's limit (3.4e38) for the arithmetic.

Then `shift` is the window's mean and `scale` the power of ten nearest its spread (1 for a constant
column that is not tiny), so the network sees a series of unit scale. Forecast samples are mapped back
with samples * scale + shift, in float64. Covariates are transformed the same way, without the way back.
Values above 1e302 in magnitude are refused: a forecast's float64 sums over sample paths could overflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from moirai_cli.data.frames import LARGEST_MAGNITUDE, TOO_LARGE
from moirai_cli.errors import InputError
from moirai_cli.model.network import MINIMUM_VARIANCE

COARSE_ROUNDING = 0.1  # float32 rounding above this share of the reference's scale is "coarse"
HUGE = 1e30  # magnitudes above this are "huge"


@dataclass(frozen=True)
class ColumnScaling:
    """Per-column affine map of one (T, K) array: the network sees (x - shift) / scale."""

    shift: np.ndarray  # (K,) float64
    scale: np.ndarray  # (K,) float64

    @property
    def identity(self) -> bool:
        """Whether the values pass through unchanged (ordinary columns)."""
        return bool((self.shift == 0).all() and (self.scale == 1).all())

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(T, K) float64 values as the float32 values the network is given."""
        if self.identity:
            return values.astype(np.float32)
        return ((values - self.shift) / self.scale).astype(np.float32)

    def restore(self, samples: np.ndarray) -> np.ndarray:
        """Samples (..., K) drawn on the network's scale, back on the series' scale (float64)."""
        return samples.astype(np.float64) * self.scale + self.shift


def fit_scaling(values: np.ndarray, context_length: int) -> ColumnScaling:
    """The map of each column of a (T, K) array, from the observed values of its last `context_length` rows."""
    window = values[-context_length:]
    shift, scale = np.zeros(values.shape[1]), np.ones(values.shape[1])
    for column in range(values.shape[1]):
        observed = window[:, column][~np.isnan(window[:, column])]
        largest = float(np.abs(observed).max()) if len(observed) else 0.0
        if largest == 0.0:  # nothing observed, or all zeros: nothing float32 could lose
            continue
        unit = observed / largest  # statistics on [-1, 1], so that 1e300 does not overflow
        mean = float(unit.mean()) * largest
        std = float(unit.std(ddof=1)) * largest if len(observed) > 1 else 0.0
        spread = std if std > 0 else largest
        tiny = spread * spread < MINIMUM_VARIANCE
        huge = largest > HUGE
        coarse = False
        if not (tiny or huge):
            rounding = float(np.abs(observed.astype(np.float32).astype(np.float64) - observed).max())
            coarse = rounding > COARSE_ROUNDING * np.sqrt(std * std + MINIMUM_VARIANCE)
        if tiny or huge or coarse:
            shift[column] = mean
            if std > 0 or tiny:
                scale[column] = 10.0 ** np.round(np.log10(spread))
    return ColumnScaling(shift, scale)


def condition_inputs(
    targets: Sequence[np.ndarray],
    past: Sequence[np.ndarray] | None,
    known: Sequence[np.ndarray] | None,
    context_length: int,
) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[np.ndarray] | None, list[ColumnScaling]]:
    """float32 inputs for packing, and each target's map to undo on its samples.

    targets (T_i, V), past (T_i, Cp), known (T_i + H, Ck): float64 arrays. A known covariate's map is
    fitted on its history rows (the first T_i) and applied to all of its rows.
    """
    for name, arrays in (("target", targets), ("past covariates", past), ("known covariates", known)):
        for series, values in enumerate(arrays or ()):
            huge = np.abs(values) > LARGEST_MAGNITUDE
            if huge.any():
                row, column = np.argwhere(huge)[0]
                raise InputError(f"{name} of series {series}, row {row}: {float(values[row, column])!r} {TOO_LARGE}")
    scalings = [fit_scaling(target, context_length) for target in targets]
    conditioned = [scaling.apply(target) for scaling, target in zip(scalings, targets)]
    if past is not None:
        past = [fit_scaling(values, context_length).apply(values) for values in past]
    if known is not None:
        known = [fit_scaling(values[: len(target)], context_length).apply(values) for values, target in zip(known, targets)]
    return conditioned, past, known, scalings


def restore_samples(samples: np.ndarray, scalings: Sequence[ColumnScaling]) -> np.ndarray:
    """Samples (N, S, H, V) of N series back on their scales: float64 if any series was rescaled, else as given."""
    if all(scaling.identity for scaling in scalings):
        return samples
    return np.stack([scaling.restore(paths) for scaling, paths in zip(scalings, samples)])

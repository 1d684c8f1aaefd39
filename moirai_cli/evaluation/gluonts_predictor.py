"""A GluonTS ``Predictor`` around MoiraiForecaster, so the model drops into GluonTS pipelines.

Needs the optional ``gluonts`` extra (``pip install 'moirai-cli[gluonts]'``); importing this
module without it raises an ImportError that says so. A sampling model (Moirai 1.x, Moirai-MoE) gives one
``SampleForecast`` per entry, a quantile model (Moirai 2.0) one ``QuantileForecast`` at its
levels, as the reference's own predictors do. Data entries follow GluonTS: ``target``
(T,) or (V, T) for a multivariate target, ``start`` a pandas Period, optional ``item_id``,
``feat_dynamic_real`` (Ck, T + H) as known covariates and ``past_feat_dynamic_real`` (Cp, T)
as past covariates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from moirai_cli.forecasting.pipeline import DEFAULT_CONTEXT_LENGTH

try:
    from gluonts.model.forecast import Forecast, QuantileForecast, SampleForecast
    from gluonts.model.predictor import Predictor
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("the GluonTS predictor needs gluonts: pip install 'moirai-cli[gluonts]'") from error

KNOWN_COVARIATES_FIELD = "feat_dynamic_real"
PAST_COVARIATES_FIELD = "past_feat_dynamic_real"


class MoiraiPredictor(Predictor):
    """GluonTS predictor yielding one forecast per data entry, from a MoiraiForecaster."""

    def __init__(
        self,
        forecaster: Any,
        prediction_length: int,
        *,
        num_samples: int = 100,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        batch_size: int = 32,
        seed: int | None = None,
        **predict_options: Any,
    ) -> None:
        """Wrap a loaded forecaster; predict_options (e.g. patch_size) go to its predict."""
        super().__init__(prediction_length=prediction_length)
        self.forecaster = forecaster
        self.num_samples = num_samples
        self.context_length = context_length
        self.batch_size = batch_size
        self.seed = seed
        self.predict_options = predict_options

    def predict(
        self, dataset: Iterable[dict], num_samples: int | None = None, **kwargs: Any
    ) -> Iterator[Forecast]:
        """Forecast every entry of a GluonTS dataset, in order, batch_size entries per model call.

        Each entry's samples come from a generator keyed by its `item_id` (its position in the
        dataset when it has none), so with a seed they do not depend on the other entries.
        """
        batch: list[dict] = []
        keys: list[Any] = []
        for position, entry in enumerate(dataset):
            batch.append(entry)
            keys.append(entry.get("item_id", position))
            if len(batch) == self.batch_size:
                yield from self._predict_batch(batch, keys, num_samples or self.num_samples)
                batch, keys = [], []
        if batch:
            yield from self._predict_batch(batch, keys, num_samples or self.num_samples)

    def _predict_batch(self, entries: list[dict], keys: list[Any], num_samples: int) -> list[Forecast]:
        """Forecasts for a list of entries (with their random-stream keys) with one forecaster call."""
        targets = [np.asarray(entry["target"], dtype=np.float64) for entry in entries]  # predict rescales what float32 would spoil
        multivariate = targets[0].ndim == 2
        contexts = [t.T if multivariate else t for t in targets]  # (T,) or (T, V)
        covariates: dict[str, list[np.ndarray]] = {}
        for field, argument in (
            (KNOWN_COVARIATES_FIELD, "known_covariates"),
            (PAST_COVARIATES_FIELD, "past_covariates"),
        ):
            if field in entries[0]:
                covariates[argument] = [np.asarray(entry[field], dtype=np.float64).T for entry in entries]
        for entry in entries:  # checked before the model runs
            if not isinstance(entry["start"], pd.Period):
                raise TypeError(
                    f"entry 'start' must be a pandas Period (as GluonTS datasets give), got {type(entry['start']).__name__}"
                )
        forecast = self.forecaster.predict(
            contexts,
            self.prediction_length,
            num_samples=num_samples,
            context_length=self.context_length,
            batch_size=self.batch_size,
            seed=self.seed,
            item_ids=keys,
            **covariates,
            **self.predict_options,
        )
        if forecast.samples is None:  # quantiles at the model's levels
            arrays, levels = np.asarray(forecast.values), [str(level) for level in forecast.levels]  # (N, Q, H, V)
        else:
            arrays, levels = np.asarray(forecast.samples), None  # (N, S, H, V)
        results = []
        for index, (entry, context) in enumerate(zip(entries, contexts)):
            values = arrays[index] if multivariate else arrays[index, ..., 0]  # (S or Q, H, V) or (S or Q, H)
            start = entry["start"] + len(context)
            if levels is None:
                results.append(SampleForecast(values, start_date=start, item_id=entry.get("item_id")))
            else:
                results.append(QuantileForecast(values, start_date=start, forecast_keys=levels, item_id=entry.get("item_id")))
        return results

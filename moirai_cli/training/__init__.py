"""Fine-tuning: adapt a Moirai checkpoint of any family to one's own series, with each family's own loss.

`finetune(forecaster, records, horizon, settings, output_dir)` trains and returns a FinetuneResult
(its `forecaster()` forecasts with the tuned weights); the output folder is a checkpoint like any
other, with a model card. Nothing outside this package imports it.
"""

from moirai_cli.training.fit import finetune_checkpoint, fit, split_options
from moirai_cli.training.output import BaseModel, data_fingerprint
from moirai_cli.training.settings import DEFAULT_LEARNING_RATES, MODES, TRAINING_DTYPES, FinetuneSettings
from moirai_cli.training.trainer import FinetuneResult, TrainingProgress, describe, finetune, run_settings

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "MODES",
    "TRAINING_DTYPES",
    "BaseModel",
    "FinetuneResult",
    "FinetuneSettings",
    "TrainingProgress",
    "data_fingerprint",
    "describe",
    "finetune",
    "finetune_checkpoint",
    "fit",
    "split_options",
    "run_settings",
]

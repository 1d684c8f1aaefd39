"""`moirai finetune`: adapt a checkpoint of any family to the series of a table, keep the best step as a checkpoint folder."""

from __future__ import annotations

from typing import Any, Optional

from moirai_cli.cli import options as opts
from moirai_cli.cli.console import Console, TrainingBar, note
from moirai_cli.cli.errors import reported_errors
from moirai_cli.errors import InputError, option

HORIZON = opts.Opt("horizon", opts.typed_option(
    ("--horizon", "-H"), Optional[int], "Steps the tuned model forecasts (required unless --resume).", opts.PREDICT
))
OUTPUT_DIR = opts.Opt("output_dir", opts.typed_option(
    "--output-dir", Optional[str], "Folder for the tuned checkpoint (config.json, model.safetensors, a model card); new or empty.", opts.OUTPUT
))
RESUME = opts.Opt("resume", opts.typed_option(
    "--resume", Optional[str], "Continue the stopped run in this folder, with its own settings (--steps may grow).", opts.OUTPUT, metavar="DIR"
))
PATCH_SIZE = next(o for o in opts.PREDICT_OPTIONS if o.name == "patch_size")
TRAINING = (*opts.TRAINING_OPTIONS, PATCH_SIZE)
TRAINING_NAMES = frozenset(opt.name for opt in TRAINING)


@opts.with_options(
    opts.DATA_ARGUMENT, HORIZON, OUTPUT_DIR, RESUME, *TRAINING, opts.MODEL_NAME, *opts.MODEL_OPTIONS[:3],
    *opts.READ_OPTIONS, opts.BACKTEST_KNOWN_COVARIATES, opts.QUIET, opts.DEBUG,
)
def finetune(**given: Any) -> None:
    """Fine-tune a checkpoint on the series in DATA with its family's own loss; the best step is kept in --output-dir.

    The last --validation-windows horizons of each series are held out, as evaluate holds them out, to stop early.
    """
    with reported_errors(given["debug"]):
        from moirai_cli.engines import local
        from moirai_cli.forecasting.job import BacktestJob
        from moirai_cli.forecasting.procedure import read_findings
        from moirai_cli.training import describe, finetune_checkpoint

        folder, horizon, settings = _run(given)
        job = BacktestJob.build(horizon, **opts.job_options({k: v for k, v in given.items() if k not in TRAINING_NAMES}))
        console = Console(given["quiet"], "fine-tuning")
        dataset = local.read_whole(job, given["data"], console)
        console.report(read_findings(dataset))
        with TrainingBar(given["quiet"]) as bar:
            result = finetune_checkpoint(
                job.model, dataset, horizon, settings, folder, resume=given["resume"] is not None,
                progress=bar.update, download_progress=not given["quiet"],
            )
        note(describe(result), given["quiet"])


def _run(given: dict[str, Any]):
    """(output folder, horizon, FinetuneSettings) of a new run, or of the stopped run `--resume` continues."""
    from moirai_cli.forecasting.job import patch_size_choice
    from moirai_cli.training import FinetuneSettings
    from moirai_cli.training.fit import run_to_resume

    chosen = {name: getattr(given[name], "value", given[name]) for name in TRAINING_NAMES}
    size = patch_size_choice(chosen["patch_size"])
    chosen["patch_size"] = None if size == "auto" else size
    if given["resume"] is not None:
        if given["output_dir"] not in (None, given["resume"]):
            raise InputError(f"{option('resume')} names the run's folder: leave {option('output_dir')} out")
        settings, horizon = run_to_resume(given["resume"], given["horizon"], chosen)
        return given["resume"], horizon, settings
    for name in ("horizon", "output_dir"):
        if given[name] is None:
            raise InputError(f"{option(name)} is required (or {option('resume')} DIR to continue a stopped run)")
    return given["output_dir"], given["horizon"], FinetuneSettings(**{k: v for k, v in chosen.items() if v is not None})

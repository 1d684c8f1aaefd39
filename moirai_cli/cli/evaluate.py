"""`moirai evaluate`: backtest one model (or rank several) on the last windows of every series, against seasonal naive."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from moirai_cli.cli import options as opts
from moirai_cli.cli.console import Console, note, print_table, stdout_is_closed, warn_skipped
from moirai_cli.cli.errors import reported_errors
from moirai_cli.errors import InputError, option

METRICS_HELP = """\
Metrics, per series and window (a multivariate target: per variate), over the window's observed steps; \
MAE, MASE, sMAPE and MAPE score the forecast median, RMSE the mean.

MAE: mean |y - median|. RMSE: sqrt(mean (y - mean)^2). \
MASE: MAE / the mean |y_t - y_(t-m)| of the history before the window (m: --season-length; lag 1 if the history \
is shorter). sMAPE: mean 2|y - median| / (|y| + |median|), from 0 to 2. \
MAPE: mean |y - median| / |y|, zero actuals left out and counted. \
WQL: mean over the --quantiles levels of sum 2 * pinball loss / sum |y|. \
MSIS: interval score of the 80% interval (0.1 to 0.9 quantiles) scaled like MASE. \
Coverage 80%: share of actuals inside that interval (ideal 0.80).

Aggregation: WQL is the ratio of sums over all series and windows (GluonTS, fev); every other metric is the \
mean over series and windows of the per-window values, leaving out windows where it is undefined. \
The seasonal-naive baseline repeats the last season and is scored the same way; Relative is the geometric \
mean over series of model / baseline (per-series values clipped to 0.01..100; below 1: the model is better).

--output writes one row per series and window (and variate) with both sets of metrics.\
"""


@opts.with_options(
    opts.DATA_ARGUMENT, opts.HORIZON, *opts.WINDOW_OPTIONS, *opts.PREDICT_OPTIONS, opts.EVALUATE_SEED, opts.MODELS,
    *opts.MODEL_OPTIONS, *opts.READ_OPTIONS, opts.BACKTEST_KNOWN_COVARIATES, *opts.EVALUATE_OUTPUTS, opts.QUIET, opts.DEBUG,
)
def evaluate(**given: Any) -> None:
    """Backtest the model on the last windows of every series in DATA and compare it with a seasonal-naive baseline.

    With several --model, every model is backtested on the same windows, one after the other, and ranked in one leaderboard with the baseline.
    """
    with reported_errors(given["debug"]):
        from moirai_cli.engines import local
        from moirai_cli.evaluation.backtest import check_output_id_column
        from moirai_cli.forecasting.job import DEFAULT_MODEL, BacktestJob
        from moirai_cli.forecasting.procedure import read_findings

        models = given["model"] or [DEFAULT_MODEL]
        job = BacktestJob.build(given["horizon"], **opts.job_options({**given, "model": models[0]}))
        outputs = BacktestOutputs(given["output"], given["forecasts_output"], given["plot"])
        outputs.check(given["data"], models)
        console, started = Console(given["quiet"], "evaluating"), time.perf_counter()
        dataset = local.read_whole(job, given["data"], console)
        if outputs.output or outputs.forecasts:
            check_output_id_column(dataset.id_column, leaderboard=len(models) > 1)
        console.report(read_findings(dataset))
        run = _leaderboard if len(models) > 1 else _one_model
        summary, where, series, skipped = run(job, models, dataset, console, outputs)
        if (not outputs.on_stdout or not given["quiet"]) and (outputs.on_stdout or not stdout_is_closed()):
            print_table(summary, stderr=outputs.on_stdout)
        note(
            f"evaluated {series} series, {skipped} skipped as too short, {job.windows} window(s) of {job.horizon} steps, "
            f"{where}, {time.perf_counter() - started:.1f}s{outputs.destinations}",
            given["quiet"],
        )


def _one_model(job, models: list[str], dataset, console: Console, outputs: "BacktestOutputs"):
    """Backtest one model: write its tables and plot; (its summary table, the closing note's model part, series, skipped)."""
    from moirai_cli.engines import local
    from moirai_cli.evaluation import plot_best_worst, render_summary

    with outputs.writers() as write, console.progress():
        result = local.backtest(job, dataset, console, download_progress=not console.quiet)
        console.report(result)
        warn_too_short(result.too_short, job)
        backtest = result.detail
        write(backtest.per_window, backtest.forecasts, dataset.id_column)
        if outputs.plot:
            plot_best_worst(backtest, outputs.plot)
    console.finish()
    return render_summary(backtest), f"model {models[0]}, {console.where}", result.series, len(result.too_short)


def _leaderboard(job, models: list[str], dataset, console: Console, outputs: "BacktestOutputs"):
    """Backtest several models on the same windows, one in memory at a time, and rank them with the baseline."""
    import dataclasses

    from moirai_cli.evaluation import compare, render_leaderboard
    from moirai_cli.forecasting.pipeline import CheckpointTraits, fetch_checkpoint, load_forecaster, pick_device
    from moirai_cli.evaluation.backtest import MODEL_COLUMN
    from moirai_cli.forecasting.procedure import check_forecaster, crossing_notice, crossing_rows, model_notices

    specs = {name: dataclasses.replace(job.model, model=name) for name in models}
    folders = {name: fetch_checkpoint(spec, progress=not console.quiet) for name, spec in specs.items()}
    for name, folder in folders.items():
        traits = CheckpointTraits.of_folder(folder)
        check_forecaster(job, traits, label=name)
        for notice in model_notices(traits, dataset, job, label=name):
            console.notice(notice)
    loaders = {name: lambda spec=dataclasses.replace(specs[name], model=str(folders[name]), revision=None): load_forecaster(spec) for name in models}
    job = job.with_run_seed()
    settings = job.predict.predict_options()
    with outputs.writers() as write, console.progress():
        console.started(len(dataset.series) * job.windows * len(models), "")
        board = compare(
            loaders, dataset.series, job.horizon, windows=job.windows, stride=job.step, freq=dataset.freq,
            season_length=job.season_length, quantile_levels=job.predict.quantile_levels, num_samples=settings.pop("num_samples", None),
            seed=job.predict.seed, target_names=dataset.target_names, progress=console.advance, **settings,
        )
        warn_too_short(board.skipped, job)
        write(board.per_window, board.forecasts, dataset.id_column)
    for label in models:
        rows = board.forecasts[board.forecasts[MODEL_COLUMN] == label]
        crossing = crossing_rows(rows, job.predict.quantile_levels)
        if crossing:
            console.notice(crossing_notice(crossing, len(rows), label))
    where = f"{len(models)} models, device {pick_device(job.model.device)}"
    return render_leaderboard(board), where, board.n_series, len(board.skipped)


def warn_too_short(ids: list, job) -> None:
    """One warning per series a backtest left out as too short, saying how long it would need to be."""
    needed = job.horizon + (job.windows - 1) * job.step
    warn_skipped(
        ids,
        f"too short for {job.windows} window(s) of {job.horizon} steps {job.step} apart (it needs more than {needed} rows, "
        "with an observed value before the first window)",
    )


class BacktestOutputs:
    """Where a backtest goes: per-window scores, per-window forecasts, a plot; published together when all succeeded."""

    def __init__(self, output: str | None, forecasts: str | None, plot: str | None) -> None:
        self.output, self.forecasts, self.plot = output, forecasts, plot

    @property
    def on_stdout(self) -> bool:
        return "-" in (self.output, self.forecasts)

    @property
    def destinations(self) -> str:
        return "".join(f" -> {path}" for path in (self.output, self.forecasts) if path and path != "-")

    def check(self, data: str, models: list[str]) -> None:
        """Refuse, before any work, outputs that cannot be written, overwrite an input or each other, or don't fit the models."""
        from moirai_cli.data import STDIO, check_distinct_paths, check_output_path

        for path in (self.output, self.forecasts):
            if path:
                check_output_path(path)
        if self.plot:
            from moirai_cli.plotting import check_plot_path

            check_plot_path(self.plot)
        if stdout_is_closed() and (STDIO in (self.output, self.forecasts) or not (self.output or self.forecasts)):
            raise InputError(f"stdout is closed, so the results could not be shown; write them to a file with {option('output')}")
        if self.output == STDIO and self.forecasts == STDIO:
            raise InputError(f"{option('output')} - and {option('forecasts_output')} - would write two tables to stdout; send one of them to a file")
        check_distinct_paths({"DATA": data}, {"--output": self.output, "--forecasts-output": self.forecasts, "--plot": self.plot})
        if len(models) > 1:
            repeated = next((name for i, name in enumerate(models) if name in models[:i]), None)
            if repeated is not None:
                raise InputError(f"{option('model')} '{repeated}' is given more than once; give each model once")
            if self.plot:
                raise InputError(f"{option('plot')} draws one model's forecasts: give a single {option('model')}, or leave {option('plot')} out")

    @contextlib.contextmanager
    def writers(self) -> Iterator[Any]:
        """A function writing the backtest's tables (id column named as in the input); published when the block succeeds."""
        from moirai_cli.data import TableWriter, publish_together
        from moirai_cli.evaluation.backtest import with_input_id_column
        from moirai_cli.runtime import hold_stop_signals, release_stop_signals

        with publish_together(), contextlib.ExitStack() as stack:  # every file of the run, or none
            hold_stop_signals()
            try:
                writers = [stack.enter_context(TableWriter(path)) if path else None for path in (self.output, self.forecasts)]
            finally:
                release_stop_signals()

            def write(per_window, forecasts, id_column: str) -> None:
                for writer, table in zip(writers, (per_window, forecasts)):
                    if writer is not None:
                        writer.write(with_input_id_column(table, id_column))

            yield write

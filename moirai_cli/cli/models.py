"""`moirai download` and `moirai models`: fetch a checkpoint into the cache; list the known checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from moirai_cli.cli import options as opts
from moirai_cli.cli.console import print_table, stdout_is_closed
from moirai_cli.cli.errors import reported_errors
from moirai_cli.errors import InputError, option
from moirai_cli.forecasting.job import DEFAULT_MODEL


def _resolve_checkpoint(name_or_path: str, revision: str | None, cache_dir: str | None, *, force: bool = False, quiet: bool = False) -> Path:
    """Find or download a checkpoint folder, checking cached files against the Hub (the model package owns the details)."""
    from moirai_cli.model.checkpoint import resolve_checkpoint

    return resolve_checkpoint(name_or_path, revision, cache_dir, force_download=force, verify=True, progress=not quiet)


@opts.with_options(
    opts.Opt("model", Annotated[str, typer.Argument(metavar="MODEL", help="Hugging Face repo id or local folder.")], DEFAULT_MODEL),
    *opts.MODEL_OPTIONS[:2],
    opts.Opt("force", Annotated[bool, typer.Option("--force", help="Download the files again even if they are cached (repairs a damaged cache).")], False),
    opts.Opt("quiet", Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (warnings stay).")], False),
    opts.DEBUG,
)
def download(**given: Any) -> None:
    """Fetch a checkpoint into the Hugging Face cache, check it against the Hub and that it loads, and print its folder."""
    with reported_errors(given["debug"]):
        from moirai_cli.forecasting.job import ModelSpec
        from moirai_cli.forecasting.pipeline import load_forecaster, model_errors

        model, cache_dir = given["model"], given["cache_dir"]
        with model_errors(f"cannot download '{model}'", local_folder_hint=False):
            path = _resolve_checkpoint(model, given["revision"], cache_dir, force=given["force"], quiet=given["quiet"])
        load_forecaster(ModelSpec(str(path), None, cache_dir, "cpu"))
        typer.echo(str(path))


@opts.with_options(
    opts.MODEL_OPTIONS[1],
    opts.Opt("refresh", Annotated[bool, typer.Option(
        "--refresh", help="First ask the Hub for each listed model's card, for its licence (waits bounded like downloads).",
    )], False),
    opts.LIST_FORMAT,
    opts.DEBUG,
)
def models(**given: Any) -> None:
    """List the known Moirai checkpoints: family, size, parameters, patch sizes, licence, and which are cached.

    Reads only the local cache (no network) unless --refresh is given.
    """
    with reported_errors(given["debug"]):
        from moirai_cli.data import STDIO, write_table
        from moirai_cli.model.hub import is_offline
        from moirai_cli.model.inventory import list_models, models_frame, models_records, refresh_model_cards, render_models

        cache_dir = given["cache_dir"]
        if stdout_is_closed():
            raise InputError("stdout is closed, so the list could not be shown")
        chosen = given["output_format"].value if given["output_format"] else ("table" if sys.stdout.isatty() else "csv")
        if given["refresh"]:
            if is_offline():
                raise InputError(f"{option('refresh')} asks the Hub, but offline mode is on (HF_HUB_OFFLINE); unset it or leave {option('refresh')} out")
            refresh_model_cards([entry.repo_id for entry in list_models(cache_dir)], cache_dir)
        entries = list_models(cache_dir)
        if chosen == "table":
            print_table(render_models(entries, cache_dir))
        elif chosen == "csv":
            write_table(models_frame(entries), STDIO)
        else:
            typer.echo(json.dumps(models_records(entries), indent=2))

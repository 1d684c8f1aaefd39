"""Shared fixtures of the fine-tuning tests: real monthly data, the tiny checkpoints loaded, one compute thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SAMPLE_DATA = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture(autouse=True)
def one_compute_thread():
    """Training the tiny networks is a stream of small operations: one thread runs them fastest on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def employment():
    """22 monthly US employment series of 120 months (sample_data/us_employment.csv, a wide table)."""
    from moirai_cli.data import load_dataset

    return load_dataset(SAMPLE_DATA / "us_employment.csv")


@pytest.fixture(scope="session")
def weather():
    """Seattle's daily weather (sample_data/seattle_weather.csv): the two temperatures as a bivariate target,
    wind as a past covariate, precipitation as a known one."""
    from moirai_cli.data import load_dataset

    return load_dataset(SAMPLE_DATA / "seattle_weather.csv", target=["temp_max", "temp_min"],
                        past_covariates=["wind"], known_covariates=["precipitation"])


@pytest.fixture(scope="session")
def forecasters(family_checkpoints):
    """family -> the tiny checkpoint of that family loaded on the CPU."""
    from moirai_cli.forecasting.pipeline import MoiraiForecaster

    return {family: MoiraiForecaster.from_pretrained(str(folder), device="cpu") for family, folder in family_checkpoints.items()}

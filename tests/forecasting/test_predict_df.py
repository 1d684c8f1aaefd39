"""The notebook path: a pandas frame in, a long forecast frame out, as the CLI writes it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from moirai_cli.errors import InputError

SAMPLES = Path(__file__).resolve().parent.parent.parent / "sample_data"


def long_frame(num_series: int = 3, length: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    stamps = pd.date_range("2024-01-01", periods=length, freq="D")
    return pd.concat(
        pd.DataFrame({"unique_id": f"s{i}", "ds": stamps, "y": 10 + rng.normal(size=length).cumsum()})
        for i in range(num_series)
    )


def test_predict_df_long_frame(tiny_forecaster):
    out = tiny_forecaster.predict_df(long_frame(), 7, quantile_levels=[0.1, 0.5, 0.9], num_samples=30, seed=0)
    assert list(out.columns) == ["unique_id", "ds", "mean", "0.1", "0.5", "0.9"]
    assert len(out) == 3 * 7
    first = out[out["unique_id"] == "s0"]["ds"]
    assert first.iloc[0] == pd.Timestamp("2024-03-01") and first.iloc[-1] == pd.Timestamp("2024-03-07")
    assert (out["0.1"] <= out["0.5"]).all() and (out["0.5"] <= out["0.9"]).all()


def test_predict_df_matches_predict_on_arrays(tiny_forecaster):
    frame = long_frame(2, 50)
    out = tiny_forecaster.predict_df(frame, 5, quantile_levels=[0.5], num_samples=40, seed=4)
    groups = list(frame.groupby("unique_id"))
    arrays, ids = [g["y"].to_numpy() for _, g in groups], [key for key, _ in groups]
    direct = tiny_forecaster.predict(arrays, 5, item_ids=ids, num_samples=40, seed=4).quantiles([0.5])[:, 0, :, 0]
    np.testing.assert_allclose(out["0.5"].to_numpy().reshape(2, 5), direct, rtol=1e-6)


def test_predict_df_rejects_a_frame_without_values(tiny_forecaster):
    frame = long_frame(1, 10).assign(y=np.nan)
    with pytest.raises(InputError):
        tiny_forecaster.predict_df(frame, 3, num_samples=5)


def test_predict_df_takes_the_date_convention_and_refuses_colliding_columns(tiny_forecaster):
    stamps = pd.date_range("2024-01-01", periods=10, freq="D").strftime("%d/%m/%Y")  # every day up to 12: ambiguous
    frame = pd.DataFrame({"date": stamps, "y": np.arange(10.0)})
    with pytest.raises(InputError, match="dayfirst=True"):  # a Python caller's error names the parameter
        tiny_forecaster.predict_df(frame, 2, num_samples=5)
    out = tiny_forecaster.predict_df(frame, 2, num_samples=5, dayfirst=True)
    assert out["date"].tolist() == [pd.Timestamp("2024-01-11"), pd.Timestamp("2024-01-12")]
    colliding = long_frame(2, 20).rename(columns={"unique_id": "0.5"})
    with pytest.raises(InputError, match="the id column '0.5'"):
        tiny_forecaster.predict_df(colliding, 2, id_column="0.5", num_samples=5)
    with pytest.warns(UserWarning, match="more than half of the D grid is missing"):
        tiny_forecaster.predict_df(long_frame(1, 30).iloc[::3], 2, freq="D", num_samples=5)


@pytest.mark.parametrize("backend", ["string[pyarrow]", "arrow string", "arrow large string", "arrow dictionary", "category"])
def test_arrow_backed_and_categorical_text_columns_are_text(tiny_forecaster, backend):
    import pyarrow as pa

    plain = pd.read_csv(SAMPLES / "stocks.csv")
    kinds = {
        "string[pyarrow]": "string[pyarrow]",
        "arrow string": pd.ArrowDtype(pa.string()),
        "arrow large string": pd.ArrowDtype(pa.large_string()),
        "arrow dictionary": pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string())),
        "category": "category",
    }
    frame = plain.assign(**{column: pd.Series(pd.array(plain[column].astype(object), dtype=kinds[backend])) for column in ("symbol", "date")})
    expected = tiny_forecaster.predict_df(plain, 3, seed=0, num_samples=5)
    got = tiny_forecaster.predict_df(frame, 3, seed=0, num_samples=5)  # the id and the target are found as with plain text
    assert got["symbol"].astype(str).tolist() == expected["symbol"].tolist()
    np.testing.assert_array_equal(got["mean"].to_numpy(), expected["mean"].to_numpy())
    assert got["mean"].dtype == np.float64


def test_errors_name_python_parameters_and_the_command_line_its_flags(tiny_forecaster, tmp_path):
    from typer.testing import CliRunner

    from moirai_cli.cli import app

    table = pd.DataFrame({"id": "a", "date": ["03/04/2024", "04/04/2024", "05/04/2024"], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(InputError) as raised:
        tiny_forecaster.predict_df(table, 2)
    assert "pass dayfirst=True or dayfirst=False, or date_format" in str(raised.value) and "--" not in str(raised.value)
    table.to_csv(tmp_path / "t.csv", index=False)
    result = CliRunner().invoke(app, ["forecast", str(tmp_path / "t.csv"), "-H", "2", "--model", str(SAMPLES.parent / "tests" / "fixtures" / "tiny-moe")])
    assert result.exit_code == 2 and "pass --dayfirst or --monthfirst, or --date-format" in result.stderr
    with pytest.raises(InputError, match=r"^num_samples must be at least 1, got 0$"):
        tiny_forecaster.predict_df(table, 2, num_samples=0, dayfirst=True)
    with pytest.raises(TypeError, match="unknown option 'num_sample' \\(did you mean 'num_samples'\\?\\)"):
        tiny_forecaster.predict_df(table, 2, num_sample=3)
    with pytest.raises(TypeError, match="'device' is an option of loading the model"):
        tiny_forecaster.predict_df(table, 2, device="cpu")


def test_predict_df_takes_integer_column_names(tiny_forecaster):
    # KeyError '0'.
    frame = pd.DataFrame({0: pd.date_range("2024-01-01", periods=30).strftime("%Y-%m-%d"), 1: np.arange(30.0)})
    out = tiny_forecaster.predict_df(frame, 2, quantile_levels=[0.5], num_samples=4, seed=0)
    assert list(out.columns) == ["item_id", "0", "mean", "0.5"] and out["item_id"].tolist() == ["1", "1"]
    assert out["0"].tolist() == [pd.Timestamp("2024-01-31"), pd.Timestamp("2024-02-01")]
    named = frame.set_axis(["0", "1"], axis=1)
    pd.testing.assert_frame_equal(out, tiny_forecaster.predict_df(named, 2, quantile_levels=[0.5], num_samples=4, seed=0))
    with pytest.raises(InputError, match=r"columns 1 and '1' have the same name as text; rename one"):
        tiny_forecaster.predict_df(frame.assign(**{"1": 1.0}), 2)


def test_a_variate_never_observed_is_left_empty_with_a_warning(tiny_forecaster):
    # A variate with no observed value in one series was forecast (values near 0) without a word.
    frame = long_frame(2, 40).assign(z=lambda f: np.where(f["unique_id"] == "s1", np.nan, f["y"] * 2))
    with pytest.warns(UserWarning, match=r"series 's1': target 'z' has no observed value; its forecast is left empty"):
        out = tiny_forecaster.predict_df(frame, 3, target=["y", "z"], quantile_levels=[0.5], num_samples=8, seed=0)
    empty = (out["unique_id"] == "s1") & (out["target"] == "z")
    assert empty.sum() == 3 and out.loc[empty, ["mean", "0.5"]].isna().all().all()
    assert out.loc[~empty, ["mean", "0.5"]].notna().all().all()

"""Engines: where a job runs. Each one only moves data and calls the one per-chunk procedure.

- `local`: this process; a long file grouped by id is streamed a chunk of series at a time.
- `ray`: a Ray cluster through Ray Data (the `ray` extra).
- `spark`: Spark DataFrames (the `spark` extra).

They all take the same `ForecastJob` / `BacktestJob` (moirai_cli.forecasting.job), run
`moirai_cli.evaluation.procedure.run_chunk` on whole series, and hand back `ChunkResult`s, so every
engine gives the same rows for the same job; a test matrix (tests/engines/test_conformance.py) checks it.
What the user should be told reaches the caller through `RunEvents`, never printed by an engine.
"""

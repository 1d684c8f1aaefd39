"""Forecast a long-format CSV with the reference implementation (uni2ts 2.0.0), for benchmarks.

Runs in the reference's virtual environment only (see ../shared/reference/make-venv.sh):

    REF/bin/python benchmarks/reference_forecast.py DATA.csv CHECKPOINT OUT.csv --horizon 48 \
        --context-length 512 --num-samples 100 --batch-size 32

Writes the mean and the 0.1 ... 0.9 quantiles per item and step, like `moirai forecast`.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from uni2ts.model.moirai_moe import MoiraiMoEForecast, MoiraiMoEModule

LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data")
    parser.add_argument("checkpoint")
    parser.add_argument("output")
    parser.add_argument("--horizon", type=int, required=True)
    parser.add_argument("--context-length", type=int, required=True)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    frame = pd.read_csv(args.data, parse_dates=["timestamp"])
    dataset = [
        {"item_id": item, "start": pd.Period(group["timestamp"].iloc[0], freq="h"), "target": group["target"].to_numpy(np.float32)}
        for item, group in frame.groupby("item_id", sort=False)
    ]
    model = MoiraiMoEForecast(
        prediction_length=args.horizon,
        context_length=args.context_length,
        patch_size=16,
        num_samples=args.num_samples,
        target_dim=1,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0,
        module=MoiraiMoEModule.from_pretrained(args.checkpoint),
    )
    predictor = model.create_predictor(batch_size=args.batch_size, device="cpu")
    rows = []
    for entry, forecast in zip(dataset, predictor.predict(dataset)):
        samples = forecast.samples  # (S, H)
        index = pd.period_range(forecast.start_date, periods=args.horizon, freq="h").to_timestamp()
        quantiles = np.quantile(samples, LEVELS, axis=0)
        table = pd.DataFrame({"item_id": entry["item_id"], "timestamp": index, "mean": samples.mean(0)})
        for level, values in zip(LEVELS, quantiles):
            table[str(level)] = values
        rows.append(table)
    pd.concat(rows).to_csv(args.output, index=False)


if __name__ == "__main__":
    main()

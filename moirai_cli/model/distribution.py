"""Moirai's predictive distribution: a mixture of four components under an affine map.

For every value position the network outputs mixture logits and each component's
parameters in the standardised space x; the forecast lives in y = loc + scale * x, where
loc/scale are the scaler statistics of the token's series and variate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import LogNormal, Normal, StudentT

from moirai_cli.model.config import ComponentSpec

Params = dict[str, torch.Tensor]


def component_log_prob(spec: ComponentSpec, params: Params, x: torch.Tensor) -> torch.Tensor:
    """log p(x) of one component, -inf outside its support."""
    if spec.kind == "student_t":
        return StudentT(params["df"], params["loc"], params["scale"], validate_args=False).log_prob(x)
    if spec.kind == "normal_fixed_scale":
        scale = torch.as_tensor(spec.fixed_scale, dtype=x.dtype, device=x.device)
        return Normal(params["loc"], scale, validate_args=False).log_prob(x)
    if spec.kind == "negative_binomial":
        inside = x >= 0
        safe_x = torch.where(inside, x, torch.ones_like(x))
        n, logits = params["total_count"], params["logits"]
        log_unnormalised = n * F.logsigmoid(-logits) + F.logsigmoid(logits) * safe_x
        log_beta = torch.lgamma(1 + safe_x) + torch.lgamma(n) - torch.lgamma(1 + safe_x + n)
        log_p = log_unnormalised - (log_beta + torch.log(n + safe_x))
        return torch.where(inside, log_p, torch.full_like(log_p, float("-inf")))
    if spec.kind == "log_normal":
        inside = x > 0
        safe_x = torch.where(inside, x, torch.ones_like(x))
        log_p = LogNormal(params["loc"], params["scale"], validate_args=False).log_prob(safe_x)
        return torch.where(inside, log_p, torch.full_like(log_p, float("-inf")))
    raise ValueError(f"unknown component kind {spec.kind!r}")


def component_sample(spec: ComponentSpec, params: Params, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Draw `shape + batch_shape` values from one component with `generator`.

    The same transformations of standard draws as torch.distributions uses (StudentT as a
    normal over the root of a chi-square, the negative binomial as a gamma-Poisson mixture),
    each draw taken from the given generator.
    """
    loc = next(iter(params.values()))
    size = shape + loc.shape
    tiny = torch.finfo(loc.dtype).tiny

    def normal() -> torch.Tensor:
        return torch.randn(size, generator=generator, dtype=loc.dtype, device=loc.device)

    def gamma(concentration: torch.Tensor) -> torch.Tensor:
        return torch._standard_gamma(concentration.expand(size), generator=generator)

    if spec.kind == "student_t":
        df = params["df"]
        chi2 = (gamma(0.5 * df) / 0.5).clamp_min_(tiny)
        return params["loc"] + params["scale"] * (normal() * torch.rsqrt(chi2 / df))
    if spec.kind == "normal_fixed_scale":
        return params["loc"] + spec.fixed_scale * normal()
    if spec.kind == "negative_binomial":
        rate = (gamma(params["total_count"]) / torch.exp(-params["logits"])).clamp_min_(tiny)
        return torch.poisson(rate, generator=generator)
    if spec.kind == "log_normal":
        return torch.exp(params["loc"] + params["scale"] * normal())
    raise ValueError(f"unknown component kind {spec.kind!r}")


def component_mean(spec: ComponentSpec, params: Params) -> torch.Tensor:
    """Mean of one component (StudentT's df exceeds 2, so its mean is its loc)."""
    if spec.kind in ("student_t", "normal_fixed_scale"):
        return params["loc"]
    if spec.kind == "negative_binomial":
        return params["total_count"] * torch.exp(params["logits"])
    if spec.kind == "log_normal":
        return torch.exp(params["loc"] + params["scale"] ** 2 / 2)
    raise ValueError(f"unknown component kind {spec.kind!r}")


@dataclass
class MixtureDistribution:
    """Per-value mixture over `components`; every tensor has the same batch shape (...)."""

    components: tuple[ComponentSpec, ...]
    logits: torch.Tensor  # (..., K) unnormalised mixture weights
    params: list[Params]  # per component: name -> (...)
    loc: torch.Tensor  # (...) affine shift (scaler mean)
    scale: torch.Tensor  # (...) affine scale (scaler std)

    def map(self, fn) -> "MixtureDistribution":
        """Apply a function of the leading (batch) dimensions to every tensor, e.g. select tokens."""
        return MixtureDistribution(
            self.components,
            fn(self.logits),
            [{name: fn(t) for name, t in p.items()} for p in self.params],
            fn(self.loc),
            fn(self.scale),
        )

    @classmethod
    def concatenate(cls, parts: Sequence["MixtureDistribution"]) -> "MixtureDistribution":
        """One distribution from several along the first batch dimension (e.g. row chunks of one pass)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return cls(
            first.components,
            torch.cat([p.logits for p in parts]),
            [{name: torch.cat([p.params[k][name] for p in parts]) for name in params} for k, params in enumerate(first.params)],
            torch.cat([p.loc for p in parts]),
            torch.cat([p.scale for p in parts]),
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log-density of `value` (broadcast against the batch shape), Jacobian included."""
        x = (value - self.loc) / self.scale
        log_weights = torch.log_softmax(self.logits, dim=-1).movedim(-1, 0)
        per_component = torch.stack(
            [component_log_prob(spec, p, x) for spec, p in zip(self.components, self.params)]
        )
        log_weights = torch.where(torch.isinf(per_component), torch.zeros_like(per_component), log_weights)
        return (log_weights + per_component).logsumexp(dim=0) - torch.log(torch.abs(self.scale))

    def sample(self, num_samples: int, generators: Sequence[torch.Generator]) -> torch.Tensor:
        """Draw (num_samples, ...) values: a component per value, then a value from it.

        `generators` split the first batch dimension into equal blocks of rows, block i drawn
        with generator i only (one generator per series makes a series' draws independent of
        the rest of the batch).
        """
        rows = self.loc.shape[0]
        if rows % len(generators):
            raise ValueError(f"{rows} rows cannot be split among {len(generators)} generators")
        block = rows // len(generators)
        return torch.cat(
            [
                self.map(lambda t: t[i * block : (i + 1) * block])._draw(num_samples, generator)
                for i, generator in enumerate(generators)
            ],
            dim=1,
        )

    def _draw(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """(num_samples, ...) draws, all from `generator` in a fixed order."""
        shape = torch.Size((num_samples,))
        drawn = torch.stack(
            [component_sample(spec, p, shape, generator) for spec, p in zip(self.components, self.params)], dim=-1
        )  # (S, ..., K)
        # The component of each value by inversion of the mixture's cumulative weights.
        uniform = torch.rand(shape + self.loc.shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        cumulative = torch.softmax(self.logits, dim=-1).cumsum(dim=-1)  # (..., K)
        choice = (cumulative <= uniform.unsqueeze(-1)).sum(dim=-1).clamp_max_(len(self.components) - 1)
        x = torch.gather(drawn, -1, choice.unsqueeze(-1)).squeeze(-1)
        return self.loc + self.scale * x

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean mapped through the affine transform."""
        weights = torch.softmax(self.logits, dim=-1).movedim(-1, 0)
        means = torch.stack([component_mean(spec, p) for spec, p in zip(self.components, self.params)])
        return (weights * means).sum(dim=0) * self.scale + self.loc

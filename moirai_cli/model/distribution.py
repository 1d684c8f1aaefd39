"""Moirai's predictive distribution: a mixture of four components under an affine map.

For every value position the network outputs mixture logits and each component's
parameters in the standardised space x; the forecast lives in y = loc + scale * x, where
loc/scale are the scaler statistics of the token's series and variate.
"""

from __future__ import annotations

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


def component_sample(spec: ComponentSpec, params: Params, shape: torch.Size) -> torch.Tensor:
    """Draw `shape + batch_shape` values from one component."""
    if spec.kind == "student_t":
        return StudentT(params["df"], params["loc"], params["scale"], validate_args=False).sample(shape)
    if spec.kind == "normal_fixed_scale":
        loc = params["loc"]
        return Normal(loc, torch.full_like(loc, spec.fixed_scale), validate_args=False).sample(shape)
    if spec.kind == "negative_binomial":
        n, logits = params["total_count"], params["logits"]
        gamma = torch.distributions.Gamma(n, torch.exp(-logits), validate_args=False).sample(shape)
        return torch.poisson(gamma)
    if spec.kind == "log_normal":
        return LogNormal(params["loc"], params["scale"], validate_args=False).sample(shape)
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

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log-density of `value` (broadcast against the batch shape), Jacobian included."""
        x = (value - self.loc) / self.scale
        log_weights = torch.log_softmax(self.logits, dim=-1).movedim(-1, 0)
        per_component = torch.stack(
            [component_log_prob(spec, p, x) for spec, p in zip(self.components, self.params)]
        )
        log_weights = torch.where(torch.isinf(per_component), torch.zeros_like(per_component), log_weights)
        return (log_weights + per_component).logsumexp(dim=0) - torch.log(torch.abs(self.scale))

    def sample(self, num_samples: int) -> torch.Tensor:
        """Draw (num_samples, ...) values: a component per value, then a value from it."""
        shape = torch.Size((num_samples,))
        drawn = torch.stack(
            [component_sample(spec, p, shape) for spec, p in zip(self.components, self.params)], dim=-1
        )
        choice = torch.distributions.Categorical(logits=self.logits, validate_args=False).sample(shape)
        x = torch.gather(drawn, -1, choice.unsqueeze(-1)).squeeze(-1)
        return self.loc + self.scale * x

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean mapped through the affine transform."""
        weights = torch.softmax(self.logits, dim=-1).movedim(-1, 0)
        means = torch.stack([component_mean(spec, p) for spec, p in zip(self.components, self.params)])
        return (weights * means).sum(dim=0) * self.scale + self.loc

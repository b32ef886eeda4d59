"""Gaussian heads that split a tower feature into MII and MEI, and the CLUB variational networks."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

# exp(logvar) stays finite and bounded away from 0 in float32 (and fp16) over this range.
LOGVAR_MIN, LOGVAR_MAX = -10.0, 5.0


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """Sample ``mu + eps * sigma`` with ``eps ~ N(0, I)`` so gradients reach ``mu`` and ``logvar``."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


class _GaussianMLP(nn.Module):
    """Linear-GELU-Linear mapping an input to a diagonal Gaussian (mean, clamped log-variance)."""

    def __init__(
        self, d_in: int, d_hidden: int, d_out: int, logvar_init: float = 0.0, batchnorm: bool = False
    ) -> None:
        super().__init__()
        norm: nn.Module = nn.BatchNorm1d(d_hidden) if batchnorm else nn.Identity()
        self.net = nn.Sequential(nn.Linear(d_in, d_hidden), norm, nn.GELU(), nn.Linear(d_hidden, 2 * d_out))
        with torch.no_grad():
            self.net[-1].bias[d_out:].fill_(logvar_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class VariationalEncoder(_GaussianMLP):
    """Posterior ``q(z | h)`` over one latent (MII or MEI) given a tower feature; returns (mu, logvar).

    Two choices keep a contrastive loss on these codes from collapsing at the start of training
    (measured: without them the MII alignment loss sits at log(batch) and never moves):
    batch normalisation in the hidden layer, because a fresh tower maps all inputs to nearly the
    same direction (mean cosine 0.87 between images) and the MLP's biases would make them identical;
    and ``logvar_init`` starting the posterior narrow, because unit-variance samples of a fresh head
    are mostly noise.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, logvar_init: float = 0.0) -> None:
        super().__init__(d_in, d_hidden, d_out, logvar_init, batchnorm=True)


class GaussianPredictor(_GaussianMLP):
    """CLUB's variational network ``q(b | a)``: a Gaussian over ``b`` predicted from ``a``.

    ``forward(a)`` returns ``(mu, logvar)``.

    Note the argument order ``(d_in, d_out, hidden)``, unlike :class:`VariationalEncoder`.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int) -> None:
        super().__init__(d_in, hidden, d_out)


class HeadOutput(NamedTuple):
    """Posterior parameters of one modality's MII (``z``) and MEI (``u``)."""

    mu_z: Tensor
    logvar_z: Tensor
    mu_u: Tensor
    logvar_u: Tensor


class ModalityHead(nn.Module):
    """One modality's MII/MEI encoders plus a decoder reconstructing the feature from ``(z, u)``."""

    def __init__(self, embed_dim: int, mii_dim: int, mei_dim: int, hidden: int, logvar_init: float = 0.0) -> None:
        super().__init__()
        self.mii = VariationalEncoder(embed_dim, hidden, mii_dim, logvar_init)
        self.mei = VariationalEncoder(embed_dim, hidden, mei_dim, logvar_init)
        self.decoder = nn.Sequential(
            nn.Linear(mii_dim + mei_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )

    def forward(self, h: Tensor) -> HeadOutput:
        mu_z, logvar_z = self.mii(h)
        mu_u, logvar_u = self.mei(h)
        return HeadOutput(mu_z, logvar_z, mu_u, logvar_u)

    def decode(self, z: Tensor, u: Tensor) -> Tensor:
        """Reconstruct the (normalised) tower feature from an MII and an MEI code."""
        return self.decoder(torch.cat([z, u], dim=-1))

"""The ``vae-half`` method: VAE oversampling of the minority class up to half the majority count.

Partial rebalancing: the minority class grows to ``RATIO`` x the majority instead of matching it, so fewer
synthetic images enter the training rows. Whether full balance is worth its synthetic images is an empirical
question; a comparison with ``vae`` (full balance) beside this row answers it with seed-level verdicts.
"""

from __future__ import annotations

from cxrgan.balance import BalanceContext
from cxrgan.balance.gan import GANOversampler

from cxrgan_vae.model import VAE

RATIO = 0.5  # minority / majority after oversampling


def vae_half(context: BalanceContext) -> GANOversampler:
    """The ``cxrgan.balancers`` entry point: a factory of the method from the run's context."""
    return GANOversampler("vae", VAE.resolve_config(context.generators), ratio=RATIO, work_dir=context.work_dir,
                          device=context.device, random_state=context.random_state, name="vae-half")

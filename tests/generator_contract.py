"""The contract every generative model in ``cxrgan.generators`` must pass: the checks live in ``cxrgan.testing``
(public, for third-party generators too); this module holds the tiny configs the tests run them with.

Use: ``check_generator_contract(cls, config, train_split, requestable_labels)`` and
``check_resume_contract(cls, config, train_split, tmp_path)`` from a test parametrised over ``GENERATORS``; a new
generator registers a tiny config in ``CONTRACT_CASES`` (or calls ``cxrgan.testing.check_generator(cls)``).
"""

from __future__ import annotations

from cxrgan.generators import (CDCGANConfig, CLDMConfig, CycleGANConfig, DCGANConfig, FastGANConfig, GuidedConfig,
                               LabelVectorConfig, LDMConfig, SGANConfig)
from cxrgan.testing import check_generator, check_generator_contract, check_resume_contract, small_train_split  # noqa: F401

TINY = dict(ngf=8, ndf=8, z_dim=16, batch_size=16, steps=4, progress=False)
# a latent diffusion model small enough for a test: 64 px -> 16 x 16 x 2 latents, a 2-level UNet with attention at
# 8 x 8, 4 DDIM steps; half the steps train the autoencoder, the other half the UNet
TINY_LDM = dict(ae_width=4, ae_multipliers=(1, 2, 2), latent_channels=2, unet_width=8, unet_multipliers=(1, 1),
                unet_attention=(False, True), head_channels=8, sample_steps=4, batch_size=16, autoencoder_batch_size=8,
                steps=4, autoencoder_fraction=0.5, discriminator_width=8, quality_images=32, progress=False)

# registry name -> (tiny config, labels one may request: list of (K,) rows the samples must carry, data set:
# "kermany" = 64 binary real training images, "nih" = 64 multi-label ones)
NIH_ROW = [1.0, 0.0, 0.0, 1.0] + [0.0] * 10
CONTRACT_CASES: dict[str, tuple[object, list[list[float]], str]] = {
    "dcgan": (DCGANConfig(target="pneumonia", ema_decay=0.9, diffaugment="translation,cutout", **TINY), [[1.0]],
              "kermany"),
    "cdcgan": (CDCGANConfig(d_norm="spectral", loss="hinge", embed_dim=4, **TINY), [[0.0], [1.0]], "kermany"),
    "cgan-labelvec": (LabelVectorConfig(embed_dim=4, ema_decay=0.9, **TINY), [NIH_ROW], "nih"),
    "cyclegan": (CycleGANConfig(ngf=4, ndf=4, n_blocks=1, steps=8, batch_size=4, bank_size=8, ema_decay=0.9,
                                progress=False), [[0.0], [1.0]], "kermany"),
    "fastgan": (FastGANConfig(target="pneumonia", ema_decay=0.9, diffaugment="translation,cutout", **TINY), [[1.0]],
                "kermany"),
    "ldm": (LDMConfig(target="pneumonia", ema_decay=0.9, **TINY_LDM), [[1.0]], "kermany"),
    "cldm": (CLDMConfig(**TINY_LDM), [[0.0], [1.0]], "kermany"),
    "ldm-labelvec": (GuidedConfig(ema_decay=0.9, guidance_scale=1.5, **TINY_LDM), [NIH_ROW], "nih"),
    "sgan": (SGANConfig(image_size=64, ndf=8, ngf=8, z_dim=16, steps=4, batch_size=8, reference_size=16,
                        progress=False), [], "kermany"),
}

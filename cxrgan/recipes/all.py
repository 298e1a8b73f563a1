"""Imports every recipe module so that each registers itself with the run engine (``RECIPES``)."""

import cxrgan.recipes.compare  # noqa: F401
import cxrgan.recipes.cyclegan_complement  # noqa: F401
import cxrgan.recipes.dcgan_alpha  # noqa: F401
import cxrgan.recipes.cgan_regimes  # noqa: F401
import cxrgan.recipes.dcgan_rare_findings  # noqa: F401
import cxrgan.recipes.sgan_domain  # noqa: F401
import cxrgan.recipes.sgan_scarcity  # noqa: F401
import cxrgan.recipes.helps_map  # noqa: F401

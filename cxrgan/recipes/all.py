"""Imports every recipe module so that each registers itself with the run engine (``RECIPES``)."""

import cxrgan.recipes.compare  # noqa: F401

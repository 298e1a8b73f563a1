"""Example cxrgan plugin: the ``vae`` generator and the ``vae-half`` method (see the package README)."""

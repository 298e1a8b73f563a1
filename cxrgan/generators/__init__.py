"""Generative models behind one interface (fit / sample / state_dict), one training loop, a registry and a cache."""

from cxrgan.generators.base import (GENERATORS, MIN_TRAIN_IMAGES, GenerativeModel, ImageTranslator, generator_class,
                                    register_generator)
from cxrgan.generators.training import Stream, Trainer, TrainerConfig
from cxrgan.generators.adversarial import GANConfig
from cxrgan.generators.dcgan import CDCGAN, DCGAN, CDCGANConfig, DCGANConfig, LabelVectorCDCGAN, LabelVectorConfig
from cxrgan.generators.diffusion import CLDM, LDM, LabelVectorLDM
from cxrgan.generators.diffusion_config import CLDMConfig, GuidedConfig, LDMConfig
from cxrgan.generators.fastgan import FastGAN, FastGANConfig
from cxrgan.generators.cyclegan import CycleGAN, CycleGANConfig
from cxrgan.generators.cyclegan_figure import save_translation_figure
from cxrgan.generators.sgan import SemiSupervisedGAN, SGANConfig
from cxrgan.generators.settings import GeneratorSettings, GeneratorSpec
from cxrgan.generators.cache import cache_entries, fit_or_load
from cxrgan.generators.runs import load_run, sample_from_run, train_gan

__all__ = [
    "GENERATORS", "MIN_TRAIN_IMAGES", "GenerativeModel", "ImageTranslator", "generator_class", "register_generator",
    "Stream", "Trainer", "TrainerConfig", "GANConfig",
    "DCGAN", "CDCGAN", "DCGANConfig", "CDCGANConfig", "LabelVectorCDCGAN", "LabelVectorConfig",
    "LDM", "CLDM", "LabelVectorLDM", "LDMConfig", "CLDMConfig", "GuidedConfig",
    "FastGAN", "FastGANConfig",
    "CycleGAN", "CycleGANConfig", "save_translation_figure", "SemiSupervisedGAN", "SGANConfig",
    "GeneratorSettings", "GeneratorSpec", "cache_entries", "fit_or_load", "load_run", "sample_from_run", "train_gan",
]

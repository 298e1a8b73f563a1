"""Generative models behind one interface (fit / sample / state_dict), a registry, and the train/sample functions."""

from cxrgan.generators.base import GENERATORS, MIN_TRAIN_IMAGES, GenerativeModel, generator_class, register_generator
from cxrgan.generators.dcgan import CDCGAN, DCGAN, CDCGANConfig, DCGANConfig
from cxrgan.generators.cyclegan import CycleGAN, CycleGANConfig, save_translation_figure
from cxrgan.generators.loop import GANConfig, GANTrainer
from cxrgan.generators.runs import load_run, sample_from_run, train_gan

__all__ = [
    "GENERATORS", "MIN_TRAIN_IMAGES", "GenerativeModel", "generator_class", "register_generator",
    "DCGAN", "CDCGAN", "DCGANConfig", "CDCGANConfig", "CycleGAN", "CycleGANConfig", "save_translation_figure", "GANConfig", "GANTrainer",
    "load_run", "sample_from_run", "train_gan",
]

"""Classifier backbones (features / head split for CAM) and the one training loop."""

from cxrgan.classify.networks import CLASSIFIERS, Classifier, build_classifier
from cxrgan.classify.losses import LOSSES, masked_bce
from cxrgan.classify.config import TrainConfig, TrainResult
from cxrgan.classify.scoring import predict
from cxrgan.classify.train import train_classifier

__all__ = ["CLASSIFIERS", "Classifier", "build_classifier", "LOSSES", "TrainConfig", "TrainResult", "masked_bce",
           "predict", "train_classifier"]

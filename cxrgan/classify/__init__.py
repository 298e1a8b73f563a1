"""Classifier backbones (features / head split for CAM) and the one training loop."""

from cxrgan.classify.networks import CLASSIFIERS, Classifier, build_classifier
from cxrgan.classify.train import TrainConfig, TrainResult, masked_bce, predict, train_classifier

__all__ = ["CLASSIFIERS", "Classifier", "build_classifier", "TrainConfig", "TrainResult", "masked_bce", "predict",
           "train_classifier"]

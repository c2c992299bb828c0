"""Models are trained here: one seeded trainer, recipes, augmentation, evaluation, training-time transforms."""

from unpoison.training.evaluate import evaluate_accuracy, predict, predict_logits
from unpoison.training.trainer import EpochLog, TrainConfig, Trainer, TrainResult, lr_at, train_on
from unpoison.training.transforms import TRAIN_TRANSFORMS, resolve_train_transform

__all__ = ["TrainConfig", "Trainer", "TrainResult", "EpochLog", "train_on", "lr_at", "predict", "predict_logits",
           "evaluate_accuracy", "TRAIN_TRANSFORMS", "resolve_train_transform"]

"""Calibration and evaluation data: image preprocessing, image folders, .npz arrays, model metadata."""

from .calibration import CalibrationSet, ModelInput, load_calibration, model_inputs_of
from .images import find_images, load_image
from .metadata import preprocessing_for_model
from .preprocess import PRESETS, Preprocessing

__all__ = [
    "PRESETS",
    "CalibrationSet",
    "ModelInput",
    "Preprocessing",
    "find_images",
    "load_calibration",
    "load_image",
    "model_inputs_of",
    "preprocessing_for_model",
]

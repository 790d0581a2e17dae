"""Image preprocessing of a classifier: resize, crop, scale to 0..1, normalize (PIL + numpy only).

The pipeline is the torchvision one that the models in ``models.json`` were trained and
measured with (DESIGN §1, models.json ``schema``)::

    x = RGB pixel / 255                       # after Resize(resize_size) + CenterCrop(input_size)
    input = (x - mean) / std                  # float32, CHW (NCHW once batched)

``Resize`` scales the shorter side to ``resize_size`` (the longer one to
``int(resize_size * long / short)``) with PIL's resampling, as ``torchvision.transforms.Resize``
does on PIL images; ``CenterCrop`` takes ``top = int(round((h - crop_h) / 2.0))``. With
``crop="none"`` the image is resized straight to ``input_size`` (aspect ratio not kept), which
is a no-op for CIFAR-10 images that already are 32x32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from PIL import Image

METADATA_PREFIX = "aquant.preprocess."
CROPS = ("center", "none")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CHANNEL_ORDER = "RGB"
LAYOUT = "NCHW"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes one model input of shape [3, H, W] (RGB, NCHW once batched).

    ``input_size`` is stored as ``(h, w)`` (an int means a square). ``resize_size`` is the
    shorter side before the center crop; ``None`` means the shorter side is resized to the
    larger crop side (crop fraction 1). It is not used with ``crop="none"``. ``mean`` and
    ``std`` are per RGB channel in 0..1 pixel units. ``dataset`` names the label space
    (``"imagenet"``, ``"cifar10"``) so evaluation can find ``<dataset>_classes.tsv``.
    """

    input_size: tuple[int, int]
    resize_size: int | None = None
    crop: str = "center"
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dataset: str | None = None

    def __post_init__(self) -> None:
        size = self.input_size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        # Frozen dataclass: normalise the user's forms (int, list) once, here.
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(
                f"preprocessing input size {self.input_size} must be one or two positive integers (--size)"
            )
        if self.crop not in CROPS:
            raise ConfigError(f"preprocessing crop '{self.crop}' is not one of {', '.join(CROPS)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"preprocessing interpolation '{self.interpolation}' is not one of {', '.join(INTERPOLATIONS)}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(
                f"preprocessing mean {self.mean} and std {self.std} need three RGB values each, std > 0 (--mean/--std)"
            )
        if self.crop == "center" and self.resize_size is not None and self.resize_size < max(size):
            raise ConfigError(
                f"preprocessing resize {self.resize_size} is smaller than the crop {size[0]}x{size[1]}; "
                f"pass --resize of at least {max(size)}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(3, H, W)`` of one preprocessed image."""
        return (3, *self.input_size)

    @classmethod
    def from_preset(cls, name: str) -> Preprocessing:
        """One of :data:`PRESETS` (``imagenet``, ``inception``, ``efficientnet-lite``, ``cifar10``)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown preprocessing preset '{name}'; use one of {', '.join(PRESETS)}") from None

    def with_overrides(
        self,
        size: int | tuple[int, int] | None = None,
        resize: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        crop: str | None = None,
        interpolation: str | None = None,
    ) -> Preprocessing:
        """A copy with the given fields replaced (``None`` keeps a field).

        A new ``size`` without ``resize`` keeps the crop fraction of a center crop
        (``resize = round(size * resize_old / size_old)``, e.g. 224/256 -> 299/342). A
        ``resize`` switches ``crop="none"`` to a center crop, since resizing only makes sense
        before cropping.
        """
        changes: dict[str, Any] = {}
        if size is not None:
            new_size = (size, size) if isinstance(size, int) else tuple(size)
            changes["input_size"] = new_size
            if resize is None and self.crop == "center" and self.resize_size is not None:
                changes["resize_size"] = int(round(max(new_size) * self.resize_size / max(self.input_size)))
        if resize is not None:
            changes["resize_size"] = resize
            changes["crop"] = "center"
        for name, value in (("mean", mean), ("std", std), ("crop", crop), ("interpolation", interpolation)):
            if value is not None:
                changes[name] = value
        return replace(self, **changes)

    def to_metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props`` entries: ``aquant.preprocess.<field>`` -> JSON value."""
        fields = {
            "input_size": list(self.input_size),
            "resize_size": self.resize_size,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "dataset": self.dataset,
            "channel_order": CHANNEL_ORDER,
            "layout": LAYOUT,
        }
        return {METADATA_PREFIX + key: json.dumps(value) for key, value in fields.items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> Preprocessing:
        """Inverse of :meth:`to_metadata`; other keys in ``props`` are ignored."""
        fields: dict[str, Any] = {}
        for key, text in props.items():
            if not key.startswith(METADATA_PREFIX):
                continue
            try:
                fields[key[len(METADATA_PREFIX) :]] = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"model metadata '{key}' is not valid JSON: {text!r}") from None
        if fields.pop("channel_order", CHANNEL_ORDER) != CHANNEL_ORDER or fields.pop("layout", LAYOUT) != LAYOUT:
            raise ConfigError(f"model metadata asks for a channel order/layout other than {CHANNEL_ORDER}/{LAYOUT}")
        missing = [name for name in ("input_size", "mean", "std") if name not in fields]
        if missing:
            raise ConfigError(f"model metadata lacks {', '.join(METADATA_PREFIX + m for m in missing)}")
        known = {"input_size", "resize_size", "crop", "interpolation", "mean", "std", "dataset"}
        return cls(**{k: v for k, v in fields.items() if k in known})

    @classmethod
    def from_models_json_entry(cls, entry: dict[str, Any]) -> Preprocessing:
        """Preprocessing of one ``models.json`` entry (``input_size``, ``resize_size``, ``crop``, ...).

        ``interpolation: "none"`` (images used as they are) maps to bilinear, and
        ``crop: "none"`` drops ``resize_size``; both only matter for images of another size.
        """
        crop = entry.get("crop", "center")
        interpolation = entry.get("interpolation", "bilinear")
        return cls(
            input_size=entry["input_size"],
            resize_size=entry.get("resize_size") if crop == "center" else None,
            crop=crop,
            interpolation="bilinear" if interpolation == "none" else interpolation,
            mean=entry["mean"],
            std=entry["std"],
            dataset=entry.get("dataset"),
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """Preprocess a PIL image into a float32 array of shape ``(3, H, W)``."""
        from PIL import Image

        resample = {
            "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC,
            "nearest": Image.Resampling.NEAREST,
        }[self.interpolation]
        image = image.convert("RGB")
        crop_h, crop_w = self.input_size
        if self.crop == "none":
            if image.size != (crop_w, crop_h):
                image = image.resize((crop_w, crop_h), resample)
        else:
            image = _resize_shorter_side(image, self.resize_size or max(crop_h, crop_w), resample)
            width, height = image.size
            top = int(round((height - crop_h) / 2.0))
            left = int(round((width - crop_w) / 2.0))
            image = image.crop((left, top, left + crop_w, top + crop_h))
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def _resize_shorter_side(image: Image.Image, short: int, resample: int) -> Image.Image:
    """torchvision ``Resize(short)``: shorter side -> ``short``, longer -> ``int(short * long / short_old)``."""
    width, height = image.size
    if width <= height:
        new_size = (short, int(short * height / width))
    else:
        new_size = (int(short * width / height), short)
    return image if new_size == image.size else image.resize(new_size, resample)


PRESETS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing(224, 256, "center", "bilinear", IMAGENET_MEAN, IMAGENET_STD, "imagenet"),
    "inception": Preprocessing(224, 256, "center", "bilinear", (0.5,) * 3, (0.5,) * 3, "imagenet"),
    "efficientnet-lite": Preprocessing(224, 256, "center", "bilinear", (127 / 255,) * 3, (128 / 255,) * 3, "imagenet"),
    # resnet20_cifar10 of models.json: ImageNet mean/std on the 32x32 image, no resize.
    "cifar10": Preprocessing(32, None, "none", "bilinear", IMAGENET_MEAN, IMAGENET_STD, "cifar10"),
}

"""Preprocessing, model metadata, image folders and calibration sets (aquant_onnx.data)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO_ROOT, TESTS_DIR, shared_path
from PIL import Image

from aquant_onnx.data import (
    Preprocessing,
    find_images,
    load_calibration,
    load_image,
    model_inputs_of,
    preprocessing_for_model,
)
from aquant_onnx.errors import CalibrationDataError, ConfigError

CALIB_DIR = TESTS_DIR / "data" / "cifar10_calib"
RESNET20 = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
IMAGE_INPUT = [("input", (None, 3, 32, 32))]


def _model_with_input(shape: list, metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """Identity model with one float input of ``shape`` (strings are dynamic dims)."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["output"])],
        "g",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, shape)],
        [onnx.helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, shape)],
    )
    model = onnx.helper.make_model(graph, ir_version=10, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.helper.set_model_props(model, metadata or {})
    return model


def _write_image_folder(folder: Path, count: int, size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# --- Preprocessing -----------------------------------------------------------------------


def test_cifar10_preset_matches_shipped_models_json() -> None:
    entry = json.loads((REPO_ROOT / "models" / "models.json").read_text())["models"][0]
    assert Preprocessing.from_models_json_entry(entry) == Preprocessing.from_preset("cifar10")


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("preset", "model"),
    [("inception", "mobilenet_v2_1.0_224"), ("efficientnet-lite", "efficientnet_lite0")],
)
def test_imagenet_presets_match_shared_models_json(preset: str, model: str) -> None:
    catalog = json.loads(shared_path("models", "models.json").read_text())
    entry = next(e for e in catalog["models"] if e["name"] == model)
    from_json = Preprocessing.from_models_json_entry(entry)
    expected = Preprocessing.from_preset(preset)
    assert (from_json.input_size, from_json.resize_size, from_json.crop) == ((224, 224), 256, "center")
    assert (from_json.interpolation, from_json.dataset) == (expected.interpolation, expected.dataset)
    np.testing.assert_allclose(from_json.mean, expected.mean, atol=1e-6)
    np.testing.assert_allclose(from_json.std, expected.std, atol=1e-6)


def test_imagenet_preset_values() -> None:
    prep = Preprocessing.from_preset("imagenet")
    assert prep.input_shape == (3, 224, 224)
    assert prep.resize_size == 256
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)


def test_real_cifar_pixel_matches_hand_computation() -> None:
    path = sorted((TESTS_DIR / "data" / "cifar10_test" / "cat").iterdir())[0]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    out = load_image(path, Preprocessing.from_preset("cifar10"))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    red, green, blue = pixels[5, 7]
    expected = [(red / 255 - 0.485) / 0.229, (green / 255 - 0.456) / 0.224, (blue / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 5, 7], expected, atol=1e-5)


def test_center_crop_offsets_follow_torchvision_rounding() -> None:
    # 385x256: the shorter side is already 256 (no resampling), crop left = round(161/2) = 80 (banker's), top = 16.
    pixels = np.random.default_rng(0).integers(0, 256, (256, 385, 3), dtype=np.uint8)
    prep = Preprocessing(224, 256, mean=(0, 0, 0), std=(1, 1, 1))
    out = prep(Image.fromarray(pixels))
    np.testing.assert_allclose(out.transpose(1, 2, 0) * 255, pixels[16:240, 80:304], atol=1e-4)


def test_resize_keeps_aspect_like_torchvision() -> None:
    # 300x200 -> shorter side 256, longer int(256 * 300 / 200) = 384; a constant image stays constant.
    prep = Preprocessing(224, 256, mean=(0, 0, 0), std=(1, 1, 1))
    out = prep(Image.new("RGB", (300, 200), (51, 102, 204)))
    np.testing.assert_allclose(out[:, 100, 100], [0.2, 0.4, 0.8], atol=1e-6)


def test_metadata_round_trip_and_overrides() -> None:
    prep = Preprocessing.from_preset("efficientnet-lite").with_overrides(size=299)
    assert prep.input_size == (299, 299) and prep.resize_size == 342  # crop fraction 224/256 kept
    props = prep.to_metadata()
    assert all(key.startswith("aquant.preprocess.") for key in props)
    assert json.loads(props["aquant.preprocess.mean"]) == pytest.approx([127 / 255] * 3)
    assert Preprocessing.from_metadata({**props, "other": "x"}) == prep
    assert Preprocessing.from_preset("cifar10").with_overrides(resize=36).crop == "center"


def test_bad_preprocessing_values_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="resize 200"):
        Preprocessing(224, 200)
    with pytest.raises(ConfigError, match="unknown preprocessing preset 'vgg'"):
        Preprocessing.from_preset("vgg")


# --- preprocessing_for_model -------------------------------------------------------------


def test_metadata_of_model_wins_over_guess() -> None:
    prep = Preprocessing.from_preset("inception")
    model = _model_with_input(["batch", 3, 224, 224], prep.to_metadata())
    assert preprocessing_for_model(model) == prep
    assert preprocessing_for_model(model, preset="imagenet") == Preprocessing.from_preset("imagenet")


def test_models_json_next_to_model_file() -> None:
    assert preprocessing_for_model(RESNET20) == Preprocessing.from_preset("cifar10")


def test_guess_from_input_shape_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        prep = preprocessing_for_model(_model_with_input(["batch", 3, 224, 224]))
    assert prep == Preprocessing.from_preset("imagenet")
    assert "assuming preset 'imagenet'" in caplog.text
    with pytest.raises(CalibrationDataError, match="input \\?x3x100x100"):
        preprocessing_for_model(_model_with_input(["batch", 3, 100, 100]))


def test_size_mismatch_names_the_flag() -> None:
    model = _model_with_input(["batch", 3, 224, 224])
    with pytest.raises(CalibrationDataError, match="model expects 3x224x224 but --size 32 gives 3x32x32"):
        preprocessing_for_model(model, preset="imagenet", overrides={"size": 32})


# --- image files ----------------------------------------------------------------------------


def test_find_images_recursive_sorted_case_insensitive(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    for name in ["b/x.JPEG", "a.png", "b/c/y.webp", "notes.txt", "z.Bmp"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    outside.mkdir()
    (outside / "q.jpg").write_bytes(b"")
    (root / "link").symlink_to(outside, target_is_directory=True)
    found = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert found == ["a.png", "b/c/y.webp", "b/x.JPEG", "z.Bmp"]


def test_load_image_returns_none_for_junk(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    assert load_image(tmp_path / "junk.jpg", Preprocessing.from_preset("cifar10")) is None


# --- calibration sets -----------------------------------------------------------------------


def test_subset_is_deterministic_per_seed() -> None:
    prep = Preprocessing.from_preset("cifar10")
    first = load_calibration(CALIB_DIR, IMAGE_INPUT, prep, num=16, seed=0)
    again = load_calibration(CALIB_DIR, IMAGE_INPUT, prep, num=16, seed=0)
    other = load_calibration(CALIB_DIR, IMAGE_INPUT, prep, num=16, seed=1)
    assert len(first) == 16 and first.files == again.files and first.files != other.files
    assert first.files == sorted(first.files)
    everything = load_calibration(CALIB_DIR, IMAGE_INPUT, prep, num=1000, seed=3)
    assert len(everything) == 128 and everything.files == find_images(CALIB_DIR)


def test_batches_stream_and_match_materialize() -> None:
    calib = load_calibration(CALIB_DIR, IMAGE_INPUT, Preprocessing.from_preset("cifar10"), num=20, seed=0)
    batches = list(calib.iter_batches(8))
    assert [b["input"].shape for b in batches] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    whole = calib.materialize()["input"]
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in batches]), whole)
    np.testing.assert_allclose(whole[0], load_image(calib.files[0], calib.prep))


def test_unreadable_files_are_skipped_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = _write_image_folder(tmp_path, 10)
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "cut.png").write_bytes(good[0].read_bytes()[:200])
    with caplog.at_level(logging.WARNING):
        calib = load_calibration(tmp_path, IMAGE_INPUT, Preprocessing.from_preset("cifar10"), num=10, seed=0)
    assert len(calib) == 10 and calib.skipped == 2 and calib.files == good
    assert "skipped 2 of 12 files that are not readable images" in caplog.text
    assert calib.materialize()["input"].shape == (10, 3, 32, 32)


def test_folder_errors_name_the_path(tmp_path: Path) -> None:
    prep = Preprocessing.from_preset("cifar10")
    with pytest.raises(CalibrationDataError, match="contains no image files") as error:
        load_calibration(tmp_path, IMAGE_INPUT, prep, num=4, seed=0)
    assert str(tmp_path) in str(error.value)
    (tmp_path / "a.jpg").write_bytes(b"junk")
    with pytest.raises(CalibrationDataError, match=f"none of the 1 image files in calibration folder {tmp_path}"):
        load_calibration(tmp_path, IMAGE_INPUT, prep, num=4, seed=0)
    missing = tmp_path / "nope"
    with pytest.raises(CalibrationDataError, match=f"calibration data {missing} does not exist"):
        load_calibration(missing, IMAGE_INPUT, prep, num=4, seed=0)
    with pytest.raises(CalibrationDataError, match="model expects 3x64x64 but the preprocessing gives 3x32x32"):
        load_calibration(CALIB_DIR, [("input", (None, 3, 64, 64))], prep, num=4, seed=0)


def test_folder_without_preprocessing_guesses_from_shape() -> None:
    calib = load_calibration(CALIB_DIR, model_inputs_of(onnx.load(str(RESNET20))), None, num=4, seed=0)
    assert calib.prep == Preprocessing.from_preset("cifar10")


def test_npz_arrays_by_input_name(tmp_path: Path) -> None:
    ids = np.arange(40, dtype=np.int32).reshape(10, 4)
    mask = np.ones((10, 4), dtype=bool)
    np.savez(tmp_path / "calib.npz", input_ids=ids, mask=mask)
    inputs = [("input_ids", (None, 4), np.dtype(np.int64)), ("mask", ("batch", 4), np.dtype(np.int64))]
    calib = load_calibration(tmp_path / "calib.npz", inputs, num=100, seed=0)
    assert len(calib) == 10 and calib.materialize()["input_ids"].dtype == np.int64
    np.testing.assert_array_equal(calib.materialize()["input_ids"], ids)
    subset = load_calibration(tmp_path / "calib.npz", inputs, num=3, seed=5)
    rows = subset.materialize()["input_ids"][:, 0] // 4
    assert len(subset) == 3 and list(rows) == sorted(rows)
    again = load_calibration({"input_ids": ids, "mask": mask}, inputs, num=3, seed=5)
    np.testing.assert_array_equal(again.materialize()["input_ids"], subset.materialize()["input_ids"])


def test_npz_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "calib.npz"
    np.savez(path, wrong=np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(CalibrationDataError, match=r"missing \['input'\], unexpected \['wrong'\]") as error:
        load_calibration(path, IMAGE_INPUT, num=4, seed=0)
    assert str(path) in str(error.value)
    np.savez(path, input=np.zeros((4, 3, 28, 28), np.float32))
    with pytest.raises(CalibrationDataError, match=r"\['input'\] has shape \[4, 3, 28, 28\].*3x32x32"):
        load_calibration(path, IMAGE_INPUT, num=4, seed=0)
    with pytest.raises(CalibrationDataError, match="cannot be cast to the input's int64"):
        load_calibration({"ids": np.zeros((2, 4), np.float32)}, [("ids", (None, 4), np.dtype(np.int64))], num=4, seed=0)
    with pytest.raises(CalibrationDataError, match="one calibration array given but the model has inputs a, b"):
        load_calibration(np.zeros((2, 4)), [("a", (None, 4)), ("b", (None, 4))], num=4, seed=0)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationDataError, match="cannot read calibration file .*bad.npz"):
        load_calibration(tmp_path / "bad.npz", IMAGE_INPUT, num=4, seed=0)


@pytest.mark.shared_data
def test_shared_imagenet_folder_streams(tmp_path: Path) -> None:
    source = shared_path("data", "imagenet_1k")
    files = find_images(source)[:6]
    for path in files:
        shutil.copy(path, tmp_path / path.name)
    calib = load_calibration(tmp_path, [("input", ("batch", 3, 224, 224))], Preprocessing.from_preset("imagenet"), 4, 0)
    batch = next(calib.iter_batches(4))["input"]
    assert batch.shape == (4, 3, 224, 224) and -2.2 < batch.min() < batch.max() < 2.7

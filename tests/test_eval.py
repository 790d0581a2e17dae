"""Top-1/top-5 evaluation through ONNX Runtime (aquant_onnx.eval)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
from conftest import REPO_ROOT, TESTS_DIR, shared_path

from aquant_onnx.data import Preprocessing
from aquant_onnx.errors import CalibrationDataError, RuntimeLibraryError
from aquant_onnx.eval import evaluate, read_class_list

RESNET20 = REPO_ROOT / "models" / "resnet20_cifar10.onnx"
CIFAR_TEST = TESTS_DIR / "data" / "cifar10_test"
CIFAR_CLASSES = TESTS_DIR / "data" / "cifar10_classes.tsv"


def _copy_classes(target: Path, names: list[str], per_class: int) -> Path:
    for name in names:
        (target / name).mkdir(parents=True)
        for path in sorted((CIFAR_TEST / name).iterdir())[:per_class]:
            shutil.copy(path, target / name / path.name)
    return target


def test_resnet20_on_shipped_cifar10_slice() -> None:
    calls: list[tuple[int, int]] = []
    result = evaluate(RESNET20, CIFAR_TEST, progress=lambda done, total: calls.append((done, total)))
    # Measured 82.6 % top-1, 98.6 % top-5 on these 500 images (81.3 % on the shared 1,000).
    assert result.count == 500 and result.skipped == 0
    assert result.top1 == pytest.approx(82.6, abs=0.5)
    assert result.top5 == pytest.approx(98.6, abs=0.5)
    assert result.provider == "CPUExecutionProvider"
    assert calls[-1] == (500, 500) and len(calls) == 16  # batches of 32


def test_limit_and_explicit_class_list() -> None:
    found = evaluate(RESNET20, CIFAR_TEST, limit=50)
    explicit = evaluate(RESNET20, CIFAR_TEST, classes=CIFAR_CLASSES, limit=50, batch_size=7)
    assert found.count == explicit.count == 50
    assert (found.top1, found.top5) == (explicit.top1, explicit.top5)
    assert 60.0 <= found.top1 <= 100.0


def test_fixed_batch_model_runs_one_image_at_a_time(tmp_path: Path) -> None:
    model = onnx.load(str(RESNET20))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "resnet20_batch1.onnx"
    onnx.save(model, str(fixed))
    prep = Preprocessing.from_preset("cifar10")
    one = evaluate(fixed, CIFAR_TEST, classes=CIFAR_CLASSES, limit=40, prep=prep, batch_size=32)
    dynamic = evaluate(RESNET20, CIFAR_TEST, classes=CIFAR_CLASSES, limit=40, prep=prep)
    assert one.count == 40 and (one.top1, one.top5) == (dynamic.top1, dynamic.top5)


def test_unreadable_images_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _copy_classes(tmp_path / "data", ["airplane", "cat"], per_class=5)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with caplog.at_level(logging.WARNING):
        result = evaluate(RESNET20, data, classes=CIFAR_CLASSES)
    assert (result.count, result.skipped) == (10, 1)
    assert "skipped 1 of 11 files" in caplog.text


def test_sorted_folder_fallback_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = _copy_classes(tmp_path / "data", ["airplane", "automobile"], per_class=4)
    with caplog.at_level(logging.WARNING):
        result = evaluate(RESNET20, data)
    assert result.count == 8
    assert "no class list" in caplog.text and "numbering its 2 folders" in caplog.text


def test_folders_missing_from_class_list_are_named(tmp_path: Path) -> None:
    data = _copy_classes(tmp_path / "data", ["cat"], per_class=2)
    (data / "cat").rename(data / "kitten")
    with pytest.raises(CalibrationDataError, match=f"class folders kitten of {data} are not names"):
        evaluate(RESNET20, data, classes=CIFAR_CLASSES)
    with pytest.raises(CalibrationDataError, match="does not exist"):
        evaluate(RESNET20, tmp_path / "missing")


def test_class_list_maps_column_two_and_unique_column_three(tmp_path: Path) -> None:
    path = tmp_path / "classes.tsv"
    path.write_text("0\tn01\tcrane\n1\tn02\tgoldfish\n2\tn03\tcrane\n")
    assert read_class_list(path) == {"n01": 0, "n02": 1, "n03": 2, "goldfish": 1}
    assert read_class_list(CIFAR_CLASSES)["truck"] == 9


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="this ORT build has CUDA")
def test_cuda_request_without_cuda_raises() -> None:
    with pytest.raises(RuntimeLibraryError, match="CUDA requested but ONNX Runtime fell back to CPU"):
        evaluate(RESNET20, CIFAR_TEST, limit=2, provider="cuda")


@pytest.mark.shared_data
def test_mobilenet_v2_on_shared_imagenet_val() -> None:
    model = shared_path("models", "mobilenet_v2_1.0_224.onnx")
    data = shared_path("data", "imagenet_val")
    result = evaluate(model, data, classes=shared_path("data", "imagenet_classes.tsv"), limit=100)
    # Measured 75.0 % on this stride of 100 (README: 79.9 % on all 1,000); 629 folders map into 1000 classes.
    assert result.count == 100 and result.top1 >= 70.0 and result.top5 >= 88.0

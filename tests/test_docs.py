"""The docs/ pages stay true: the operator page's examples run against the shipped kernel, the
troubleshooting page lists every error message the code raises, and relative links resolve."""

from __future__ import annotations

import doctest
import importlib.util
import re
import sys

import pytest
from conftest import REPO_ROOT

from aquant_onnx.errors import RuntimeLibraryError

DOCS = REPO_ROOT / "docs"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


list_errors = _load_script("list_errors")


def test_operator_page_examples_run() -> None:
    from aquant_onnx.runtime import library_path

    try:
        library_path()
    except RuntimeLibraryError as error:
        pytest.skip(f"needs the BorderRound op library: {error}")
    result = doctest.testfile(str(DOCS / "operator.md"), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 20  # the examples were found, not silently skipped
    assert result.failed == 0


def test_troubleshooting_page_documents_every_raised_error() -> None:
    classes = list_errors.error_classes()
    messages = list_errors.collect_messages(classes)
    page = list_errors.PAGE.read_text()
    expected = list_errors.render(messages, classes, list_errors.written_explanations(page))
    assert list_errors.problems(page, expected) == [], "run python docs/scripts/list_errors.py and fill in the TODOs"
    assert len(messages) > 50 and {m.error_class for m in messages} == set(classes) - {"AquantError"}


def test_troubleshooting_check_catches_new_and_stale_messages() -> None:
    classes = list_errors.error_classes()
    old = list_errors.ErrorMessage("ConfigError", "--old must be {x}.", {"aquant_onnx/config.py"})
    new = list_errors.ErrorMessage("ExportError", "cannot write {path}.", {"aquant_onnx/export/model.py"})
    documented = {list_errors.ENTRY_PREFIX + "`--old must be {x}.`": "**Cause:** a.\n\n**Fix:** b."}
    page = list_errors.render([old], classes, documented)
    assert list_errors.problems(page, page) == []
    expected = list_errors.render([new], classes, list_errors.written_explanations(page))
    assert list_errors.problems(page, expected) == [
        "not documented: `cannot write {path}.`",
        "no longer raised: `--old must be {x}.`",
        "TODO left: `cannot write {path}.`",
    ]


@pytest.mark.parametrize("page", ["README.md", *[f"docs/{p.name}" for p in sorted(DOCS.glob("*.md"))]])
def test_relative_links_resolve(page: str) -> None:
    path = REPO_ROOT / page
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    missing = [t for t in local if not (path.parent / t).exists()]
    assert missing == [], f"{page} links to missing files"

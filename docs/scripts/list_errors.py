"""Keep docs/troubleshooting.md in step with the errors aquant-onnx raises.

Every call of an ``aquant_onnx.errors`` class in ``aquant_onnx/`` and ``cli/`` is found with
``ast``; its message (a string or f-string; placeholders are shown as ``{expression}``) becomes
one entry of the page, under the error class, with the modules that raise it. The cause/fix
text written under an entry is kept when the page is regenerated; a new message gets a TODO.

    python docs/scripts/list_errors.py            # rewrite docs/troubleshooting.md
    python docs/scripts/list_errors.py --check    # exit 1 if the page is stale or has a TODO

tests/test_docs.py runs ``--check``, so a new or reworded error without documentation fails CI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGE = REPO_ROOT / "docs" / "troubleshooting.md"
SOURCE_DIRS = ("aquant_onnx", "cli")
ERRORS_MODULE = REPO_ROOT / "aquant_onnx" / "errors.py"
TODO = "**Cause:** TODO\n\n**Fix:** TODO"
ENTRY_PREFIX = "### "

INTRO = """\
# Troubleshooting

Every problem aquant-onnx can diagnose ends the command with one line on stderr,
`error: <message>`, and exit code 1 (2 for a command-line usage error, 130 for Ctrl-C).
`aquant-onnx --debug ...` shows the full traceback instead; a traceback *without* `--debug`
is a bug — please report it with the command and model. In Python the same problems raise
the exception class named below (all subclasses of `aquant_onnx.AquantError`).

Below is every message the tool can emit, grouped by exception class. `{...}` stands for the
part filled in at run time (a node name, a path, a value). The list is generated from the
source by `docs/scripts/list_errors.py`; the cause and fix under each message are written
by hand, and CI fails when a message is missing here.

Errors of the `com.aquant::BorderRound` kernels themselves (a hand-written or edited model
with bad attributes or inputs) come from ONNX Runtime as `... com.aquant::BorderRound: <what>`;
see [operator.md](operator.md) for the contract they check.
"""


@dataclass
class ErrorMessage:
    error_class: str
    template: str
    modules: set[str] = field(default_factory=set)


def _module_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = <str or int literal>``, so messages show e.g. the real build hint."""
    constants = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
            node.target if isinstance(node, ast.AnnAssign) else None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, (str, int)):
            constants[target.id] = str(value.value)
    return constants


def _placeholder(expression: ast.expr, constants: dict[str, str]) -> str:
    if isinstance(expression, ast.Name) and expression.id in constants:
        return constants[expression.id]
    return "{" + ast.unparse(expression) + "}"


def _template(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The message of a str literal, f-string or ``+`` of them; ``{expr}`` for placeholders."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            part.value if isinstance(part, ast.Constant) else _placeholder(part.value, constants)
            for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _template(node.left, constants), _template(node.right, constants)
        return None if left is None or right is None else left + right
    return None


def error_classes() -> dict[str, str]:
    """Class name → docstring of every exception defined in aquant_onnx/errors.py, in file order."""
    tree = ast.parse(ERRORS_MODULE.read_text())
    return {node.name: ast.get_docstring(node) or "" for node in tree.body if isinstance(node, ast.ClassDef)}


def collect_messages(classes: dict[str, str]) -> list[ErrorMessage]:
    """One entry per (class, message), sorted by class (errors.py order), module, message.

    Raises:
        ValueError: an error class is called with a message that is not a (f-)string literal;
            give it a literal message so it can be documented.
    """
    found: dict[tuple[str, str], ErrorMessage] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            module = path.relative_to(REPO_ROOT).as_posix()
            tree = ast.parse(path.read_text(), filename=str(path))
            constants = _module_constants(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
                if name not in classes:
                    continue
                template = _template(node.args[0], constants) if node.args else None
                if template is None:
                    raise ValueError(f"{module}:{node.lineno}: {name}(...) needs a literal (f-)string message")
                entry = found.setdefault((name, template), ErrorMessage(name, template))
                entry.modules.add(module)
    order = list(classes)
    return sorted(found.values(), key=lambda e: (order.index(e.error_class), sorted(e.modules), e.template))


def _code_span(text: str) -> str:
    text = text.replace("\n", "\\n")
    ticks = "``" if "`" in text else "`"
    return f"{ticks} {text} {ticks}" if ticks == "``" else f"`{text}`"


def _heading(message: ErrorMessage) -> str:
    return ENTRY_PREFIX + _code_span(message.template)


def written_explanations(page: str) -> dict[str, str]:
    """Heading line → the hand-written text under it (up to the next heading) of an existing page."""
    explanations: dict[str, str] = {}
    heading, lines = None, []
    for line in page.splitlines() + ["## end"]:
        if line.startswith("#"):
            if heading is not None:
                # Drop the generated "raised in" line; keep what the author wrote.
                body = [ln for ln in lines if not ln.startswith("<sub>")]
                explanations[heading] = "\n".join(body).strip()
            heading, lines = (line, []) if line.startswith(ENTRY_PREFIX) else (None, [])
        elif heading is not None:
            lines.append(line)
    return explanations


def render(messages: list[ErrorMessage], classes: dict[str, str], explanations: dict[str, str]) -> str:
    parts = [INTRO]
    current = None
    for message in messages:
        if message.error_class != current:
            current = message.error_class
            parts.append(f"## {current}\n\n{classes[current]}\n")
        modules = ", ".join(f"`{m}`" for m in sorted(message.modules))
        body = explanations.get(_heading(message)) or TODO
        parts.append(f"{_heading(message)}\n<sub>{message.error_class} · {modules}</sub>\n\n{body}\n")
    return "\n".join(parts)


def problems(page: str, expected: str) -> list[str]:
    """What is wrong with the page on disk: undocumented, stale or TODO entries."""
    have, want = set(written_explanations(page)), set(written_explanations(expected))
    issues = [f"not documented: {h[len(ENTRY_PREFIX):]}" for h in sorted(want - have)]
    issues += [f"no longer raised: {h[len(ENTRY_PREFIX):]}" for h in sorted(have - want)]
    issues += [f"TODO left: {h[len(ENTRY_PREFIX):]}" for h, body in written_explanations(expected).items()
               if "TODO" in body]
    if not issues and page != expected:
        issues.append("layout differs from the generated page (modules or order changed)")
    return issues


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="Only check docs/troubleshooting.md; exit 1 if stale.")
    args = parser.parse_args()
    classes = error_classes()
    messages = collect_messages(classes)
    page = PAGE.read_text() if PAGE.exists() else ""
    expected = render(messages, classes, written_explanations(page))
    if args.check:
        issues = problems(page, expected)
        for issue in issues:
            print(f"docs/troubleshooting.md: {issue}", file=sys.stderr)
        if issues:
            print("run python docs/scripts/list_errors.py and write the cause/fix of each TODO", file=sys.stderr)
        return 1 if issues else 0
    PAGE.write_text(expected)
    todo = sum("TODO" in body for body in written_explanations(expected).values())
    print(f"wrote {PAGE.relative_to(REPO_ROOT)}: {len(messages)} messages, {todo} without cause/fix")
    return 0


if __name__ == "__main__":
    sys.exit(main())

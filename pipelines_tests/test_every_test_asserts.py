"""CI check: every test function can fail.

A test passes when nothing raises, so one without an assertion proves only that its code runs.
Each ``test_*`` function in ``pipelines_tests`` must contain an ``assert``, a ``pytest.raises`` /
``pytest.fail``, or a call to a helper (defined in this folder) that does, directly or through
other helpers.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
EXPECTING = {"raises", "fail", "warns"}  # pytest.raises(...), pytest.fail(...), pytest.warns(...)


def _called_names(node: ast.AST) -> set[str]:
    names = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def _asserts_directly(node: ast.AST) -> bool:
    if any(isinstance(n, ast.Assert) for n in ast.walk(node)):
        return True
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in EXPECTING
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "pytest"
        for n in ast.walk(node)
    )


def _functions(folder: Path) -> dict[tuple[str, str], ast.FunctionDef | ast.AsyncFunctionDef]:
    found = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found[(path.relative_to(folder).as_posix(), node.name)] = node
    return found


def find_tests_without_assertion(folder: Path = TESTS) -> list[str]:
    functions = _functions(folder)
    asserting = {name for (_, name), node in functions.items() if _asserts_directly(node)}
    changed = True
    while changed:  # helpers that call asserting helpers assert too
        changed = False
        for (_, name), node in functions.items():
            if name not in asserting and _called_names(node) & asserting:
                asserting.add(name)
                changed = True
    return sorted(
        f"{module}::{name}"
        for (module, name), node in functions.items()
        if name.startswith("test_") and module.startswith("test_")
        and not (_asserts_directly(node) or _called_names(node) & asserting)
    )  # fmt: skip


def test_every_test_function_asserts_something() -> None:
    assert find_tests_without_assertion() == []


def test_the_check_catches_a_test_without_assertion(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def check(x):\n    assert x\n\ndef outer(x):\n    check(x)\n")
    (tmp_path / "test_a.py").write_text(
        "def test_vacuous():\n    run_it()\n\n"
        "def test_raises():\n    with pytest.raises(ValueError):\n        int('x')\n\n"
        "def test_through_helpers():\n    outer(1)\n\n"
        "def test_plain():\n    assert 1\n"
    )
    assert find_tests_without_assertion(tmp_path) == ["test_a.py::test_vacuous"]

"""The layers of docs/architecture.md: each folder of ``pipelines/`` imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipelines"
BELOW: dict[str, set[str]] = {
    "sqlmesh_bridge": set(),
    "platform": {"sqlmesh_bridge"},
    "quality": {"platform", "sqlmesh_bridge"},
    "automation": {"platform", "sqlmesh_bridge"},
    "governance": {"platform", "sqlmesh_bridge"},
    "api": {"platform", "sqlmesh_bridge", "governance", "quality"},
    "component": {"automation", "governance", "platform", "quality", "sqlmesh_bridge"},
    "shop": {"component", "automation", "governance", "platform", "quality", "sqlmesh_bridge"},
}
# known and documented (docs/architecture.md, "Not yet layered"): the shop's source contracts
# declare which raw columns are PII, and governance reads them from there
EXCEPTIONS = {
    ("governance", "pipelines.shop.sources.contracts"),
    ("governance", "pipelines.shop.report_assets"),
}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("pipelines.")}


def test_every_layer_imports_only_the_layers_below() -> None:
    wrong = []
    for layer, allowed in BELOW.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            if "sqlmesh_project" in path.parts:
                continue
            for module in imported_modules(path):
                target = module.split(".")[1]
                if target != layer and target not in allowed and (layer, module) not in EXCEPTIONS:
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_platform_defs_do_not_need_the_shop() -> None:
    modules = {m for p in (PACKAGE / "defs" / "platform").rglob("*.py") for m in imported_modules(p)}
    assert modules and not any(m.startswith("pipelines.shop") for m in modules)


def test_no_loose_modules_at_the_top() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "definitions.py"], loose

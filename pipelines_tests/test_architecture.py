"""The layers of docs/architecture.md: the integration package (``dagster_sqlmesh_bridge``) and
the platform (``pipelines``) are two boxes with the arrow one way; inside the platform each
folder imports only the layers below it. Imports are read from the source (absolute, relative,
``from pipelines import x``, ``import pipelines``, and ``importlib.import_module("...")``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pipelines"
INTEGRATION = ROOT / "packages" / "dagster-sqlmesh-bridge" / "src" / "dagster_sqlmesh_bridge"
BELOW: dict[str, set[str]] = {
    "platform": set(),
    "automation": {"platform"},
    "governance": {"platform"},
    "api": {"platform", "governance"},
    "component": {"automation", "governance", "platform"},
    "shop": {"component", "automation", "governance", "platform"},
}
# known and documented (docs/architecture.md, "Not yet layered"): the shop's source contracts
# declare which raw columns are PII, and governance reads them from there
EXCEPTIONS = {
    ("governance", "pipelines.shop.sources.contracts"),
    ("governance", "pipelines.shop.report_assets"),
}


def _package_of(path: Path) -> tuple[str, Path]:
    """The top-level package a source file belongs to and that package's folder."""
    for top in (INTEGRATION, PACKAGE):
        if path.is_relative_to(top):
            return top.name, top
    raise ValueError(path)


def imported_modules(path: Path) -> set[str]:
    """Every module the file imports, relative imports made absolute, ``from pkg import name``
    counted as ``pkg.name`` (it may be a module) and as ``pkg``."""
    package, top = _package_of(path)
    here = [package, *path.relative_to(top).parent.parts]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join([*parent, *([base] if base else [])])
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.add(node.args[0].value)
    return out


def test_the_integration_never_imports_the_platform() -> None:
    """The arrow goes one way: the package works in any Dagster project, without ``pipelines``."""
    wrong = [
        f"{path.relative_to(INTEGRATION)} imports {module}"
        for path in INTEGRATION.rglob("*.py")
        for module in imported_modules(path)
        if module == "pipelines" or module.startswith("pipelines.")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_integration_reads_no_platform_setting() -> None:
    """No ``PIPELINES_*`` variable is read (or named) by the package."""
    files = INTEGRATION.rglob("*.py")
    named = [str(path.relative_to(INTEGRATION)) for path in files if "PIPELINES_" in path.read_text()]
    assert not named, named


def _excepted(layer: str, module: str) -> bool:
    return any(layer == lay and (module == m or module.startswith(f"{m}.")) for lay, m in EXCEPTIONS)


def test_every_platform_layer_imports_only_the_layers_below() -> None:
    wrong = []
    for layer, allowed in BELOW.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            if "sqlmesh_project" in path.parts:
                continue
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] != "pipelines" or len(parts) < 2 or parts[1] in ("", layer):
                    continue
                layered = parts[1] in BELOW or parts[1] in ("defs", "ops", "definitions")
                if layered and parts[1] not in allowed and not _excepted(layer, module):
                    wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_relative_and_package_imports() -> None:
    """The rule is not fooled by the spellings a reviewer could miss."""
    probe = INTEGRATION / "component" / "_probe_for_test.py"
    probe.write_text(
        "from .. import hooks\nfrom ..quality import rules\nfrom pipelines import platform\n"
        "import pipelines\nimport importlib\nimportlib.import_module('pipelines.shop')\n"
    )
    try:
        found = imported_modules(probe)
    finally:
        probe.unlink()
    assert {
        "dagster_sqlmesh_bridge.hooks",
        "dagster_sqlmesh_bridge.quality.rules",
        "pipelines.platform",
        "pipelines",
        "pipelines.shop",
    } <= found


def test_the_platform_defs_do_not_need_the_shop() -> None:
    modules = {m for p in (PACKAGE / "defs" / "platform").rglob("*.py") for m in imported_modules(p)}
    assert modules and not any(m.startswith("pipelines.shop") for m in modules)


def test_no_loose_modules_at_the_top() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "definitions.py"], loose

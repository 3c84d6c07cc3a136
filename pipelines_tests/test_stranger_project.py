"""The integration package, installed as a stranger installs it, in a project as ``create-dagster``
lays it out: its own venv (the lowest and the highest Python of this machine, and once with the
lowest versions the package's ranges allow), ``uv add`` of the package's wheel, ``dg scaffold
defs`` of one SQLMesh project, a second declared with only ``project:``, ``dg check defs``, and
``dg launch`` of a partition range and of an unpartitioned model. Everything runs in subprocesses
of the team's venv: this test process never imports SQLMesh or the package for them.

Slow (a venv per case, minutes): ``.ci/run`` runs it after the default suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import zipfile
from functools import cache
from pathlib import Path

import pytest

from pipelines_tests.sqlmesh_projects import write_init_style_project

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "packages" / "dagster-sqlmesh-bridge"
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
SUPPORTED = [(3, minor) for minor in range(10, 15)]  # the package's requires-python
DAYS = ("2026-01-01", "2026-01-03")
# what a team must not get with the integration (the platform's web, plotting, cloud and k8s stack)
NOT_LEAN = {
    "plotly",
    "fastapi",
    "kubernetes",
    "dagster-k8s",
    "dagster-aws",
    "dagster-postgres",
    "boto3",
    "trino",
    "pyathena",
    "pipelines",
    "psycopg2-binary",
}

CHECK = """\
import json, sys
from pathlib import Path

import dagster as dg
import duckdb

root = Path(sys.argv[1])
from team.definitions import defs as load

defs = load()
out = {"resources": sorted((defs.resources or {}).keys()), "partitions": {}, "unpartitioned": {}}
with dg.DagsterInstance.get() as instance:
    for key in ("sushi/demo/orders", "demo/waiter_names"):
        records = instance.fetch_materializations(dg.AssetKey.from_user_string(key), limit=100).records
        out["partitions" if "orders" in key else "unpartitioned"] = {
            str(r.partition_key): r.asset_materialization.metadata["dagster/row_count"].value for r in records
        }
with duckdb.connect(str(root / "sqlmesh_sushi" / "db.db"), read_only=True) as con:
    out["rows"] = {d: n for d, n in con.execute(
        "SELECT ds::VARCHAR, count(*) FROM demo.orders GROUP BY 1 ORDER BY 1").fetchall()}
with duckdb.connect(str(root / "sqlmesh_more" / "db.db"), read_only=True) as con:
    out["waiters"] = con.execute("SELECT count(*) FROM demo.waiter_names").fetchone()[0]
print("RESULT " + json.dumps(out))
"""


@cache
def interpreters() -> dict[str, Path]:
    """The lowest and the highest supported Python that pyenv has here."""
    found = {}
    for version in sorted(PYENV_VERSIONS.glob("3.*")) if PYENV_VERSIONS.is_dir() else []:
        match = re.fullmatch(r"3\.(\d+)\.\d+", version.name)
        binary = version / "bin" / f"python3.{match.group(1)}" if match else None
        if match and (3, int(match.group(1))) in SUPPORTED and binary and binary.is_file():
            found[(3, int(match.group(1)))] = binary
    if not found:
        return {}
    ends = sorted(found)
    return {f"py{v[0]}.{v[1]}": found[v] for v in (ends[0], ends[-1])}


def _cases() -> list[tuple[str, str, bool]]:
    pythons = interpreters()
    if not pythons:
        return [
            pytest.param("", "", False, marks=pytest.mark.skip(reason=f"no pyenv Python in {PYENV_VERSIONS}"))
        ]
    lowest = next(iter(pythons))
    return [(name, name, False) for name in pythons] + [(f"{lowest}-lowest", lowest, True)]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        ["uv", "build", "--package", "dagster-sqlmesh-bridge", "--wheel", "--out-dir", str(out)], REPO
    )
    [path] = out.glob("dagster_sqlmesh_bridge-*.whl")
    assert built.returncode == 0
    return path


def _env(tmp: Path, python: Path, lowest: bool) -> dict[str, str]:
    dropped = ("DAGSTER_", "PIPELINES_", "SQLMESH_", "PYTHONPATH", "VIRTUAL_ENV", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update({"UV_PYTHON": str(python), "DAGSTER_HOME": str(tmp / "dagster_home"), "NO_COLOR": "1"})
    if lowest:
        env["UV_RESOLUTION"] = "lowest-direct"
    (tmp / "dagster_home").mkdir(exist_ok=True)
    (tmp / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900):
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"
    return done


def _installed(root: Path, env: dict[str, str]) -> dict[str, str]:
    listed = _run(["uv", "pip", "list", "--format", "json", "--python", ".venv/bin/python"], root, env)
    return {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}


def _ranges(wheel: Path) -> list[str]:
    """The package's own requirements (its ranges), from the wheel's metadata."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(("case", "python_name", "lowest"), _cases())
def test_the_package_works_verbatim_in_a_create_dagster_project(
    tmp_path: Path, wheel: Path, case: str, python_name: str, lowest: bool
) -> None:
    from importlib.metadata import version

    python = interpreters()[python_name]
    env = _env(tmp_path, python, lowest)
    _run(
        [
            "uvx",
            "--from",
            f"create-dagster=={version('dagster')}",
            "create-dagster",
            "project",
            "--no-uv-sync",
            "team",
        ],
        tmp_path,
        env,
    )
    root = tmp_path / "team"
    if lowest:  # a team whose own Dagster pin is a range: the lowest the package allows is taken
        pyproject = root / "pyproject.toml"
        pyproject.write_text(re.sub(r'"dagster==[^"]+"', '"dagster>=1.13,<1.14"', pyproject.read_text()))
        _run(["uv", "add", "--dev", "dagster-dg-cli>=1.13", "dagster-webserver>=1.13"], root, env)
    _run(["uv", "sync"], root, env)
    before = _installed(root, env)

    _run(["uv", "add", str(wheel), *(_ranges(wheel) if lowest else [])], root, env)
    after = _installed(root, env)
    added = sorted(set(after) - set(before))
    print(f"{case}: `uv add` of the package added {len(added)} packages: {', '.join(added)}")
    assert "dagster-sqlmesh-bridge" in added and not NOT_LEAN & set(added), added
    if lowest:
        assert after["dagster"] == "1.13.0" and after["sqlmesh"] == "0.236.4", after
        assert after["duckdb"].startswith("1.4."), after["duckdb"]

    write_init_style_project(root / "sqlmesh_sushi")
    write_init_style_project(root / "sqlmesh_more")
    dg = ["uv", "run", "dg"]
    _run(
        [
            *dg,
            "scaffold",
            "defs",
            "dagster_sqlmesh_bridge.SQLMeshProjectComponent",
            "sushi",
            "--project-path",
            "sqlmesh_sushi",
        ],
        root,
        env,
    )
    more = root / "src" / "team" / "defs" / "more" / "defs.yaml"
    more.parent.mkdir(parents=True)
    more.write_text(  # only `project:`: name, state key and prefix come from the folder
        "type: dagster_sqlmesh_bridge.SQLMeshProjectComponent\n"
        "attributes:\n  project: ../../../../sqlmesh_more\n"
    )

    checked = _run([*dg, "check", "defs"], root, env)
    assert "DuplicateDefsStateKey" not in checked.stdout + checked.stderr
    _run([*dg, "launch", "--assets", "sushi/demo/orders", "--partition-range", "...".join(DAYS)], root, env)
    _run([*dg, "launch", "--assets", "demo/waiter_names"], root, env)

    done = _run(["uv", "run", "python", "-c", CHECK, str(root)], root, env)
    [line] = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert result["rows"] == dict.fromkeys(days, 2)  # two events a day, each day once
    assert result["partitions"] == dict.fromkeys(days, 2)  # Dagster's per-partition counts match
    assert result["unpartitioned"] == {"None": 3} and result["waiters"] == 3
    assert result["resources"] == ["sqlmesh_more", "sqlmesh_sushi"]  # no platform resource

"""The Evidence project and its publishing: valid files, page SQL right on a real warehouse,
an atomic flip of the published site (local lake and S3), and the asset only when enabled."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from pipelines.platform.lake import Lake
from pipelines.platform.resources import LakeResource
from pipelines.platform.settings import Settings
from pipelines.platform.warehouse import connect
from pipelines.shop import report_assets as reporting
from pipelines.shop.reporting import evidence
from pipelines_tests.services import S3Env

PROJECT = evidence.PROJECT_DIR
# @evidence-dev/evidence 40.1.8's peerDependencies (npm view), which its template lists too.
EVIDENCE_PEERS = {
    "@sveltejs/vite-plugin-svelte": "3.1.2",
    "git-remote-origin-url": "4.0.0",
    "svelte": "4.2.19",
    "svelte-preprocess": "5.1.3",
    "svelte2tsx": "0.7.4",
    "tailwindcss": "3.4.18",
    "typescript": "5.4.2",
    "unist-util-visit": "4.1.2",
    "vite": "5.4.21",
}


def test_project_files_are_valid_and_pinned() -> None:
    package = json.loads((PROJECT / "package.json").read_text())
    deps = package["dependencies"]
    assert deps["@evidence-dev/evidence"] == "40.1.8"
    assert deps["@evidence-dev/core-components"] == "5.4.2"
    assert deps["@evidence-dev/duckdb"] == "2.0.1"
    assert EVIDENCE_PEERS.items() <= deps.items()
    assert all(v[0].isdigit() for v in deps.values()), "exact versions only"
    assert {"sources", "build"} <= set(package["scripts"])
    lock = json.loads((PROJECT / "package-lock.json").read_text())  # what `npm ci` installs
    assert lock["packages"][""]["dependencies"] == deps
    for name, version in deps.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    config = yaml.safe_load((PROJECT / "evidence.config.yaml").read_text())
    assert "@evidence-dev/duckdb" in config["plugins"]["datasources"]
    assert "@evidence-dev/core-components" in config["plugins"]["components"]
    assert json.loads((PROJECT / "evidence.settings.json").read_text())["send_anonymous_usage_stats"] == "no"
    connection = yaml.safe_load((PROJECT / "sources" / "marts" / "connection.yaml").read_text())
    assert connection["type"] == "duckdb" and connection["name"] == "marts"
    # relative: Evidence joins it to the source folder, where build_site exports the marts
    assert connection["options"]["filename"] == evidence.EXPORT_FILE
    sources = {p.stem: p.read_text().strip() for p in (PROJECT / "sources" / "marts").glob("*.sql")}
    assert sources == {name: f"select * from marts.{name}" for name in evidence.MARTS_READ}


def test_pages_have_the_kpi_category_and_funnel_queries() -> None:
    queries = evidence.page_queries()
    assert set(queries) == {"index", "category", "funnel"}
    assert {"kpis", "daily_revenue"} <= set(queries["index"])
    assert queries["category"] and queries["funnel"]
    # pages read only the marts the asset depends on (so it reruns when they change)
    for page in queries.values():
        for sql in page.values():
            named = {t for t in evidence.MARTS_READ if f"marts.{t}" in sql}
            assert named, sql


def test_page_sql_runs_on_the_exported_marts(tmp_path: Path, built_warehouse: Settings) -> None:
    with connect(built_warehouse, read_only=True) as con:
        target = evidence.export_marts(con, tmp_path / evidence.EXPORT_FILE)
        truth = con.execute(
            "SELECT order_date, orders, revenue_usd FROM marts.daily_revenue ORDER BY order_date"
        ).fetchall()
    assert len(truth) == 3
    with duckdb.connect(str(target), read_only=True) as exported:
        for page, queries in evidence.page_queries().items():
            for name, sql in queries.items():
                assert exported.execute(sql).fetchall(), (page, name)
        daily = exported.execute(evidence.page_queries()["index"]["daily_revenue"]).fetchall()
        kpis = exported.execute(evidence.page_queries()["index"]["kpis"]).fetchone()
    assert [(d, o, r) for d, o, r, *_ in daily] == truth
    assert kpis[0] == sum(o for _, o, _ in truth)
    assert kpis[1] == pytest.approx(sum(float(r) for _, _, r in truth))


def fake_site(root: Path, marker: str) -> Path:
    (root / "category").mkdir(parents=True)
    (root / "_app" / "immutable").mkdir(parents=True)
    (root / "index.html").write_text(f"<html>{marker} index</html>")
    (root / "category" / "index.html").write_text(f"<html>{marker} category</html>")
    for i in range(5):
        (root / "_app" / "immutable" / f"chunk{i}.js").write_text(f"// {marker} {i}")
    return root


class WatchedLake(Lake):
    """A lake that, after every write, reads the site the way a reader would and checks it is
    one complete version (the fault this guards against: a reader seeing half a site)."""

    expected: dict[str, str]
    seen: list[str]

    def _check(self) -> None:
        if not self.exists(evidence.POINTER_KEY):
            self.seen.append("none")
            return
        pointer = json.loads(self.get_bytes(evidence.POINTER_KEY))
        marker = self.expected[pointer["version"]]
        for rel in ("index.html", "category/index.html", "_app/immutable/chunk4.js"):
            assert marker in self.get_bytes(f"{pointer['prefix']}/{rel}").decode(), rel
        redirect = self.get_bytes(evidence.INDEX_KEY).decode() if self.exists(evidence.INDEX_KEY) else ""
        assert "versions/" in redirect or not redirect
        target = redirect.split("url=")[1].split('"')[0] if redirect else None
        if target:
            assert self.exists(f"{evidence.SITE_PREFIX}/{target}")
        self.seen.append(pointer["version"])

    def put_file(self, local_path: Path, key: str) -> None:
        super().put_file(local_path, key)
        self._check()

    def put_bytes(self, data: bytes, key: str) -> None:
        super().put_bytes(data, key)
        self._check()


def publish_twice_and_prune(lake_uri: str, tmp_path: Path) -> WatchedLake:
    lake = WatchedLake(lake_uri)
    lake.expected, lake.seen = {}, []
    versions = [evidence.new_version(f"run{i}") + str(i) for i in range(4)]
    for i, version in enumerate(versions):
        lake.expected[version] = f"v{i}"
        published = evidence.publish_site(lake, fake_site(tmp_path / f"site{i}", f"v{i}"), version)
        assert published.files == 7
        assert evidence.current_version(lake) == version
    # readers only ever saw nothing, or a complete v0, v1, v2, v3, in that order
    order = [v for i, v in enumerate(lake.seen) if i == 0 or lake.seen[i - 1] != v]
    assert order == ["none", *versions]
    kept = {o.key.split("/")[3] for o in lake.list(f"{evidence.SITE_PREFIX}/versions/")}
    assert kept == set(versions[1:])
    index = lake.get_bytes(evidence.INDEX_KEY).decode()
    assert f"versions/{versions[-1]}/index.html" in index
    return lake


def test_publish_is_atomic_on_the_local_lake(tmp_path: Path) -> None:
    publish_twice_and_prune(str(tmp_path / "lake"), tmp_path)


def test_publish_is_atomic_on_s3(tmp_path: Path, s3_env: S3Env) -> None:
    lake = publish_twice_and_prune(s3_env.uri("lake"), tmp_path)
    assert lake.is_s3


def test_publish_refuses_a_folder_that_is_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no index.html"):
        evidence.publish_site(Lake(str(tmp_path / "lake")), tmp_path, evidence.new_version("x"))
    with pytest.raises(ValueError, match="invalid site version"):
        evidence.publish_site(Lake(str(tmp_path / "lake")), fake_site(tmp_path / "s", "v"), "../x")


def test_asset_only_when_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINES_EVIDENCE", raising=False)
    keys = {k for a in reporting.build_defs().assets or [] for k in a.keys}  # type: ignore[union-attr]
    assert keys == {reporting.REPORT_ASSET_KEY}
    monkeypatch.setenv("PIPELINES_EVIDENCE", "1")
    (site,) = [a for a in reporting.reporting_assets() if reporting.EVIDENCE_ASSET_KEY in a.keys]
    deps = {d.asset_key for d in site.specs_by_key[reporting.EVIDENCE_ASSET_KEY].deps}
    assert deps == {dg.AssetKey(["marts", t]) for t in evidence.MARTS_READ}
    assert site.automation_conditions_by_key[reporting.EVIDENCE_ASSET_KEY] is not None


def test_asset_without_node_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_warehouse: Settings
) -> None:
    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(built_warehouse.data_dir))
    monkeypatch.setenv("PIPELINES_LAKE_URI", built_warehouse.lake_uri)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    result = dg.materialize(
        [reporting.evidence_site],
        resources={"lake": LakeResource(uri=str(tmp_path / "lake"))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "npm not found: install Node.js 20+" in str(failure.event_specific_data)
    assert not (tmp_path / "lake" / evidence.POINTER_KEY).exists()

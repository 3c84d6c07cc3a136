"""A small real warehouse (3 demo days ingested and modelled by SQLMesh) for reader tests.

Register it for the whole suite in ``conftest.py``:
``pytest_plugins = [..., "pipelines_tests.warehouse_fixture"]``.
The build is cached per process, so registering the fixture in several places still builds once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.platform.settings import Settings

DEMO_DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
EXECUTION_TIME = "2026-11-23"

_ENV_KEYS = ("PIPELINES_ENV", "PIPELINES_DATA_DIR", "PIPELINES_LAKE_URI", "PIPELINES_DEMO_SEED")
_built: dict[str, Settings] = {}


def build_warehouse(root: Path, days: tuple[str, ...] = DEMO_DAYS) -> Settings:
    """Ingest ``days`` of demo data into a local lake and run every SQLMesh model over them.

    The process environment must already point PIPELINES_DATA_DIR/PIPELINES_LAKE_URI at ``root``
    because the SQLMesh config and the raw-view macro read them from there.
    """
    from sqlmesh import Context

    from pipelines.platform.resources import LakeResource
    from pipelines.shop.ingestion import ingest_one
    from pipelines.shop.resources import DemoDataResource, RatesApiResource, ShopDatabaseResource
    from pipelines.shop.sources.contracts import CONTRACTS

    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lake = LakeResource(uri=settings.lake_uri)
    shop = ShopDatabaseResource(sqlite_path=str(settings.data_dir / "shop.sqlite"))
    demo = DemoDataResource(enabled=True)
    for day in days:
        for contract in CONTRACTS.values():
            ingest_one(contract, day, lake, shop, RatesApiResource(), demo)
    ctx = Context(paths=str(settings.sqlmesh_project_dir), gateway="local")
    try:
        ctx.plan("prod", skip_backfill=True, auto_apply=True, no_prompts=True)
        ctx.run("prod", start=days[0], end=days[-1], execution_time=EXECUTION_TIME, ignore_cron=True)
    finally:
        ctx.close()
    return settings


@pytest.fixture(scope="session")
def built_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a local warehouse holding the marts for DEMO_DAYS.

    The environment is pointed at it only while it is built; tests that need the variables set
    (code calling ``Settings.from_env()``) set them with ``monkeypatch``.
    """
    if "settings" not in _built:
        root = tmp_path_factory.mktemp("warehouse")
        saved = {key: os.environ.get(key) for key in _ENV_KEYS}
        os.environ.update(
            {
                "PIPELINES_ENV": "local",
                "PIPELINES_DATA_DIR": str(root / "data"),
                "PIPELINES_LAKE_URI": str(root / "lake"),
                "PIPELINES_DEMO_SEED": "1",
            }
        )
        try:
            _built["settings"] = build_warehouse(root)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    yield _built["settings"]

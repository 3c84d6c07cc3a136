"""Rebuilding a DuckLake table without its lost files (pipelines/platform/repair.py), on a real DuckLake
catalog (a local metadata file and data folder: the same extension code as on S3, faster).

The prod-stack repair end to end (S3, PostgreSQL catalog, SQLMesh restatement) is
``test_prod_repair.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pytest

from dagster_sqlmesh_bridge import ModelInfo, ProjectInfo
from pipelines.platform import maintenance, repair
from pipelines.platform.duckdb_extensions import install_extensions
from pipelines.platform.lake import Lake
from pipelines.platform.repair import DayRange, TableDamage

DAYS = [date(2026, 4, d) for d in range(5, 10)]
TABLE = "sqlmesh__marts.marts__sales__123"


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckLake catalog named like the warehouse's, with one table partitioned by day."""
    monkeypatch.delenv("PIPELINES_DUCKLAKE_SCHEMA", raising=False)
    install_extensions()
    con = duckdb.connect()
    con.execute("LOAD ducklake")
    data = tmp_path / "lake" / "warehouse"  # where prod keeps it: <lake>/warehouse/
    con.execute(f"ATTACH 'ducklake:{tmp_path / 'meta.ducklake'}' AS lake (DATA_PATH '{data}/')")
    con.execute("USE lake")
    con.execute("CREATE SCHEMA sqlmesh__marts")
    con.execute(f"CREATE TABLE {TABLE} (order_date DATE, n INTEGER, amount DECIMAL(18, 2), note VARCHAR)")
    con.execute(f"ALTER TABLE {TABLE} SET PARTITIONED BY (order_date)")
    for day in DAYS:  # one insert per day, as SQLMesh's daily intervals write them
        con.execute(
            f"INSERT INTO {TABLE} SELECT ?::DATE, range, range / 7, 'x' || range FROM range(500)", [day]
        )
    yield con
    con.close()


def _files(con: duckdb.DuckDBPyConnection) -> dict[date, str]:
    rows = con.execute(
        "SELECT data_file FROM ducklake_list_files('lake', 'marts__sales__123', schema => 'sqlmesh__marts')"
    ).fetchall()
    return {d: p for (p,) in rows for d in DAYS if f"order_date={d}" in p}


def _fingerprint(con: duckdb.DuckDBPyConnection, where: str = "true") -> tuple[int, int]:
    return con.execute(f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {TABLE} t WHERE {where}").fetchone()


def test_rebuild_keeps_the_other_days_without_reading_the_lost_files(lake: duckdb.DuckDBPyConnection) -> None:
    con = lake
    files = _files(con)
    kept_before = _fingerprint(con, f"order_date NOT IN ('{DAYS[1]}', '{DAYS[2]}', '{DAYS[4]}')")
    for day in (DAYS[1], DAYS[2], DAYS[4]):
        Path(files[day]).unlink()
    with pytest.raises(duckdb.Error):  # the damage: a full read fails
        _fingerprint(con)
    # the lost days as the catalog's statistics give them (what find_damage reads)
    lost = [maintenance.file_column_range(con, files[d], "order_date") for d in (DAYS[1], DAYS[2], DAYS[4])]
    assert lost == [(str(d), str(d)) for d in (DAYS[1], DAYS[2], DAYS[4])]
    ranges = repair.merge_ranges(DayRange(date.fromisoformat(a), date.fromisoformat(b)) for a, b in lost)
    assert ranges == (DayRange(DAYS[1], DAYS[2]), DayRange(DAYS[4], DAYS[4]))

    damage = TableDamage(TABLE, "marts.sales", tuple(files[d] for d in DAYS), "order_date", ranges)
    assert repair.rebuild(con, damage) == 1000  # DAYS[0] and DAYS[3]
    assert _fingerprint(con) == kept_before  # every kept row, no lost file read
    columns = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'marts__sales__123'"
    ).fetchall()
    assert columns == [
        ("order_date", "DATE"), ("n", "INTEGER"), ("amount", "DECIMAL(18,2)"), ("note", "VARCHAR")
    ]  # fmt: skip
    assert repair._partitioning(con, "sqlmesh__marts", "marts__sales__123") == ['"order_date"']
    # a restated day lands in its own partition file again, next to the kept ones
    con.execute(f"INSERT INTO {TABLE} SELECT ?::DATE, range, range / 7, 'x' FROM range(500)", [DAYS[2]])
    assert set(_files(con)) == {DAYS[0], DAYS[2], DAYS[3]}
    assert not con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE '%__repair'"
    ).fetchall()


def test_a_failed_rebuild_leaves_the_table_as_it_was(lake: duckdb.DuckDBPyConnection) -> None:
    con = lake
    files = _files(con)
    Path(files[DAYS[2]]).unlink()
    before = _fingerprint(con, f"order_date <> '{DAYS[2]}'")
    # a wrong range (the lost day not excluded): the copy reads the lost file and fails
    wrong = TableDamage(TABLE, "marts.sales", (files[DAYS[2]],), "order_date", (DayRange(DAYS[0], DAYS[0]),))
    with pytest.raises(duckdb.Error):
        repair.rebuild(con, wrong)
    assert _fingerprint(con, f"order_date <> '{DAYS[2]}'") == before
    assert set(_files(con)) == set(DAYS)  # still the old table, lost file still referenced


def test_damage_names_the_days_of_lost_data_and_delete_files(
    lake: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    con = lake
    con.execute("CALL lake.set_option('data_inlining_row_limit', 0)")  # a delete file, not inlined
    con.execute(f"DELETE FROM {TABLE} WHERE order_date = ? AND n < 10", [DAYS[3]])
    rows = con.execute(
        "SELECT data_file, delete_file FROM ducklake_list_files('lake', 'marts__sales__123', "
        "schema => 'sqlmesh__marts')"
    ).fetchall()
    deletes = [(data, delete) for data, delete in rows if delete]
    assert len(deletes) == 1 and f"order_date={DAYS[3]}" in deletes[0][0]
    Path(deletes[0][1]).unlink()  # the delete file of DAYS[3]
    Path(_files(con)[DAYS[1]]).unlink()  # the data file of DAYS[1]
    project = _project(("marts.sales", "order_date", []))
    damage = repair.find_damage(con, Lake(str(tmp_path / "lake")), project)
    assert [(d.table, d.model, d.time_column, d.ranges) for d in damage] == [
        (TABLE, "marts.sales", "order_date", (DayRange(DAYS[1], DAYS[1]), DayRange(DAYS[3], DAYS[3])))
    ]
    assert repair.rebuild(con, damage[0]) == 1500  # DAYS 0, 2 and 4; DAYS[3] is recomputed whole
    assert repair.find_damage(con, Lake(str(tmp_path / "lake")), project) == []
    # a table that is no current model's: named, not guessed at
    Path(_files(con)[DAYS[0]]).unlink()
    with pytest.raises(repair.RepairError, match="no current model's physical table"):
        repair.find_damage(con, Lake(str(tmp_path / "lake")), _project(("marts.other", "d", [])))


def test_gaps_cover_everything_outside_the_lost_ranges() -> None:
    ranges = (DayRange(DAYS[1], DAYS[2]), DayRange(DAYS[4], DAYS[4]))
    assert repair._gaps("d", ranges) == [
        "\"d\" < DATE '2026-04-06'",
        "\"d\" >= DATE '2026-04-08' AND \"d\" < DATE '2026-04-09'",
        "\"d\" >= DATE '2026-04-10'",
    ]


def _project(*models: tuple[str, str | None, list[str]]) -> ProjectInfo:
    """A project of ``(schema.name, time column, parents)`` models."""
    infos = {}
    for name, time_column, parents in models:
        schema, table = name.split(".")
        infos[f'"lake"."{schema}"."{table}"'] = ModelInfo(
            fqn=f'"lake"."{schema}"."{table}"', name=name, catalog="lake", schema=schema, table=table,
            kind="INCREMENTAL_BY_TIME_RANGE" if time_column else "FULL", external=False,
            time_column=time_column, interval_unit="day", start=None, cron="@daily", description=None,
            owner=None, tags=[], columns=[], audits=[], fingerprint="0", path=None,
            depends_on=['"lake"."{}"."{}"'.format(*p.split(".")) for p in parents],
        )  # fmt: skip
    return ProjectInfo(project_dir=".", gateway=None, default_catalog="lake", models=infos)


def test_restatements_group_models_by_lost_range_and_order_full_rebuilds() -> None:
    day = DayRange(DAYS[1], DAYS[1])
    damage = [
        TableDamage("s.a", "marts.a", ("f1",), "order_date", (day,)),
        TableDamage("s.b", "staging.b", ("f2",), "order_date", (DayRange(DAYS[0], DAYS[0]), day)),
        TableDamage("s.c", "marts.c", ("f3",), None),
    ]
    ranged = [(DayRange(DAYS[0], DAYS[0]), ["staging.b"]), (day, ["marts.a", "staging.b"])]
    # marts.a joins the dimension marts.c: rebuild the dimension first
    b = ("staging.b", "d", [])
    joins = _project(b, ("marts.c", None, []), ("marts.a", "d", ["staging.b", "marts.c"]))
    assert repair.restatements(damage, joins) == [(None, ["marts.c"]), *ranged]
    # the dimension reads a damaged time model: rebuild it after that model's days
    reads = _project(b, ("marts.c", None, ["staging.b"]), ("marts.a", "d", ["staging.b"]))
    assert repair.restatements(damage, reads) == [*ranged, (None, ["marts.c"])]
    assert repair.selection_string(["b/x", "a/y", "b/x"]) == 'key:"a/y" or key:"b/x"'


def test_repair_files_is_harmless_on_the_local_warehouse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.ops.cli import main

    monkeypatch.setenv("PIPELINES_ENV", "local")
    monkeypatch.setenv("PIPELINES_DATA_DIR", str(tmp_path / "data"))
    assert main(["repair-files"]) == 0
    assert "nothing to repair" in capsys.readouterr().out


def test_a_file_outside_the_lake_root_is_never_counted_missing(
    lake: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """A file the catalog references outside the lake root cannot be placed in the lake's listing:
    it is reported as unplaceable, never as missing, and repair leaves its table as it is rather
    than rebuild it without rows whose file still exists."""
    con = lake
    outside = tmp_path / "elsewhere" / f"order_date={DAYS[2]}" / "extra.parquet"
    outside.parent.mkdir(parents=True)
    con.execute(
        f"COPY (SELECT ?::DATE AS order_date, range::INTEGER AS n, (range / 7)::DECIMAL(18, 2) AS amount, "
        f"'y' AS note FROM range(100)) TO '{outside}' (FORMAT parquet)",
        [DAYS[2]],
    )
    con.execute(
        f"CALL ducklake_add_data_files('lake', 'marts__sales__123', '{outside}', schema => 'sqlmesh__marts')"
    )
    root = Lake(str(tmp_path / "lake"))
    project = _project(("marts.sales", "order_date", []))
    assert maintenance.unplaceable_files(con, root) == {str(outside): TABLE}
    assert maintenance.missing_files(con, root) == []  # nothing is lost
    assert repair.find_damage(con, root, project) == []

    Path(_files(con)[DAYS[1]]).unlink()  # a real loss in the same table
    assert [f.path for f in maintenance.missing_files(con, root)] == [_files(con)[DAYS[1]]]
    before = _fingerprint(con, f"order_date <> '{DAYS[1]}'")
    with pytest.raises(repair.RepairError, match="outside the lake root"):
        repair.find_damage(con, root, project)
    assert _fingerprint(con, f"order_date <> '{DAYS[1]}'") == before  # left as it was, extra rows included
    assert con.execute(f"SELECT count(*) FROM {TABLE} WHERE note = 'y'").fetchone()[0] == 100

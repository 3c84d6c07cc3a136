"""dagster-sqlmesh-bridge: every model of a SQLMesh project as a Dagster asset.

``SQLMeshProjectComponent`` is the component a Dagster project declares in a ``defs.yaml``
(``type: dagster_sqlmesh_bridge.SQLMeshProjectComponent``); the pieces below are the
building blocks it assembles, usable on their own. Names are imported on first use, so a
module such as ``.identifiers`` loads without Dagster or SQLMesh.

Every model SQLMesh builds is its own asset (EMBEDDED models are not: they have no table);
the tables the models read but SQLMesh does not build are external assets. Incremental-by-time
models get Dagster time partitions of their interval unit (hourly, daily, monthly...), so a
partition range is exactly a range of SQLMesh intervals. Everything comes in by argument: the
bridge reads no environment variable of its own.

- :mod:`.project`  reads a project (one path, or several for a multi-repo project) into plain
  data, cached by what defines the models; loading never opens the warehouse
- :mod:`.translator` maps each model to an ``AssetSpec`` (subclass it to change keys, groups...)
- :mod:`.events` observes SQLMesh's console and notification callbacks (the only module that
  implements SQLMesh's ``Console``)
- :mod:`.resource` is where a deploy and a run start: :mod:`.deploy` applies SQLMesh's own plan
  (build what the state lacks, then move the views) under the plan and model locks
  (:mod:`.locks`, :mod:`.environment`); :mod:`.run` runs the Dagster selection and partition
  window in a SQLMesh thread (:mod:`.runner`) and :mod:`.reporting` streams each model's events
  (a materialization per partition) as SQLMesh finishes it. Whether a run restates is the
  caller's policy (``sqlmesh_assets(restate_when=...)``); a restatement cascades downstream as
  SQLMesh's does (:mod:`.restatement`). A ``ModelHook`` (:mod:`.hooks`) adds metadata and its
  own checks to each model's materialization
- :mod:`.mirror` makes Dagster's catalog show the intervals SQLMesh's state holds
- :mod:`.assets` builds the ``multi_asset`` and the external asset specs

Example (a complete code location for any SQLMesh project)::

    import dagster as dg
    from dagster_sqlmesh_bridge import (
        SQLMeshResource, SQLMeshTranslator, load_project, sqlmesh_assets, sqlmesh_external_specs,
    )

    project = load_project(["/srv/repo_a", "/srv/repo_b"], gateway="local")
    translator = SQLMeshTranslator()
    defs = dg.Definitions(
        assets=[
            sqlmesh_assets(project, translator, pool=None),
            *sqlmesh_external_specs(project, translator),
        ],
        resources={
            "sqlmesh": SQLMeshResource(
                project_dir="/srv/repo_a", extra_project_dirs=["/srv/repo_b"], gateway="local"
            )
        },
    )
"""

import importlib
import warnings
from typing import Any

# APIs the integration needs that Dagster 1.13 still marks beta: BackfillPolicy (single-run
# partition ranges), code references, and the column schema-change checks.
_BETA_APIS = "|".join(
    (
        "backfill_policy",
        "CodeReferencesMetadataValue",
        "LocalFileCodeReference",
        "build_column_schema_change_checks",
    )
)
warnings.filterwarnings("ignore", message=rf".*({_BETA_APIS}).*currently in beta.*")

__version__ = "0.1.0"

_EXPORTS = {
    "AuditInfo": "project",
    "ModelHook": "hooks",
    "ModelInfo": "project",
    "ModelReport": "hooks",
    "ProjectInfo": "project",
    "SQLMeshProjectComponent": "component.component",
    "SQLMeshResource": "resource",
    "SQLMeshTranslator": "translator",
    "load_project": "project",
    "sqlmesh_assets": "assets",
    "sqlmesh_external_specs": "assets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dagster_sqlmesh_bridge' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dagster_sqlmesh_bridge.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""``SQLMeshProjectComponent``: a SQLMesh project declared in a ``defs.yaml``.

It is state-backed like dagster-dbt's ``DbtProjectComponent``: the state is the project read
into plain data (the bridge's cache, ``dagster_sqlmesh_bridge.project``), written by
``dg utils refresh-defs-state`` (the image bakes it) or on every ``dg dev`` load. A state that
no longer matches the project's files is not trusted: the project is read again (from the
bridge's cache when that matches), so a stale state never shows yesterday's models.

A deployment extends it by subclassing: ``read_args`` (gateway, cache salt), ``translator_for``,
``warehouse_for`` (where quality checks connect), ``model_hook``, ``plan_extension`` (what happens
around a deploy) and ``resources_for``. The integration itself reads no environment variable but
``SQLMESH_GATEWAY`` (the gateway when the defs.yaml names none).
"""

import json
import logging
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from dagster.components import DefsStateConfig, DefsStateConfigArgs, ResolvedDefsStateConfig

from dagster_sqlmesh_bridge.component.automation import AutomationModel
from dagster_sqlmesh_bridge.component.quality import QualityModel
from dagster_sqlmesh_bridge.component.scaffolder import SQLMeshProjectScaffolder, name_for_folder
from dagster_sqlmesh_bridge.component.transformation import PlanExtension
from dagster_sqlmesh_bridge.component.translation import Translation, TranslationModel, resolve_translation

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
# asset keys and names each SQLMesh component of one load claimed: collisions name both projects.
# Keyed by the load's component tree (not weakly referenceable): the latest few loads are kept.
_CLAIMS: dict[int, tuple[Any, dict[tuple[str, str], str]]] = {}


def _claims_for(tree: Any) -> dict[tuple[str, str], str]:
    entry = _CLAIMS.get(id(tree))
    if entry is None or entry[0] is not tree:
        while len(_CLAIMS) >= 4:
            _CLAIMS.pop(next(iter(_CLAIMS)))
        entry = _CLAIMS[id(tree)] = (tree, {})
    return entry[1]


class SQLMeshProjectDeclaredTwiceWarning(UserWarning):
    """Two components of one code location declare the same SQLMesh project (and gateway and
    environment): its tables are two sets of assets, and runs of either rebuild the same tables."""


def resolve_project(context: dg.ResolutionContext, value: Any) -> list[Path]:
    """One path or a list (a multi-repo project), relative to the folder of the ``defs.yaml``."""
    raw = context.resolve_value(value)
    paths = [raw] if isinstance(raw, str) else list(raw or [])
    if not paths:
        raise ValueError("project: name the SQLMesh project's folder (or a list of folders)")
    resolved = [context.resolve_source_relative_path(str(p)).resolve() for p in paths]
    for given, path in zip(paths, resolved, strict=True):
        if not (path / "config.yaml").exists() and not (path / "config.py").exists():
            # name the base too: in create-dagster's src/ layout the root is one folder further up
            raise ValueError(
                f"project: {path} is not a SQLMesh project (no config.yaml or config.py); "
                f"{given!r} is taken relative to the folder of this defs.yaml, or write "
                "'{{ context.project_root }}/<folder>'"
            )
    return resolved


def _default_translation() -> Translation:
    return Translation(None, None)


@dg.scaffold_with(SQLMeshProjectScaffolder)
@dataclass
class SQLMeshProjectComponent(dg.StateBackedComponent, dg.Resolvable):
    """Every model of a SQLMesh project as a Dagster asset, with its audits and default quality
    checks as asset checks, a ``sqlmesh_plan`` job to deploy model changes, a ``sqlmesh_mirror``
    job, and schedules, catch-up and declarative automation per model cron.

    .. code-block:: yaml

        type: dagster_sqlmesh_bridge.SQLMeshProjectComponent
        attributes:
          project: ../../sqlmesh_project       # relative to this file; or a list of folders
          name: orders                         # prefixes jobs, sensors, resource; default: the folder
          translation: {key_prefix: orders, group_name: "orders_{{ model.schema }}"}
    """

    project: Annotated[
        list[Path],
        dg.Resolver(
            resolve_project,
            model_field_type=str | list[str],
            description="The SQLMesh project's folder, or a list of folders for a multi-repo project, "
            "relative to this defs.yaml.",
            examples=["../../sqlmesh_project", ["../repo_a", "../repo_b"]],
        ),
    ]
    gateway: Annotated[
        str | None,
        dg.Resolver.default(description="SQLMesh gateway (default: SQLMESH_GATEWAY, else the project's)."),
    ] = None
    environment: Annotated[
        str, dg.Resolver.default(description="SQLMesh environment the runs build and read.")
    ] = "prod"
    name: Annotated[
        str | None,
        dg.Resolver.default(
            description="Prefix of this project's jobs, sensors, SQLMesh resource key and state key. "
            "Omitted: the defs folder's name, so two declarations never collide; null: no prefix "
            "(one SQLMesh project in the code location).",
            examples=["orders", None],
        ),
    ] = None
    translation: Annotated[
        Translation,
        dg.Resolver(
            resolve_translation,
            model_field_type=TranslationModel,
            description="Asset key prefix, group, tags and owners; templates see `model` "
            "(name, catalog, schema, table, kind, tags, owner...).",
            examples=[
                {"key_prefix": "orders", "group_name": "{{ model.schema }}", "tags": {"team": "sales"}}
            ],
        ),
    ] = field(default_factory=_default_translation)
    quality: Annotated[
        QualityModel,
        dg.Resolver(
            lambda context, value: QualityModel.model_validate(context.resolve_value(value) or {}),
            model_field_type=QualityModel,
            description="default_checks (on/off) and defaults tuning them (docs/quality.md); "
            "the project's quality.yaml keeps working.",
            examples=[{"default_checks": True, "defaults": {"severity": "ERROR", "warmup": 14}}],
        ),
    ] = field(default_factory=QualityModel)
    automation: Annotated[
        AutomationModel,
        dg.Resolver(
            lambda context, value: AutomationModel.model_validate(context.resolve_value(value) or {}),
            model_field_type=AutomationModel,
            description="Which schedules/sensors to build and their default status.",
            examples=[
                {"schedules": True, "catch_up": True, "declarative": False, "default_status": "STOPPED"}
            ],
        ),
    ] = field(default_factory=AutomationModel)
    external_assets: Annotated[
        bool,
        dg.Resolver.default(
            description="Declare the tables the models read but SQLMesh does not build as external "
            "assets; false when another component of the project builds them (ingestion)."
        ),
    ] = True
    defs_state: ResolvedDefsStateConfig = field(default_factory=DefsStateConfigArgs.local_filesystem)

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> "SQLMeshProjectComponent":
        """An omitted ``name`` is the defs folder's, set before Dagster reads the state key: two
        declarations of only ``project:`` then differ in jobs, resource and state, like
        dagster-dbt's per-project state. An explicit ``name: null`` keeps names unprefixed."""
        fields = getattr(attributes, "model_fields_set", None)
        if fields is not None and "name" not in fields:
            attributes = attributes.model_copy(update={"name": name_for_folder(Path(context.path).name)})
        return super().load(attributes, context)

    def __post_init__(self) -> None:
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise ValueError(
                f"name: {self.name!r} must be letters, digits and underscores, starting with a letter"
            )

    # -- naming -----------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"{self.name}_" if self.name else ""

    @property
    def resource_key(self) -> str:
        return f"sqlmesh_{self.name}" if self.name else "sqlmesh"

    @property
    def defs_state_config(self) -> DefsStateConfig:
        return DefsStateConfig.from_args(
            self.defs_state, default_key=f"SQLMeshProjectComponent[{self.resource_key}]"
        )

    # -- state --------------------------------------------------------------------------------

    def read_args(self) -> dict[str, Any]:
        """How the project is read: ``gateway`` (this component's, else ``SQLMESH_GATEWAY``, else
        the project's default), folders to ``exclude`` from its fingerprint, a ``cache_salt``."""
        gateway = self.gateway if self.gateway is not None else os.environ.get("SQLMESH_GATEWAY", "").strip()
        return {"gateway": gateway or None, "exclude": [], "cache_salt": ""}

    def _project_key(self) -> str:
        from dagster_sqlmesh_bridge.project import project_hash

        args = self.read_args()
        return project_hash(self.project, args["gateway"], args["exclude"], args["cache_salt"])

    def load_project_info(self, state_path: Path | None = None) -> Any:
        """The project from the state when it matches the files, else read (bridge cache)."""
        from dagster_sqlmesh_bridge import load_project
        from dagster_sqlmesh_bridge.project import project_from_json

        if state_path is not None and state_path.is_file():
            try:
                stored = json.loads(state_path.read_text())
                if stored.get("key") == self._project_key():
                    return project_from_json(stored["project"])
                log.info(
                    "SQLMesh project %s changed since its state was written: reading it", self.project[0]
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable component state %s: %s", state_path, exc)
        args = self.read_args()
        return load_project(
            self.project, args["gateway"], exclude=args["exclude"], cache_salt=args["cache_salt"]
        )

    def write_state_to_path(self, state_path: Path) -> None:
        from dagster_sqlmesh_bridge.project import project_to_json

        info = self.load_project_info()
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"key": self._project_key(), "project": project_to_json(info)}))

    # -- definitions --------------------------------------------------------------------------

    def build_defs_from_state(
        self, context: dg.ComponentLoadContext, state_path: Path | None
    ) -> dg.Definitions:
        project = self.load_project_info(state_path)
        defs = self.build_project_defs(project)
        _claim(context.component_tree, defs, self, str(context.path))
        return defs

    def translator_for(self, project: Any) -> Any:
        """The project's translator (one per loaded project): this component's translation,
        freshness policies and automation conditions."""
        cached = self.__dict__.get("_translator")
        if cached is None or cached[0] is not project:
            cached = self.__dict__["_translator"] = (project, self.make_translator(project))
        return cached[1]

    def make_translator(self, project: Any) -> Any:
        from dagster_sqlmesh_bridge.component.translation import ProjectTranslator

        return ProjectTranslator(self.translation)

    def warehouse_for(self, project: Any) -> Any:
        """Writable connections for the quality checks: the project's own gateway."""
        from dagster_sqlmesh_bridge.component.quality import project_warehouse

        return project_warehouse(project)

    def model_hook(self, project: Any, translator: Any) -> Any:
        """The quality checks made in the SQLMesh step (``None`` with ``default_checks: false``)."""
        from dagster_sqlmesh_bridge.component import quality

        if not self.quality.default_checks:
            return None
        return quality.quality_hook(project, translator, self.warehouse_for(project))

    def plan_extension(self) -> PlanExtension:
        """What the plan job does around SQLMesh's plan (nothing by default)."""
        return PlanExtension()

    def sqlmesh_resource(self) -> Any:
        from dagster_sqlmesh_bridge.resource import SQLMeshResource

        return SQLMeshResource(
            project_dir=str(self.project[0]),
            extra_project_dirs=[str(d) for d in self.project[1:]],
            gateway=self.read_args()["gateway"],
            environment=self.environment,
        )

    def resources_for(self, project: Any) -> dict[str, Any]:
        """The resources the definitions need: this project's SQLMesh resource."""
        return {self.resource_key: self.sqlmesh_resource()}

    def build_project_defs(self, project: Any) -> dg.Definitions:
        """The models' assets and checks, external tables, plan job, automation, resources."""
        from dagster_sqlmesh_bridge.assets import sqlmesh_external_specs
        from dagster_sqlmesh_bridge.component import automation, quality, transformation

        quality.configure_quality(project, self.quality)
        translator = self.translator_for(project)
        parts = [
            transformation.build_defs(
                project,
                translator,
                self.model_hook(project, translator),
                prefix=self.prefix,
                resource_key=self.resource_key,
                extension=self.plan_extension(),
            ),
            automation.build_defs(project, translator, self.automation, prefix=self.prefix),
            dg.Definitions(resources=self.resources_for(project)),
        ]
        if self.external_assets:
            parts.append(dg.Definitions(assets=sqlmesh_external_specs(project, translator)))
        return dg.Definitions.merge(*parts)


def _claim(tree: Any, defs: dg.Definitions, component: SQLMeshProjectComponent, where: str) -> None:
    """Fail, naming both projects and the fix, when two SQLMesh components of one code location
    make the same asset or use the same name (Dagster's own error names neither)."""
    claims = _claims_for(tree)
    owner = f"{where} (project {component.project[0]})"
    name_claim = ("name", component.resource_key)
    if name_claim in claims and claims[name_claim] != owner:
        raise ValueError(
            f"two SQLMesh projects of this code location use the same name: {claims[name_claim]} and "
            f"{owner}. Give each its own `name:` in its defs.yaml (it prefixes jobs, sensors and the "
            "resource key)."
        )
    claims[name_claim] = owner
    keys = sorted(
        (key for asset in defs.assets or [] for key in _asset_keys(asset)), key=lambda k: k.to_user_string()
    )
    for key in keys:
        claim = ("asset", key.to_user_string())
        if claim in claims and claims[claim] != owner:
            raise ValueError(
                f"asset {key.to_user_string()!r} is made by two SQLMesh projects: {claims[claim]} and "
                f"{owner}. Set a key prefix for one of them in its defs.yaml, e.g. "
                f"`translation: {{key_prefix: {_suggest(component)}}}` (or `external_assets: false` "
                "when the other builds a table this one only reads)."
            )
        claims[claim] = owner
    _warn_if_declared_twice(claims, component, owner)  # it loads: say what declaring it twice does


def _warn_if_declared_twice(
    claims: dict[tuple[str, str], str], component: SQLMeshProjectComponent, owner: str
) -> None:
    """The same project, gateway and environment declared again (under another key prefix, or
    its asset keys would have collided): legal, but rarely meant, so say what it does."""
    args = component.read_args()
    folders = ",".join(sorted(str(p) for p in component.project))
    claim = ("project", f"{folders}|{args['gateway']}|{component.environment}")
    if claim in claims and claims[claim] != owner:
        warnings.warn(
            f"SQLMesh project {component.project[0]} is declared twice in this code location, by "
            f"{claims[claim]} and {owner}: the same tables are now two sets of assets (one per key "
            "prefix), and a run of either rebuilds them. Declare the project once, unless two sets "
            "are what you want.",
            SQLMeshProjectDeclaredTwiceWarning,
            stacklevel=2,
        )
        return
    claims[claim] = owner


def _asset_keys(asset: Any) -> list[dg.AssetKey]:
    return list(asset.keys) if isinstance(asset, dg.AssetsDefinition) else [asset.key]


def _suggest(component: SQLMeshProjectComponent) -> str:
    return component.name or re.sub(r"[^A-Za-z0-9_]", "_", component.project[0].name) or "project_b"


def component_for_dirs(
    dirs: Sequence[Path], name: str | None = None, *, cls: type[Any] | None = None, **attributes: Any
) -> Any:
    """A component built in Python, as a defs.yaml with ``project:`` these folders would
    (``cls``: a subclass of ``SQLMeshProjectComponent``, e.g. a platform's)."""
    folders = [Path(d).resolve() for d in dirs]
    return (cls or SQLMeshProjectComponent)(project=folders, name=name, **attributes)

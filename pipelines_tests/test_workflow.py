"""The GitHub Actions workflow runs the commands a person runs: each exists, and each passes
locally (the plan check against a prod built on the local prod stack: PostgreSQL state, S3)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from pipelines.ops.cli import main as cli_main
from pipelines.platform.settings import Settings
from pipelines_tests.conftest import Deployment
from pipelines_tests.prod_env import build_prod_env, postgres_instance, prod_environment
from pipelines_tests.services import PostgresServer, S3Env

ROOT = Path(__file__).parents[1]
BUNDLED = ROOT / "pipelines" / "shop" / "sqlmesh_project"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
SETTING = re.compile(r"^\$\{\{\s*vars\.([A-Z0-9_]+)\s*\}\}$")


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def runs(job: str) -> list[str]:
    return [step["run"] for step in workflow()["jobs"][job]["steps"] if "run" in step]


def test_the_workflow_runs_the_readme_test_command_and_the_plan_check_on_pull_requests() -> None:
    wf = workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in triggers
    assert "uv run pytest" in (ROOT / "README.md").read_text()
    assert runs("test")[-1] == "uv run pytest"
    assert "uv run ruff check ." in runs("test")
    assert "uv run python -m pipelines.governance.pii_lint" in runs("test")
    job = wf["jobs"]["plan-check"]
    assert "pull_request" in job["if"]
    assert any(r.startswith("uv run pipelines plan-check") for r in runs("plan-check"))
    assert any("GITHUB_STEP_SUMMARY" in r for r in runs("plan-check"))
    # after the tests, from a protected environment, with an OIDC-assumed role: no stored secret
    assert job["needs"] == "test" and job["environment"] == "plan-check"
    assert job["permissions"] == {"contents": "read", "id-token": "write"}
    assume = next(
        s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/configure-aws-credentials")
    )
    assert SETTING.match(assume["with"]["role-to-assume"])
    assert "secrets." not in WORKFLOW.read_text()
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PIPELINES_PG_PASSWORD"} & set(job["env"])
    source = "\n".join(p.read_text() for p in (ROOT / "pipelines").rglob("*.py"))
    for name in job["env"]:  # every variable is one the code reads
        assert name.startswith("AWS_") or f'"{name}"' in source, f"{name} is read nowhere"
    steps = runs("plan-check")
    assert steps.index("uv run python -m pipelines.ops.ci_secrets") < next(
        i for i, r in enumerate(steps) if r.startswith("uv run pipelines plan-check")
    )


def test_every_command_of_the_workflow_exists(capsys: pytest.CaptureFixture) -> None:
    bin_dir = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
    for job in workflow()["jobs"]:
        for command in runs(job):
            words = command.split()
            words = words[1:] if words[0] == "sudo" else words  # installation steps
            assert shutil.which(words[0]), f"{words[0]} (in {command!r}) is not installed"
            if words[:2] != ["uv", "run"]:
                continue
            if words[2] == "python" and words[3] == "-m":
                assert subprocess.run(["python", "-c", f"import {words[4]}"], check=False).returncode == 0
            else:
                assert (bin_dir / words[2]).exists(), f"{words[2]} is no entry point of the project"
            if words[2] == "pipelines":  # the subcommand and its options parse
                with pytest.raises(SystemExit) as exit_info:
                    cli_main([*[w for w in words[3:] if not w.startswith('"')][:1], "--help"])
                assert exit_info.value.code == 0
                assert "--output" in capsys.readouterr().out


def bash(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_prod_stack_job_runs_every_prod_stack_test_and_fails_on_skips() -> None:
    """Per merge to main, nightly and in `.ci/run`: the slow production-stack tests with their
    services installed, a skip counted as a failure."""
    wf = workflow()
    job = wf["jobs"]["prod-stack"]
    assert job["needs"] == "test" and "pull_request" in job["if"] and "schedule" in wf.get("on", wf.get(True))
    assert "bash .ci/prod-stack --strict" in runs("prod-stack")
    assert any("postgresql pgbouncer" in r for r in runs("prod-stack"))
    assert "bash .ci/prod-stack" in (ROOT / ".ci" / "run").read_text().splitlines()
    script = (ROOT / ".ci" / "prod-stack").read_text()
    listed = set(re.findall(r"pipelines_tests/test_\w+\.py", script))
    prod_files = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "pipelines_tests").glob("test_*.py")
        if "prod_environment(" in p.read_text() or "prod_env(" in p.read_text()
    }
    slow_prod = {p for p in prod_files if "pytest.mark.slow" in (ROOT / p).read_text()}
    assert slow_prod <= listed, f"prod-stack tests the script leaves out: {slow_prod - listed}"
    assert all((ROOT / p).exists() for p in listed)


def test_the_prod_stack_script_demands_its_services_under_strict(tmp_path: Path) -> None:
    """`--strict` (the CI job) fails before any test when PgBouncer, PostgreSQL or podman is missing;
    without it the script says what is missing (here: a PATH without them, so no test runs)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "uv").write_text('#!/bin/sh\necho "uv $*"\n')
    (fake_bin / "uv").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "HOME": str(tmp_path)}
    services = shutil.which("pgbouncer") or Path("/usr/sbin/pgbouncer").exists()
    services = services and any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    services = services and shutil.which("podman", path=env["PATH"])
    strict = subprocess.run(
        ["bash", ".ci/prod-stack", "--strict"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    lenient = subprocess.run(["bash", ".ci/prod-stack"], cwd=ROOT, env=env, capture_output=True, text=True)
    if services:
        for result in (strict, lenient):
            assert result.returncode == 0 and "--no-skips" in result.stdout
    else:
        assert strict.returncode == 1 and "not installed" in strict.stderr and "uv" not in strict.stdout
        assert lenient.returncode == 0 and "--no-skips" not in lenient.stdout
        assert "not installed" in lenient.stdout and "pytest -m slow" in lenient.stdout


def test_the_test_job_passes_locally() -> None:
    env = {**os.environ}
    for command in runs("test"):
        # the suite itself is what runs this test: collect it instead of recursing into it
        command = "uv run pytest --collect-only -q" if command == "uv run pytest" else command
        result = bash(command, env)
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-2000:]}"


@pytest.mark.slow
def test_the_plan_check_job_passes_locally_against_a_prod_on_the_local_prod_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer, s3_env: S3Env
) -> None:
    dbs = {name: postgres_server.create_database() for name in ("dagster", "sqlmesh", "ducklake", "shop")}
    prod_vars = build_prod_env(postgres_server, s3_env, tmp_path, dbs)
    yesterday = date.today() - timedelta(days=1)
    with (
        prod_environment(monkeypatch, prod_vars),
        postgres_instance(tmp_path, postgres_server, dbs["dagster"]) as instance,
    ):
        prod = Deployment(tmp_path, Settings.from_env(), instance)
        built = prod.run("*", start=(yesterday - timedelta(days=2)).isoformat(), end=yesterday.isoformat())
        assert built.success
        before = prod_fingerprints()

        # the pull request: a breaking change to a mart, with its unit test updated
        project = tmp_path / "pr_project"
        shutil.copytree(BUNDLED, project, ignore=shutil.ignore_patterns(".cache", "logs"))
        model = project / "models" / "marts" / "daily_revenue.sql"
        model.write_text(model.read_text().replace("'shipped')", "'shipped', 'returned')"))
        tests = project / "tests" / "test_marts.yaml"
        tests.write_text(
            tests.read_text().replace(
                "revenue_usd: 80.0, avg_order_value_usd: 40.0",
                "revenue_usd: 150.0, avg_order_value_usd: 50.0",
            )
        )
        # the repository's variables, and the secrets the OIDC role reads, from the local stack
        # (the configure-aws-credentials step is GitHub's: here the S3 server's keys stand in)
        import boto3

        manager = boto3.client("secretsmanager", endpoint_url=s3_env.endpoint_url, region_name=s3_env.region)
        login = {"username": prod_vars["PIPELINES_PG_USER"], "password": prod_vars["PIPELINES_PG_PASSWORD"]}
        manager.create_secret(Name="pipelines/prod/db-pipelines", SecretString=json.dumps(login))
        manager.create_secret(Name="pipelines/prod/pii-salt", SecretString=prod_vars["PIPELINES_PII_SALT"])
        repository_vars = {
            **prod_vars,
            "PIPELINES_PG_SECRET_ID": "pipelines/prod/db-pipelines",
            "PIPELINES_PII_SALT_SECRET_ID": "pipelines/prod/pii-salt",
        }
        job_env = workflow()["jobs"]["plan-check"]["env"]
        from_secrets = {"PIPELINES_PG_USER", "PIPELINES_PG_PASSWORD", "PIPELINES_PII_SALT"}
        env = {k: v for k, v in os.environ.items() if k not in job_env and k not in from_secrets}
        for name, value in job_env.items():
            setting = SETTING.match(value)
            resolved = (repository_vars.get(name) or os.environ.get(name)) if setting else value
            if resolved:
                env[name] = resolved
        github_env = tmp_path / "github_env"
        github_env.touch()
        env |= {
            "GITHUB_HEAD_REF": "feature/returns-are-revenue",
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
            "GITHUB_ENV": str(github_env),
            "SQLMESH_PROJECT_DIR": str(project),
            "AWS_ENDPOINT_URL": s3_env.endpoint_url,
        }
        for command in runs("plan-check"):
            result = bash(command, env)
            assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
            assert prod_vars["PIPELINES_PG_PASSWORD"] not in result.stdout.replace(
                f"::add-mask::{prod_vars['PIPELINES_PG_PASSWORD']}", ""
            )
            env |= dict(line.split("=", 1) for line in github_env.read_text().splitlines())
        summary = (tmp_path / "step_summary.md").read_text()
        assert "Environment `feature_returns_are_revenue` on gateway `prod`" in summary
        assert "| `marts.daily_revenue` | directly modified | breaking |" in summary
        assert "- rows: prod 3, branch 3" in summary and "Sample of changed rows" in summary
        assert "The environment was removed afterwards." in summary
        assert prod_fingerprints() == before  # prod untouched


def prod_fingerprints() -> dict[str, str]:
    from sqlmesh import Context

    settings = Settings.from_env()
    ctx = Context(paths=str(BUNDLED), gateway=settings.sqlmesh_gateway)
    try:
        env = ctx.state_sync.get_environment("prod")
        assert [e.name for e in ctx.state_sync.get_environments()] == ["prod"]
        return {s.name: s.fingerprint.to_identifier() for s in env.snapshots}
    finally:
        ctx.close()

"""The `qapten validate`, `schema` and `init` commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from qapten.cli import app
from qapten.orgchart import OrgChart
from tests.test_orgchart import INVALID_CHARTS, ROOT

runner = CliRunner()


def invoke(*args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    return result


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository's root, so that paths print as a user would type them."""
    monkeypatch.chdir(ROOT)


@pytest.mark.usefixtures("in_repo")
def test_validate_ok() -> None:
    result = invoke("validate", "agents/org.yaml")

    assert result.exit_code == 0
    assert result.stdout.startswith("ok: 4 roles")
    assert result.stderr == ""


@pytest.mark.usefixtures("in_repo")
@pytest.mark.parametrize(("chart", "position", "fragment", "count"), INVALID_CHARTS)
def test_validate_reports_each_problem(
    chart: str, position: str, fragment: str, count: int
) -> None:
    result = invoke("validate", f"tests/charts/{chart}")

    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"tests/charts/{chart}:{position}: "), lines
    assert fragment in lines[0]
    assert len(lines) == count


@pytest.mark.usefixtures("in_repo")
def test_missing_prompt_names_the_path_it_looked_for() -> None:
    result = invoke("validate", "tests/charts/missing_prompt.yaml")

    assert "(looked for tests/charts/nowhere.md)" in result.stderr


@pytest.mark.usefixtures("in_repo")
def test_validate_missing_file() -> None:
    result = invoke("validate", "agents/nope.yaml")

    assert result.exit_code == 2
    assert result.stderr == "error: cannot read agents/nope.yaml: No such file or directory\n"


def test_console_script_prints_no_traceback() -> None:
    script = Path(sys.executable).with_name("qapten")
    if not script.exists():
        pytest.skip("the qapten console script is not installed next to this Python")
    chart = "tests/charts/cycle.yaml"
    done = subprocess.run(
        [str(script), "validate", chart], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert done.returncode == 2
    assert done.stderr.startswith(f"{chart}:5:24: roles.helper: reporting cycle")
    assert "Traceback" not in done.stdout + done.stderr


def test_schema_file_is_up_to_date() -> None:
    result = invoke("schema")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == OrgChart.json_schema()
    committed = (ROOT / "agents" / "org.schema.json").read_text(encoding="utf-8")
    assert committed == result.stdout, "run: qapten schema --output agents/org.schema.json"


def test_schema_output_option(tmp_path: Path) -> None:
    target = tmp_path / "org.schema.json"
    result = invoke("schema", "--output", str(target))

    assert result.exit_code == 0
    assert json.loads(target.read_text(encoding="utf-8")) == OrgChart.json_schema()


def test_schema_describes_the_yaml_as_written() -> None:
    schema = OrgChart.json_schema()
    role = schema["$defs"]["Role"]

    assert "name" not in role["properties"]
    assert "required" not in role
    assert "source" not in schema["properties"]
    assert {"type": "string"} in [
        {"type": option.get("type")} for option in schema["properties"]["model"]["anyOf"]
    ]


def test_init_writes_a_valid_chart(tmp_path: Path) -> None:
    folder = tmp_path / "company"
    result = invoke("init", str(folder))

    assert result.exit_code == 0
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["assistant.md", "lead.md", "org.schema.json", "org.yaml"]
    assert invoke("validate", str(folder / "org.yaml")).stdout.startswith("ok: 2 roles")
    org = (folder / "org.yaml").read_text(encoding="utf-8")
    assert org.startswith("# yaml-language-server: $schema=org.schema.json\n")
    schema = json.loads((folder / "org.schema.json").read_text(encoding="utf-8"))
    assert schema == OrgChart.json_schema()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "org.yaml").write_text("name: mine\n", encoding="utf-8")
    result = invoke("init", str(tmp_path))

    assert result.exit_code == 2
    assert "org.yaml" in result.stderr
    assert "not overwriting" in result.stderr
    assert (tmp_path / "org.yaml").read_text(encoding="utf-8") == "name: mine\n"
    assert not (tmp_path / "lead.md").exists()


@pytest.mark.usefixtures("in_repo")
def test_graph_prints_one_node_per_role_as_mermaid() -> None:
    result = invoke("graph", "agents/org.yaml")
    assert result.exit_code == 0
    assert "graph TD;" in result.stdout
    for role in ("ceo", "cto", "marketcom", "support"):
        assert f"\t{role}({role})" in result.stdout
        assert f"dispatch -.-> {role};" in result.stdout
        assert f"{role} --> dispatch;" in result.stdout


@pytest.mark.usefixtures("in_repo")
def test_graph_of_an_invalid_chart_reports_like_validate() -> None:
    result = invoke("graph", "tests/charts/cycle.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("tests/charts/cycle.yaml:")

"""The org chart: loading the default chart, every kind of mistake with its exact position."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from qapten.errors import OrgChartError
from qapten.models import ModelRef
from qapten.orgchart import OrgChart, Role
from qapten.policy import ActKind, Autonomy, AutonomyLevel

ROOT = Path(__file__).resolve().parent.parent
ORG = ROOT / "agents" / "org.yaml"
CHARTS = Path(__file__).resolve().parent / "charts"

# (chart file, "line:column" of the first problem, a fragment of its message, number of problems)
INVALID_CHARTS = [
    ("syntax_error.yaml", "5:16", "mapping values are not allowed here", 1),
    (
        "not_mapping.yaml",
        "2:1",
        "must be a mapping with the keys budget, max_steps, mcp_servers, model, name, roles",
        1,
    ),
    ("scalar.yaml", "2:1", "this one is a str", 1),
    ("empty.yaml", "1:1", "this one is empty", 1),
    (
        "unknown_top_key.yaml",
        "3:1",
        "unknown key 'rolls'; allowed keys: budget, max_steps, mcp_servers, model",
        1,
    ),
    ("unknown_role_key.yaml", "6:5", "unknown key 'report_to'; allowed keys: autonomy,", 1),
    ("unknown_autonomy_key.yaml", "5:31", "unknown key 'deliverables'; allowed keys: action,", 1),
    ("duplicate_role.yaml", "6:3", "duplicate key 'helper' (first at line 5)", 1),
    ("bad_role_name.yaml", "5:3", "bad role name 'Helper'", 1),
    ("unknown_reports_to.yaml", "6:17", "reports_to 'boss' is not a role; roles: lead, helper", 1),
    ("two_roots.yaml", "6:17", "'lead' and 'helper' both report to the human", 1),
    ("no_root.yaml", "2:1", "no root", 2),
    ("cycle.yaml", "5:24", "reporting cycle helper -> writer -> helper", 1),
    ("reports_to_self.yaml", "6:17", "'helper' reports to itself", 1),
    ("unknown_tool.yaml", "5:34", "unknown tool 'workspace.delete'; known tools: workspace.", 1),
    ("bad_tool_ref.yaml", "5:13", "cannot import module 'qapten_no_such_module'", 1),
    ("bad_autonomy_level.yaml", "6:13", "'auto', 'approve' or 'human' (got 'sometimes')", 1),
    ("autonomy_tool_not_in_tools.yaml", "7:16", "is not one of the tools of role 'lead'", 1),
    ("missing_prompt.yaml", "5:13", "prompt file 'nowhere.md' not found", 1),
    ("prompt_escape.yaml", "5:13", "is outside the chart's folder", 1),
    ("prompt_absolute.yaml", "5:13", "'/etc/hostname' is outside the chart's folder", 1),
    ("wrong_type_max_steps.yaml", "5:16", "max_steps: input should be a valid integer", 1),
    ("tools_not_list.yaml", "5:12", "tools: input should be a list", 1),
    ("unknown_provider.yaml", "3:8", "'gpt-4o'; choose one of local, openai, scripted", 1),
    ("secret_in_model.yaml", "6:3", "name the environment variable that holds it", 1),
    ("non_string_key.yaml", "5:3", "key 'yes' is read as bool, not a string", 1),
    ("missing_name.yaml", "2:1", "missing key 'name'", 1),
]


def problems_of(path: Path) -> list[str]:
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_file(path)
    return [str(problem) for problem in caught.value.problems]


def test_default_chart_loads() -> None:
    chart = OrgChart.from_file(ORG)

    assert chart.name == "Brightness"
    assert list(chart.roles) == ["ceo", "cto", "marketcom", "support"]
    assert chart.root.name == "ceo"
    assert [role.name for role in chart.reports("ceo")] == ["cto", "marketcom", "support"]
    assert chart.reports("cto") == ()
    assert chart.manager("cto") == chart.root
    assert chart.manager("ceo") is None
    assert chart.model == ModelRef(provider="local")
    assert chart.source == ORG
    for name, role in chart.roles.items():
        assert role.name == name
        assert role.prompt == ORG.parent / f"{name}.md"
        assert chart.prompt_text(name).strip()


def test_default_chart_autonomy() -> None:
    roles = OrgChart.from_file(ORG).roles

    marketcom, cto = roles["marketcom"].autonomy, roles["cto"].autonomy
    assert marketcom.level_for(ActKind.ACTION, "workspace.write_file") is AutonomyLevel.AUTO
    assert marketcom.level_for(ActKind.DELIVERABLE) is AutonomyLevel.APPROVE
    assert cto.level_for(ActKind.ACTION, "workspace.write_file") is AutonomyLevel.APPROVE
    assert cto.level_for(ActKind.DELIVERABLE) is AutonomyLevel.AUTO
    assert roles["ceo"].autonomy.level_for(ActKind.PLAN) is AutonomyLevel.APPROVE
    for role in roles.values():
        assert role.autonomy.level_for(ActKind.QUESTION) is AutonomyLevel.HUMAN


def test_level_for_defaults() -> None:
    per_tool = Autonomy(action={"a": AutonomyLevel.AUTO})

    assert per_tool.level_for(ActKind.ACTION, "a") is AutonomyLevel.AUTO
    assert per_tool.level_for(ActKind.ACTION, "b") is AutonomyLevel.APPROVE
    assert per_tool.level_for(ActKind.ACTION) is AutonomyLevel.APPROVE
    assert Autonomy().level_for(ActKind.PLAN) is AutonomyLevel.APPROVE
    assert Autonomy().level_for(ActKind.DELIVERABLE) is AutonomyLevel.AUTO
    assert Autonomy(action="human").level_for(ActKind.ACTION, "x") is AutonomyLevel.HUMAN


@pytest.mark.parametrize(("chart", "position", "fragment", "count"), INVALID_CHARTS)
def test_invalid_chart(chart: str, position: str, fragment: str, count: int) -> None:
    problems = problems_of(CHARTS / chart)

    assert problems[0].startswith(f"{CHARTS / chart}:{position}: "), problems
    assert fragment in problems[0], problems
    assert len(problems) == count, problems


def test_there_are_enough_invalid_charts() -> None:
    assert len(INVALID_CHARTS) >= 16
    tested = {chart for chart, *_ in INVALID_CHARTS}
    assert tested == {path.name for path in CHARTS.glob("*.yaml")}


def test_secret_is_not_echoed() -> None:
    problems = problems_of(CHARTS / "secret_in_model.yaml")

    assert "sk-not-a-real-key" not in "\n".join(problems)


def test_every_problem_is_collected() -> None:
    text = """\
name: Acme
extra: 1
roles:
  lead:
    tools: [workspace.nope]
    max_steps: 0
  helper: {reports_to: boss, prompt: lead.md}
  writer: {reports_to: writer, prompt: lead.md}
"""
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(text, source="org.yaml", base_dir=CHARTS)

    positions = [(p.line, p.column) for p in caught.value.problems]
    assert positions == [(2, 1), (5, 13), (6, 16), (7, 24), (8, 24)]
    assert all(p.file == "org.yaml" for p in caught.value.problems)


def test_aliases_and_merge_keys_resolve() -> None:
    text = """\
name: Acme
roles:
  lead:
    autonomy: &strict {plan: approve, action: human, deliverable: approve}
  helper:
    <<: &common {reports_to: lead, tools: [workspace.read_file]}
    autonomy: *strict
  writer:
    <<: *common
    max_steps: 5
"""
    chart = OrgChart.from_text(text, base_dir=CHARTS)

    assert chart.roles["helper"].autonomy == chart.roles["lead"].autonomy
    assert chart.roles["helper"].autonomy.action is AutonomyLevel.HUMAN
    assert chart.roles["writer"].reports_to == "lead"
    assert chart.roles["writer"].tools == ("workspace.read_file",)
    assert chart.roles["writer"].max_steps == 5
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(text.replace("reports_to: lead", "reports_to: boss"), base_dir=CHARTS)
    assert [(p.line, p.column) for p in caught.value.problems] == [(6, 30), (6, 30)]


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(OrgChartError, match="recursive alias"):
        OrgChart.from_text("name: &a [*a]\nroles: {lead: {}}\n", base_dir=CHARTS)


def test_unsafe_tag_is_refused() -> None:
    text = "name: !!python/object/apply:os.system [echo hacked]\nroles: {lead: {}}\n"
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(text, base_dir=CHARTS)

    assert str(caught.value.problems[0]).startswith("<string>:1:7: unsupported YAML tag")


def test_defaults() -> None:
    chart = OrgChart.from_text("name: Acme\nroles:\n  lead: {}\n", base_dir=CHARTS)
    lead = chart.roles["lead"]

    assert chart.model is None
    assert chart.max_steps == 200
    assert chart.source is None
    assert lead.title == "Lead"
    assert lead.prompt == CHARTS / "lead.md"
    assert (lead.tools, lead.model, lead.autonomy) == ((), None, Autonomy())
    assert (lead.max_revisions, lead.max_steps) == (3, 20)


def test_extra_tools_and_tool_references() -> None:
    text = "name: Acme\nroles:\n  lead: {tools: [send_mail, 'os.path:basename']}\n"

    with pytest.raises(OrgChartError, match="unknown tool 'send_mail'; known tools: "):
        OrgChart.from_text(text, base_dir=CHARTS)
    chart = OrgChart.from_text(text, base_dir=CHARTS, extra_tools=["send_mail"])
    assert chart.roles["lead"].tools == ("send_mail", "os.path:basename")


def test_from_dict_names_the_place() -> None:
    data = {"name": "Acme", "roles": {"lead": {"max_steps": "ten"}}}

    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_dict(data, base_dir=CHARTS)

    (problem,) = caught.value.problems
    assert str(problem).startswith("<dict>:0:0: roles.lead.max_steps: input should be")
    assert OrgChart.from_dict({"name": "Acme", "roles": {"lead": {}}}, base_dir=CHARTS).root.name


def test_direct_construction_checks_the_lines() -> None:
    with pytest.raises(ValidationError, match="no root"):
        OrgChart(
            name="Acme",
            roles={"a": Role(name="a", reports_to="b"), "b": Role(name="b", reports_to="a")},
        )
    with pytest.raises(ValidationError, match="a role's name is its key"):
        OrgChart(name="Acme", roles={"a": Role(name="b")})


def test_unknown_role_name_lists_the_roles() -> None:
    chart = OrgChart.from_file(ORG)

    with pytest.raises(KeyError, match="no role 'cfo'; roles: ceo, cto, marketcom, support"):
        chart.reports("cfo")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", ModelRef(provider="local")),
        ("local:smollm2", ModelRef(provider="local", name="smollm2")),
        ("openai:gpt-4o-mini", ModelRef(provider="openai", name="gpt-4o-mini")),
        ("openai:llama3:8b", ModelRef(provider="openai", name="llama3:8b")),
        ("scripted:script.json", ModelRef(provider="scripted", name="script.json")),
        (
            {"provider": "openai", "name": "m", "base_url": "http://h/v1", "api_key_env": "MY_KEY"},
            ModelRef(provider="openai", name="m", base_url="http://h/v1", api_key_env="MY_KEY"),
        ),
    ],
)
def test_model_ref_parse(spec: str | dict[str, str], expected: ModelRef) -> None:
    assert ModelRef.parse(spec) == expected


def test_model_ref_str() -> None:
    assert str(ModelRef.parse("openai:gpt-4o-mini")) == "openai:gpt-4o-mini"
    assert str(ModelRef.parse("local")) == "local"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4o", "unknown model provider 'gpt-4o' in 'gpt-4o'; choose one of local, openai"),
        ("openai", "provider 'openai' needs a model name"),
        ("scripted", "provider 'scripted' needs a script file"),
        ({"provider": "local", "base_url": "http://h"}, "base_url is for provider 'openai' only"),
        ({"provider": "openai", "name": "m", "api_key": "sk-123"}, "with api_key_env"),
        ({"provider": "openai", "name": "m", "token": "t"}, "would put a secret in the chart"),
        ({"provider": "openai", "name": "m", "api_key_env": "sk-123"}, "not the key itself"),
        ({"provider": "anthropic", "name": "m"}, "'local', 'openai' or 'scripted'"),
    ],
)
def test_model_ref_parse_refuses(spec: str | dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        ModelRef.parse(spec)

    assert "sk-123" not in str(caught.value)

"""Hostile org charts: each is refused with FILE:LINE:COL problems and no traceback, quickly, in
little memory, and before anything starts; no generated chart crashes the loader with anything
but `OrgChartError`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from qapten.cli import app
from qapten.errors import OrgChartError
from qapten.orgchart import OrgChart
from qapten.yaml_source import MAX_CHART_BYTES
from tests.test_orgchart import CHARTS, INVALID_CHARTS, ORG, ROOT

HOSTILE = CHARTS / "hostile"
LOAD_SECONDS = 2.0
"""Longest a hostile chart may take to be refused (the worst measured: ~0.3 s)."""
PEAK_BYTES = 50_000_000
"""Most memory the loader may allocate refusing one (the worst measured: ~8 MB)."""

# (chart file in tests/charts/hostile, "line:column" of the first problem, a fragment of its
# message, number of problems), as INVALID_CHARTS in test_orgchart.py.
HOSTILE_CHARTS = [
    # YAML syntax errors
    ("syntax_tab_indent.yaml", "5:1", "found character '\\t' that cannot start any token", 1),
    ("syntax_unclosed_flow.yaml", "6:9", "(while parsing a flow sequence at line 5)", 1),
    (
        "syntax_unclosed_quote.yaml",
        "5:1",
        "end of stream (while scanning a quoted scalar at line 2)",
        1,
    ),
    ("syntax_bad_indent.yaml", "5:3", "YAML syntax error: expected <block end>", 1),
    ("syntax_undefined_alias.yaml", "5:15", "found undefined alias 'strict'", 1),
    ("syntax_two_documents.yaml", "5:1", "expected a single document in the stream", 1),
    ("syntax_bad_escape.yaml", "2:13", "found unknown escape character 'q'", 1),
    ("syntax_duplicate_anchor.yaml", "5:40", "duplicate anchor 'a'; first occurrence at line 4", 1),
    # wrong types, everywhere
    (
        "type_name_list.yaml",
        "2:7",
        "name: input should be a valid string (got ['Acme', 'Evil'])",
        1,
    ),
    ("type_roles_list.yaml", "4:3", "roles: input should be a mapping", 1),
    ("type_role_scalar.yaml", "4:9", "roles.lead: input should be a mapping (got 'the boss')", 1),
    ("type_reports_to_list.yaml", "5:24", "reports_to: input should be a valid string", 1),
    ("type_autonomy_number.yaml", "4:20", "autonomy: input should be a mapping (got 11)", 1),
    ("type_max_revisions_text.yaml", "4:25", "input should be a valid integer (got '3')", 1),
    ("type_budget_bool.yaml", "3:9", "budget: input should be a valid integer (got True)", 1),
    ("type_title_null.yaml", "4:17", "title: input should be a valid string (got None)", 1),
    ("type_mcp_servers_list.yaml", "3:14", "mcp_servers: input should be a mapping", 1),
    ("type_prompt_number.yaml", "4:18", "prompt: input should be a path, as text (got 42)", 1),
    ("type_tools_mapping.yaml", "5:12", "tools: input should be a list", 1),
    ("type_model_list.yaml", "3:8", "model: input should be a mapping", 1),
    # scalars that look like a standard type and are not one
    ("scalar_bad_date.yaml", "2:7", "cannot read '2024-02-30' as timestamp: day is out of", 1),
    ("scalar_bad_int_tag.yaml", "3:12", "cannot read 'ten' as int", 1),
    ("scalar_huge_int.yaml", "3:12", "as int: Exceeds the limit (4300 digits)", 1),
    # alias bombs: refused at the alias that crosses the limit, never expanded
    ("alias_bomb.yaml", "7:14", "alias *lol3 takes the chart past 10,000 values", 1),
    ("alias_bomb_mapping.yaml", "9:73", "alias *x2 takes the chart past 10,000 values", 1),
    ("alias_deep.yaml", "6:17", "nested more than 32 levels deep (aliases expanded)", 1),
    ("alias_recursive.yaml", "4:9", "roles.lead.tools[0]: recursive alias", 1),
    # tags that are not plain YAML: refused, never constructed
    ("tag_python_object.yaml", "2:7", "unsupported YAML tag '!!python/object:os.system'", 1),
    ("tag_python_apply.yaml", "5:12", "tag '!!python/object/apply:subprocess.check_output'", 1),
    ("tag_python_name.yaml", "4:18", "unsupported YAML tag '!!python/name:os.system'", 1),
    ("tag_local.yaml", "4:17", "unsupported YAML tag '!Ref'", 1),
    ("tag_set.yaml", "4:17", "unsupported YAML tag '!!set'", 1),
    # unicode tricks: the odd characters shown escaped and named
    ("unicode_homoglyph_role.yaml", "5:3", "'le\\u0430d' (U+0430 CYRILLIC SMALL LETTER A)", 1),
    ("unicode_zero_width_role.yaml", "5:3", "'hel\\u200dper' (U+200D ZERO WIDTH JOINER)", 1),
    ("unicode_rtl_override_role.yaml", "5:3", "'\\u202erepleh' (U+202E RIGHT-TO-LEFT OVERRIDE)", 1),
    ("unicode_fullwidth_role.yaml", "5:3", "(U+FF48 FULLWIDTH LATIN SMALL LETTER H, U+FF45", 1),
    ("unicode_homoglyph_reports_to.yaml", "5:24", "reports_to 'le\\u0430d' (U+0430 CYRILLIC", 1),
    ("unicode_rtl_reports_to.yaml", "5:24", "reports_to 'lead\\u202e' (U+202E RIGHT-TO-LEFT", 1),
    ("unicode_homoglyph_tool.yaml", "4:18", "unknown tool 'workspace.write_fil\\u0435' (U+0435", 1),
    ("unicode_homoglyph_key.yaml", "4:10", "unknown key 'reports_t\\u043e' (U+043E CYRILLIC", 1),
    ("control_char.yaml", "4:22", "character U+001B is not allowed in YAML", 1),
    # prompt paths leading out of the chart's folder
    ("prompt_etc_passwd.yaml", "4:18", "'../../../../../../etc/passwd' is outside the chart's", 1),
    ("prompt_dotdot_inside.yaml", "4:18", "is outside the chart's folder", 1),
    ("prompt_nul.yaml", "4:18", "'lead.md\\x00.txt' (U+0000) cannot be read", 1),
    ("prompt_home.yaml", "4:18", "prompt file '~/.ssh/id_rsa' not found", 1),
    # duplicate keys, which plain YAML keeps silently (the last wins)
    ("duplicate_top_key.yaml", "5:1", "duplicate key 'name' (first at line 2)", 1),
    ("duplicate_role_key.yaml", "7:5", "duplicate key 'reports_to' (first at line 6)", 1),
    # files that are not UTF-8 YAML text
    ("non_utf8.yaml", "2:11", "not UTF-8 text (invalid continuation byte: byte e9)", 1),
    ("utf16.yaml", "1:1", "not UTF-8 text (invalid start byte: byte ff)", 1),
    ("nul_byte.yaml", "4:19", "character U+0000 is not allowed in YAML: remove it", 1),
    ("comments_only.yaml", "1:1", "this one is empty", 1),
]


def _huge(folder: Path) -> Path:
    """A 50 MiB chart: a valid start, then comments."""
    path = folder / "huge.yaml"
    start, line = "name: Acme\nroles:\n  lead: {}\n", "# " + "padding " * 12 + "\n"
    lines, rest = divmod(50 * 2**20 - len(start), len(line))
    path.write_text(start + line * lines + "#" * (rest - 1) + "\n", encoding="utf-8")
    assert path.stat().st_size == 50 * 2**20
    return path


def _folder(folder: Path) -> Path:
    (folder / "org.yaml").mkdir()
    return folder / "org.yaml"


def _deep(folder: Path) -> Path:
    path = folder / "deep.yaml"
    nested = "[" * 10_000 + "]" * 10_000
    path.write_text(f"name: Acme\nroles:\n  lead: {{tools: {nested}}}\n", encoding="utf-8")
    return path


def _flood(folder: Path) -> Path:
    """Just under the size limit: 300,000 tiny values."""
    path = folder / "flood.yaml"
    values = ", ".join(["0"] * 300_000)
    path.write_text(f"name: Acme\nroles:\n  lead: {{tools: [{values}]}}\n", encoding="utf-8")
    assert path.stat().st_size < MAX_CHART_BYTES
    return path


def _comments(folder: Path) -> Path:
    """Just under the size limit: 10,000 lines of comments, then a mistake at the very end."""
    path = folder / "comments.yaml"
    comments = ("# " + "x" * 97 + "\n") * 9_990
    path.write_text(f"name: Acme\n{comments}roles: 1\n", encoding="utf-8")
    assert path.stat().st_size < MAX_CHART_BYTES
    return path


def _outside(folder: Path) -> Path:
    outside = folder.parent / f"{folder.name}-outside"
    outside.mkdir()
    (outside / "secret.md").write_text("the secret\n", encoding="utf-8")
    return outside


def _symlink_file(folder: Path) -> Path:
    (folder / "lead.md").symlink_to(_outside(folder) / "secret.md")
    path = folder / "org.yaml"
    path.write_text("name: Acme\nroles:\n  lead: {}\n", encoding="utf-8")
    return path


def _symlink_folder(folder: Path) -> Path:
    (folder / "prompts").symlink_to(_outside(folder), target_is_directory=True)
    path = folder / "org.yaml"
    path.write_text("name: Acme\nroles:\n  lead: {prompt: prompts/secret.md}\n", encoding="utf-8")
    return path


# Charts made in a test's folder: too big to commit, or links that depend on the machine.
GENERATED: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "huge_50mb": (_huge, "1:1", "is 52,428,800 bytes, over the limit of 1,000,000 bytes (1 MB)"),
    "folder": (_folder, "1:1", "is a folder, not a chart file"),
    "deep_10000": (_deep, "3:46", "nested more than 32 levels deep"),
    "flood_under_1mb": (_flood, "3:29991", "the chart holds more than 10,000 values"),
    "comments_under_1mb": (_comments, "9992:8", "roles: input should be a mapping (got 1)"),
    "symlink_file": (_symlink_file, "3:9", "prompt 'lead.md' is a link to "),
    "symlink_folder": (_symlink_folder, "3:18", "prompt 'prompts/secret.md' is a link to "),
}
PROBLEM_LINE = re.compile(r"^.+:[1-9][0-9]*:[1-9][0-9]*: \S")


@pytest.fixture(params=sorted(GENERATED))
def generated(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, str]:
    make, position, fragment = GENERATED[request.param]
    folder = tmp_path / "chart"
    folder.mkdir()
    return make(folder), position, fragment


def refused(path: Path) -> list[str]:
    """The problems of the chart at `path`, checked to come fast, placed, and one line each."""
    started = time.perf_counter()
    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_file(path)
    assert time.perf_counter() - started < LOAD_SECONDS
    problems = [str(problem) for problem in caught.value.problems]
    for problem in problems:
        assert problem.startswith(f"{path}:"), problems
        assert PROBLEM_LINE.match(problem) and problem.isprintable(), problems
    return problems


@pytest.mark.parametrize(("chart", "position", "fragment", "count"), HOSTILE_CHARTS)
def test_hostile_chart(chart: str, position: str, fragment: str, count: int) -> None:
    problems = refused(HOSTILE / chart)

    assert problems[0].startswith(f"{HOSTILE / chart}:{position}: "), problems
    assert fragment in problems[0], problems
    assert len(problems) == count, problems


def test_generated_hostile_chart(generated: tuple[Path, str, str]) -> None:
    path, position, fragment = generated
    problems = refused(path)

    assert problems[0].startswith(f"{path}:{position}: "), problems
    assert fragment in problems[0], problems
    assert len(problems) == 1, problems
    assert "the secret" not in problems[0]  # a prompt outside the folder is never read


def test_the_corpus_is_complete() -> None:
    listed = {chart for chart, *_ in HOSTILE_CHARTS}
    assert listed == {path.name for path in HOSTILE.glob("*.yaml")}
    assert len(HOSTILE_CHARTS) + len(GENERATED) >= 40
    assert len(INVALID_CHARTS) + len(HOSTILE_CHARTS) + len(GENERATED) >= 80


def test_a_python_tag_is_never_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = "name: !!python/object/apply:builtins.exec [\"open('hacked', 'w')\"]\nroles: {a: {}}\n"

    with pytest.raises(OrgChartError, match="unsupported YAML tag"):
        OrgChart.from_text(text, base_dir=HOSTILE)
    assert not (tmp_path / "hacked").exists()


def test_a_huge_text_is_refused_before_parsing() -> None:
    text = "name: Acme\nroles: {lead: {}}\n" + "#" * (50 * 2**20)

    with pytest.raises(OrgChartError) as caught:
        OrgChart.from_text(text, source="big.yaml", base_dir=HOSTILE)
    assert str(caught.value).startswith("big.yaml:1:1: the chart is 52,428,829 characters")
    many_bytes = "name: " + "é" * (MAX_CHART_BYTES // 2) + "\nroles: {lead: {}}\n"
    with pytest.raises(OrgChartError, match="bytes, over the limit of 1,000,000 bytes"):
        OrgChart.from_text(many_bytes, base_dir=HOSTILE)


def test_a_link_inside_the_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "lead.md").write_text("# Lead\n", encoding="utf-8")
    (tmp_path / "lead.md").symlink_to(tmp_path / "prompts" / "lead.md")
    (tmp_path / "org.yaml").write_text("name: Acme\nroles:\n  lead: {}\n", encoding="utf-8")

    assert OrgChart.from_file(tmp_path / "org.yaml").prompt_text("lead") == "# Lead\n"


# --- nothing starts: `qapten validate` and `qapten serve` report, exit 2, and make nothing

runner = CliRunner()


def invoke(*args: str) -> Result:
    unset: dict[str, str | None] = {key: None for key in os.environ if key.startswith("QAPTEN_")}
    result = runner.invoke(app, list(args), env=unset)
    assert "Traceback" not in result.output
    assert result.exc_info is None or result.exc_info[0] is SystemExit, result.exc_info
    return result


def assert_reported(result: Result, chart: str, position: str, fragment: str = "") -> None:
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and lines[0].startswith(f"{chart}:{position}: "), lines
    assert fragment in lines[0], lines
    assert all(PROBLEM_LINE.match(line) for line in lines), lines


@pytest.mark.parametrize(("chart", "position", "fragment", "count"), HOSTILE_CHARTS)
def test_validate_and_serve_report_and_start_nothing(
    chart: str,
    position: str,
    fragment: str,
    count: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    shown = f"tests/charts/hostile/{chart}"
    data_dir = tmp_path / "data"

    validated = invoke("validate", shown)
    assert_reported(validated, shown, position, fragment)
    assert len(validated.stderr.splitlines()) == count
    assert_reported(invoke("serve", shown, "--data-dir", str(data_dir)), shown, position, fragment)
    assert not data_dir.exists()


def test_generated_charts_start_nothing(generated: tuple[Path, str, str], tmp_path: Path) -> None:
    path, position, _ = generated
    data_dir = tmp_path / "data"

    assert_reported(invoke("validate", str(path)), str(path), position)
    assert_reported(invoke("serve", str(path), "--data-dir", str(data_dir)), str(path), position)
    assert not data_dir.exists()


MEASURE = """
import json, resource, sys, time, tracemalloc
from pathlib import Path
from qapten.errors import OrgChartError
from qapten.orgchart import OrgChart

scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
started = time.perf_counter()
try:
    OrgChart.from_file(Path(sys.argv[1]))
    first = "loaded"
except OrgChartError as exc:
    first = str(exc.problems[0])
seconds = time.perf_counter() - started
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before
tracemalloc.start()
try:
    OrgChart.from_file(Path(sys.argv[1]))
except OrgChartError:
    pass
peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"first": first, "seconds": seconds, "rss_growth": grown, "peak": peak}))
"""


def measured(path: Path) -> dict[str, Any]:
    """Time, growth of the peak RSS, and peak traced allocations of loading `path`, each in a
    fresh process (a memory peak in this one would hide the loader's)."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


@pytest.mark.parametrize("chart", ["alias_bomb.yaml", "alias_bomb_mapping.yaml", "alias_deep.yaml"])
def test_alias_bombs_cost_little(chart: str) -> None:
    figures = measured(HOSTILE / chart)

    assert "values" in figures["first"] or "levels deep" in figures["first"]
    assert figures["seconds"] < LOAD_SECONDS, figures
    assert figures["peak"] < PEAK_BYTES, figures
    assert figures["rss_growth"] < PEAK_BYTES, figures


def test_a_50_mb_chart_costs_little(tmp_path: Path) -> None:
    figures = measured(_huge(tmp_path))

    assert "over the limit of 1,000,000 bytes" in figures["first"]
    assert figures["seconds"] < LOAD_SECONDS, figures
    assert figures["peak"] < PEAK_BYTES, figures
    assert figures["rss_growth"] < PEAK_BYTES, figures


@pytest.mark.slow
def test_serve_in_its_own_process_refuses_a_bomb_before_making_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for chart in (HOSTILE / "alias_bomb.yaml", _huge(tmp_path)):
        env = {key: value for key, value in os.environ.items() if not key.startswith("QAPTEN_")}
        done = subprocess.run(
            [sys.executable, "-m", "qapten.cli", "serve", str(chart), "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.startswith(f"{chart}:"), done.stderr
        assert len(done.stderr.splitlines()) == 1
        assert not data_dir.exists()


# --- generated charts: the loader returns a chart or raises OrgChartError, nothing else


def _keys(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        yield from schema.get("properties", {})
        for value in schema.values():
            yield from _keys(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _keys(value)


KEYS = sorted({*_keys(OrgChart.json_schema()), "<<", "name", "roles"})
TOP_KEYS = sorted(set(OrgChart.json_schema()["properties"]) - {"name", "roles"})
WORDS = [
    *("ceo", "cto", "marketcom", "support", "lead", "ceo.md", "../ceo.md", "/etc/passwd", ""),
    *("workspace.write_file", "notes.add", "os.path:basename", "x:y", "local", "openai:m"),
    *("scripted:s.json", "auto", "approve", "human", "plan", "action", "null", "yes", "1e400"),
    *("c\u0435o", "ce\u200do", "ceo\u202e", "\x00", "\ud800", "${HOME}", "http://h/mcp", "-1"),
]
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(WORDS)
    | st.text(max_size=12)
)
DATA = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
NAMES = st.sampled_from(WORDS) | st.text(max_size=10)
CHARTS_DATA = st.fixed_dictionaries(
    {
        "name": SCALARS,
        "roles": st.dictionaries(
            NAMES, st.dictionaries(st.sampled_from(KEYS), DATA, max_size=6), max_size=5
        ),
    },
    optional={key: DATA for key in TOP_KEYS},
)
TOKENS = [
    *("name", "roles", "lead", "ceo", "reports_to", "tools", "autonomy", ":", ": ", " ", "  "),
    *("\n", "\r\n", "\t", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "? "),
    *("!!python/object:os.system ", "!!str ", "!!int ", "!!binary ", "!!set ", "!x ", "|", ">"),
    *("'", '"', "# ", "%YAML 1.1\n", "%TAG ! tag:x,1:\n", "---\n", "...\n", "\\", "\\0", "0x1"),
    *("1e999", "2024-02-30", "~", "null", "yes", "\x00", "\x1b", "\u202e", "\u200d", "\ufeff"),
    *("\ud800", "\x85", "\u2028", "\u0430", "é", "9" * 5000),
]
SOUP = st.lists(st.sampled_from(TOKENS) | st.text(max_size=3), max_size=60).map("".join)
DEFAULT_TEXT = ORG.read_text(encoding="utf-8")
PROPERTY = settings(
    max_examples=300,
    deadline=timedelta(seconds=5),
    database=None,  # nothing written in the checkout; a failure prints how to reproduce it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def loads_or_refuses(text: str) -> None:
    try:
        OrgChart.from_text(text, source="org.yaml", base_dir=ORG.parent)
    except OrgChartError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == "org.yaml"
            assert problem.line >= 1 and problem.column >= 1, problem
            assert problem.message and problem.message.isprintable(), problem


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if not isinstance(value, dict | list):
        return
    for key, child in value.items() if isinstance(value, dict) else enumerate(value):
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _mutate(draw: st.DataObject, chart: dict[str, Any]) -> None:
    """Drop a key, change a value's type, or rename a key, a few times, anywhere in `chart`."""
    for _ in range(draw.draw(st.integers(1, 4))):
        paths = list(_paths(chart))
        if not paths:
            return
        *where, key = draw.draw(st.sampled_from(paths))
        parent: Any = chart
        for part in where:
            parent = parent[part]
        change = draw.draw(st.sampled_from(["drop", "replace", "wrap", "rename"]))
        if change == "drop":
            del parent[key]
        elif change == "replace":
            parent[key] = draw.draw(DATA)
        elif change == "wrap":
            parent[key] = draw.draw(st.sampled_from([[parent[key]], {"x": parent[key]}]))
        elif isinstance(parent, dict):
            parent[draw.draw(NAMES)] = parent.pop(key)


@pytest.mark.slow
@PROPERTY
@given(CHARTS_DATA)
def test_generated_charts_never_crash_the_loader(chart: dict[str, Any]) -> None:
    loads_or_refuses(yaml.safe_dump(chart, sort_keys=False))


@pytest.mark.slow
@PROPERTY
@given(st.data())
def test_mutated_default_charts_never_crash_the_loader(draw: st.DataObject) -> None:
    chart = yaml.safe_load(DEFAULT_TEXT)
    _mutate(draw, chart)
    loads_or_refuses(yaml.safe_dump(chart, sort_keys=False, allow_unicode=draw.draw(st.booleans())))


@PROPERTY
@given(SOUP)
def test_yaml_token_soup_never_crashes_the_loader(text: str) -> None:
    loads_or_refuses(text)


@PROPERTY
@given(st.integers(0, len(DEFAULT_TEXT)), st.integers(0, 40), SOUP)
def test_spliced_default_text_never_crashes_the_loader(at: int, cut: int, insert: str) -> None:
    loads_or_refuses(DEFAULT_TEXT[:at] + insert + DEFAULT_TEXT[at + cut :])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bytes")


@PROPERTY
@given(st.binary(max_size=300) | SOUP.map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_any_bytes_in_a_file_never_crash_the_loader(scratch: Path, raw: bytes) -> None:
    path = scratch / "org.yaml"
    path.write_bytes(raw)
    try:
        OrgChart.from_file(path)
    except OrgChartError as exc:
        assert all(problem.message.isprintable() for problem in exc.problems), exc.problems

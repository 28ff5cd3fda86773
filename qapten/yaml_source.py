"""YAML text → plain Python data, keeping where every value came from.

PyYAML's safe loader forgets positions and silently keeps the last of two equal keys. Here the
text is composed once into a node tree (safely: only standard tags), the data is built from that
tree, and a path of keys such as ``("roles", "cto", "tools", 1)`` can be turned back into the
1-based line and column of its node. Mistakes in the YAML itself (duplicate keys, keys that are
not strings, unknown tags, recursive aliases) are collected, not raised one at a time.

Hostile text is refused before it can cost much, each time with a located `OrgChartError`: a chart
above `MAX_CHART_BYTES`, nesting deeper than `MAX_DEPTH`, more than `MAX_VALUES` values once every
alias is expanded ("billion laughs"), characters YAML forbids (NUL...), and tags that are not
plain YAML (``!!python/object``...: never constructed, let alone run).

Validation errors are placed the same way: `issue_of` turns one pydantic error into an `Issue`
(a path in the data and a message a user can act on); validators raise `located_error` to give
their own message and to point below the value they check.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.constructor import SafeConstructor
from yaml.error import Mark, MarkedYAMLError
from yaml.events import AliasEvent, Event, NodeEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qapten.errors import ChartProblem, OrgChartError

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

KeyPath = tuple[str | int, ...]
"""Keys and indexes from the document's root down to one value."""

# Limits on what a chart may cost to read. A real chart is a few kilobytes, under ten levels deep
# and a few hundred values. The pure-Python parser (PyYAML's C one has other messages) reads some
# 50,000 values or 2 MB of comments a second: within the limits a load stays well under a second.
MAX_CHART_BYTES = 1_000_000
"""Largest chart file or text, in bytes of UTF-8 (1 MB)."""
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists, aliases expanded (keeps every recursion shallow)."""
MAX_VALUES = 10_000
"""Most values (scalars, mappings, lists) in a chart, counting an alias's value at each use."""


@dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML document: its data, its node tree, and the mistakes found while building."""

    file: str
    root: Node | None
    data: Any
    problems: tuple[ChartProblem, ...] = ()

    def problem(self, path: KeyPath, message: str, *, at_key: bool = False) -> ChartProblem:
        """A problem placed on the node at `path` (on its key when `at_key`).

        A path that leaves the tree stops at the deepest node it reached.
        """
        node, key_node = self.root, None
        for part in path:
            pair = _child(node, part)
            if pair is None:
                break
            key_node, node = pair
        target = key_node if at_key and key_node is not None else node
        return _problem_at(self.file, target, message)


def read_yaml_file(path: Path) -> str:
    """The text of the chart file at `path`: `OSError` if it cannot be read, `OrgChartError` at
    ``FILE:1:1`` (or at the bad byte) when it is a folder, too large, or not UTF-8."""
    file = str(path)
    try:
        with path.open("rb") as handle:
            # Read one byte past the limit, never the whole of a huge file (or of /dev/zero).
            raw = handle.read(MAX_CHART_BYTES + 1)
            size = max(os.fstat(handle.fileno()).st_size, len(raw))
    except IsADirectoryError as exc:
        msg = "is a folder, not a chart file: name the YAML file in it"
        if (path / "org.yaml").is_file():
            msg += f" ({path / 'org.yaml'}?)"
        raise OrgChartError([ChartProblem(file, 1, 1, msg)]) from exc
    if len(raw) > MAX_CHART_BYTES:
        raise OrgChartError([ChartProblem(file, 1, 1, _too_large(f"{size:,} bytes"))])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        msg = f"not UTF-8 text ({exc.reason}: byte {bad}): save the chart as UTF-8"
        raise OrgChartError([ChartProblem(file, line, column, msg)]) from exc


def _too_large(size: str) -> str:
    return (
        f"the chart is {size}, over the limit of {MAX_CHART_BYTES:,} bytes "
        f"({MAX_CHART_BYTES / 1e6:g} MB): "
        "is this the right file?"
    )


def parse_yaml(text: str, *, file: str) -> YamlDocument:
    """Parse one YAML document; raise `OrgChartError` when the text is not YAML at all, or
    exceeds a limit (`MAX_CHART_BYTES`, `MAX_DEPTH`, `MAX_VALUES`)."""
    _check_size(text, file)
    _check_characters(text, file)
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
    except _LimitExceeded as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise OrgChartError([ChartProblem(file, line, column, str(exc.problem))]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML syntax error: {exc.problem or exc.context}"
        if exc.problem and exc.context:
            # The context often starts elsewhere: an unclosed quote, the first of two anchors.
            start = exc.context_mark
            elsewhere = start is not None and start.line + 1 != line
            where = f" at line {start.line + 1}" if start is not None and elsewhere else ""
            msg += f" ({exc.context}{where})"
        raise OrgChartError([ChartProblem(file, line, column, msg)]) from exc
    except yaml.YAMLError as exc:  # not expected once the characters are checked
        msg = f"cannot read the YAML: {' '.join(str(exc).split())}"
        raise OrgChartError([ChartProblem(file, 1, 1, msg)]) from exc
    finally:
        loader.dispose()
    if root is None:
        return YamlDocument(file, None, None)
    builder = _Builder(file)
    data = builder.build(root, ())
    return YamlDocument(file, root, data, tuple(builder.problems))


def _check_size(text: str, file: str) -> None:
    # Counting characters first spares encoding a huge text; a character is 1 to 4 bytes.
    if len(text) > MAX_CHART_BYTES:
        size = f"{len(text):,} characters"
    elif (size_in_bytes := len(text.encode("utf-8", "surrogatepass"))) > MAX_CHART_BYTES:
        size = f"{size_in_bytes:,} bytes"
    else:
        return
    raise OrgChartError([ChartProblem(file, 1, 1, _too_large(size))])


def _check_characters(text: str, file: str) -> None:
    """`OrgChartError` at the first character YAML forbids (NUL, most controls, lone surrogates),
    named: PyYAML's own error gives only an offset in the text."""
    found = yaml.SafeLoader.NON_PRINTABLE.search(text)
    if found is None:
        return
    start = found.start()
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    msg = f"character {_char_name(found.group())} is not allowed in YAML: remove it"
    raise OrgChartError([ChartProblem(file, line, column, msg)])


class _LimitExceeded(MarkedYAMLError):
    """The document is too deep or too big; `problem` says which limit, `problem_mark` where."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing nodes under `MAX_DEPTH` and `MAX_VALUES`.

    PyYAML composes recursively (10,000 nested ``[`` end in a `RecursionError`) and an alias
    shares its node, so a tiny document can stand for a billion values once expanded: anything
    walking it (validation, repr, a dump) would take hours. Each anchored node's expanded size and
    height is remembered, so that each use of its alias counts in full without expanding it.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0  # of the node being composed
        self._deepest = 0  # deepest level reached in the current subtree
        self._values = 0  # values so far, aliases expanded
        self._anchored: dict[int, tuple[int, int]] = {}  # id(node) -> (values, height)

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Event = self.peek_event()  # type: ignore[no-untyped-call]
        mark = event.start_mark if isinstance(event.start_mark, Mark) else None
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            values, height = self._anchored.get(id(node), (1, 1))  # (1, 1): a recursive alias
            self._count(values, self._depth + height, mark, alias=event.anchor)
            return node
        values_before, outer_deepest = self._values, self._deepest
        self._depth += 1
        self._deepest = self._depth
        self._count(1, self._depth, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, NodeEvent) and event.anchor is not None:
            self._anchored[id(node)] = (self._values - values_before, self._deepest - self._depth)
        self._deepest = max(self._deepest, outer_deepest)
        return node

    def _count(self, values: int, depth: int, mark: Mark | None, alias: str | None = None) -> None:
        self._values += values
        self._deepest = max(self._deepest, depth)
        if depth > MAX_DEPTH:
            msg = f"nested more than {MAX_DEPTH} levels deep (aliases expanded): flatten it"
            raise _LimitExceeded(problem=msg, problem_mark=mark)
        if self._values > MAX_VALUES and alias is not None:
            msg = (
                f"alias *{alias} takes the chart past {MAX_VALUES:,} values (an alias counts its "
                "whole value at each use; an alias bomb?): use fewer aliases"
            )
            raise _LimitExceeded(problem=msg, problem_mark=mark)
        if self._values > MAX_VALUES:
            msg = f"the chart holds more than {MAX_VALUES:,} values: is this the right file?"
            raise _LimitExceeded(problem=msg, problem_mark=mark)


def _tag(tag: str) -> str:
    """A tag as it is written: ``!!python/object:os.system`` (quoted, any odd character escaped)."""
    return shown_name(tag.replace("tag:yaml.org,2002:", "!!", 1))


def _problem_at(file: str, node: Node | None, message: str) -> ChartProblem:
    # Any value quoted in the message (from any validator) must not hide characters or lines.
    message = printable(message)
    if node is None:
        return ChartProblem(file, 1, 1, message)
    mark = node.start_mark
    return ChartProblem(file, mark.line + 1, mark.column + 1, message)


def _merged(value: Node) -> list[Node]:
    """The mappings a merge key (`<<: *a` or `<<: [*a, *b]`) brings in."""
    return list(value.value) if isinstance(value, SequenceNode) else [value]


def _child(
    node: Node | None, part: str | int, seen: frozenset[int] = frozenset()
) -> tuple[Node, Node] | None:
    """The (key node, value node) that `part` selects in `node`, following merge keys."""
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item: Node = node.value[part]
        return item, item
    if not isinstance(node, MappingNode) or id(node) in seen:  # `&a {<<: *a}` merges itself
        return None
    seen |= {id(node)}
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(_merged(value_node))
        elif isinstance(key_node, ScalarNode) and key_node.value == part:
            return key_node, value_node
    for source in merged:
        pair = _child(source, part, seen)
        if pair is not None:
            return pair
    return None


@dataclass
class _Builder:
    """Builds Python data from nodes, recording problems instead of stopping at the first."""

    file: str
    problems: list[ChartProblem] = field(default_factory=list)
    # Aliases share one node: build it once (this also defuses "billion laughs" documents).
    _built: dict[int, Any] = field(default_factory=dict)
    _building: set[int] = field(default_factory=set)
    _constructor: SafeConstructor = field(default_factory=SafeConstructor)

    def report(self, node: Node, message: str) -> None:
        self.problems.append(_problem_at(self.file, node, message))

    def build(self, node: Node, path: KeyPath) -> Any:
        if id(node) in self._built:
            return self._built[id(node)]
        if id(node) in self._building:
            self.report(node, f"{describe(path)}recursive alias: a value contains itself")
            return None
        self._building.add(id(node))
        try:
            value = self._build_new(node, path)
        finally:
            self._building.discard(id(node))
        self._built[id(node)] = value
        return value

    def _build_new(self, node: Node, path: KeyPath) -> Any:
        if isinstance(node, ScalarNode):
            if node.tag not in SafeConstructor.yaml_constructors:  # !!python/name:..., !Local
                self.report(node, f"unsupported YAML tag {_tag(node.tag)}: write a plain value")
                return None
            try:
                return self._constructor.construct_object(node, deep=True)
            # A standard tag on a value that does not fit it (`!!int ten`, `2024-02-30`, an
            # integer of 5,000 digits) fails with whatever the constructor hits first.
            except (yaml.YAMLError, ValueError, LookupError, AttributeError, TypeError) as exc:
                kind = node.tag.rpartition(":")[2]
                reason = f"not a valid {kind}"
                if isinstance(exc, ValueError):  # its message says why; not Python's advice
                    reason = str(exc).partition("; ")[0]
                msg = f"cannot read {_shown(node.value)} as {kind}: {reason} (quote it if text)"
                self.report(node, msg)
                return None
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            msg = f"unsupported YAML tag {_tag(node.tag)}: use plain mappings and lists"
            self.report(node, msg)
            return None
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        return self._build_mapping(node, path)

    def _build_mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        merged: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(_merged(value_node))
                continue
            key = self.build(key_node, path) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str):
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a mapping or list"
                kind = type(key).__name__ if isinstance(key_node, ScalarNode) else "a collection"
                msg = f"key {shown!r} is read as {kind}, not a string: quote it, or rename it"
                self.report(key_node, msg)
                continue
            if key in first_seen:
                line = first_seen[key].start_mark.line + 1
                msg = f"{describe(path)}duplicate key {shown_name(key)} (first at line {line}): "
                msg += "keep only one"
                self.report(key_node, msg)
                continue
            first_seen[key] = key_node
            result[key] = self.build(value_node, (*path, key))
        # Merged mappings (`<<: *defaults`) only fill in keys the mapping does not set itself.
        for source in merged:
            built = self.build(source, path)
            if not isinstance(built, dict):
                self.report(source, "a merge key '<<' takes a mapping or a list of mappings")
                continue
            for key, value in built.items():
                result.setdefault(key, value)
        return result


class Issue(NamedTuple):
    """A problem found in data, before it is placed in a file."""

    path: KeyPath
    message: str
    at_key: bool = False


_LOCATED = "located"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_MESSAGES = {
    "tuple_type": "Input should be a list",
    "list_type": "Input should be a list",
    "set_type": "Input should be a list",
    "dict_type": "Input should be a mapping",
    "model_type": "Input should be a mapping",
    "path_type": "Input should be a path, as text",
}


def located_error(message: str, *, at: KeyPath = (), at_key: bool = False) -> PydanticCustomError:
    """A validation error with this exact message, placed `at` a path below the checked value."""
    # The message goes in as context, not as the template, so braces in user values stay verbatim.
    return PydanticCustomError(_LOCATED, "{message}", {"message": message, "at": at, "key": at_key})


def issue_of(
    error: ErrorDetails, data: Any, allowed_keys: Callable[[KeyPath], Collection[str]]
) -> Issue:
    """One pydantic error about `data` as an issue; `allowed_keys(path)` lists the keys a user
    may write in the mapping at `path` (for unknown keys)."""
    loc, ctx, kind = error["loc"], error.get("ctx", {}), error["type"]
    path = data_path(data, (*loc, *ctx.get("at", ())))
    if kind == "extra_forbidden":
        keys = ", ".join(allowed_keys(path[:-1]))
        name = shown_name(path[-1]) if isinstance(path[-1], str) else repr(path[-1])
        msg = f"{describe(path[:-1])}unknown key {name}; allowed keys: {keys}"
        return Issue(path, msg, at_key=True)
    if kind == "missing":
        return Issue(path, f"{describe(path)}missing key {loc[-1]!r}", at_key=bool(path))
    if kind == _LOCATED:
        message = ctx["message"]
    else:
        text = _PLAIN_MESSAGES.get(kind, error["msg"])
        message = f"{text[0].lower()}{text[1:]} (got {_shown(error['input'])})"
    at_key = ctx.get("key", False) or "[key]" in loc  # "[key]": a dict key failed validation
    return Issue(path, f"{describe(path)}{message}", at_key=at_key)


def data_path(data: Any, loc: Sequence[str | int]) -> KeyPath:
    """The part of `loc` that names real keys and indexes of `data`.

    Validation errors name places with extra markers (union members, validator names); those are
    not in the data and are skipped, so the result can be shown to a user and placed in the YAML.
    """
    found: list[str | int] = []
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list | tuple) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            continue
        found.append(part)
    return tuple(found)


def describe(path: KeyPath) -> str:
    """`roles.cto.tools[1]: `, to start a message about the value at `path`; empty at the top."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            text += f"[{part!a}]"
        else:
            text += f".{part}" if text else part
    return f"{text}: " if text else ""


def shown_name(name: str) -> str:
    """`name` quoted for a message, every character outside printable ASCII escaped and named, so
    that a look-alike (Cyrillic 'es' for a Latin 'c'), a zero-width joiner or a right-to-left
    override shows: ``'\\u0441to' (U+0441 CYRILLIC SMALL LETTER ES)``."""
    text = ascii(name)
    text = text if len(text) <= 80 else f"{text[:77]}..."
    odd = [char for char in dict.fromkeys(name) if not (char.isascii() and char.isprintable())]
    if odd:
        text += f" ({', '.join(map(_char_name, odd[:3]))}{', ...' if len(odd) > 3 else ''})"
    return text


def printable(text: str) -> str:
    """`text` with each character that does not print (NUL, a joiner, a bidi override) escaped."""
    return "".join(char if char.isprintable() else f"{char!a}"[1:-1] for char in text)


def _char_name(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}" if name else f"U+{ord(char):04X}"


def _shown(value: Any) -> str:
    # ascii(): a look-alike or invisible character in a wrong value shows as an escape.
    text = ascii(value)
    return text if len(text) <= 60 else f"{text[:57]}..."

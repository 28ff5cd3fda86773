"""YAML text → plain Python data, keeping where every value came from.

PyYAML's safe loader forgets positions and silently keeps the last of two equal keys. Here the
text is composed once into a node tree (safely: only standard tags), the data is built from that
tree, and a path of keys such as ``("roles", "cto", "tools", 1)`` can be turned back into the
1-based line and column of its node. Mistakes in the YAML itself (duplicate keys, keys that are
not strings, unknown tags, recursive aliases) are collected, not raised one at a time.

Validation errors are placed the same way: `issue_of` turns one pydantic error into an `Issue`
(a path in the data and a message a user can act on); validators raise `located_error` to give
their own message and to point below the value they check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import yaml
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from qapten.errors import ChartProblem, OrgChartError

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

KeyPath = tuple[str | int, ...]
"""Keys and indexes from the document's root down to one value."""


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


def parse_yaml(text: str, *, file: str) -> YamlDocument:
    """Parse one YAML document; raise `OrgChartError` when the text is not YAML at all."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = f"YAML syntax error: {exc.problem or exc}"
        if exc.context:
            msg += f" ({exc.context})"
        raise OrgChartError([ChartProblem(file, line, column, msg)]) from exc
    except yaml.YAMLError as exc:  # a reader error: bytes that are not text
        msg = f"cannot read the YAML: {exc}"
        raise OrgChartError([ChartProblem(file, 1, 1, msg)]) from exc
    if root is None:
        return YamlDocument(file, None, None)
    builder = _Builder(file)
    data = builder.build(root, ())
    return YamlDocument(file, root, data, tuple(builder.problems))


def _problem_at(file: str, node: Node | None, message: str) -> ChartProblem:
    if node is None:
        return ChartProblem(file, 1, 1, message)
    mark = node.start_mark
    return ChartProblem(file, mark.line + 1, mark.column + 1, message)


def _merged(value: Node) -> list[Node]:
    """The mappings a merge key (`<<: *a` or `<<: [*a, *b]`) brings in."""
    return list(value.value) if isinstance(value, SequenceNode) else [value]


def _child(node: Node | None, part: str | int) -> tuple[Node, Node] | None:
    """The (key node, value node) that `part` selects in `node`, following merge keys."""
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        item: Node = node.value[part]
        return item, item
    if not isinstance(node, MappingNode):
        return None
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(_merged(value_node))
        elif isinstance(key_node, ScalarNode) and key_node.value == part:
            return key_node, value_node
    for source in merged:
        pair = _child(source, part)
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
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                self.report(node, f"unsupported YAML value: {exc.problem or exc}")
                return None
        if node.tag not in (_MAP_TAG, _SEQ_TAG):
            self.report(node, f"unsupported YAML tag {node.tag!r}: use plain mappings and lists")
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
                msg = f"{describe(path)}duplicate key {key!r} (first at line {line}): keep only one"
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
        msg = f"{describe(path[:-1])}unknown key {path[-1]!r}; allowed keys: {keys}"
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
        if isinstance(part, int) or not _PLAIN_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return f"{text}: " if text else ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."

"""YAML configuration files validated by pydantic, with errors that name file, line and rule.

Used for the topic catalogue, routing policies and rule packs alike: a broken
file stops start-up with `FILE:LINE: rule RULE_ID: what is wrong`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


@dataclass
class ConfigFileError(Exception):
    """A configuration file is invalid; `str()` gives `file:line: [rule R: ]message`."""

    file: str
    line: int | None
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        rule = f" rule {self.rule}:" if self.rule else ""
        return f"{where}:{rule} {self.message}"


def _line_map(node: yaml.Node, loc: Loc, lines: dict[Loc, int], file: str) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                raise ConfigFileError(
                    file, key_node.start_mark.line + 1, None, f"duplicate key {key!r}"
                )
            seen.add(key)
            _line_map(value_node, (*loc, key), lines, file)
            lines[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*loc, index), lines, file)


def read_yaml(path: Path | str, text: str | None = None) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML safely; return the data and the line of every key and item."""
    file = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(file, None, None, f"cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigFileError(file, line, None, f"YAML syntax: {exc.problem}") from None
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines, file)
    return data, lines


def locate(data: Any, lines: dict[Loc, int], loc: Loc) -> tuple[int | None, str | None]:
    """Return the line of the deepest known part of `loc` and the id of the enclosing rule."""
    line: int | None = lines.get(())
    rule: str | None = None
    node = data
    for depth in range(len(loc)):
        prefix = loc[: depth + 1]
        if prefix in lines:
            line = lines[prefix]
        try:
            node = node[loc[depth]]
        except (KeyError, IndexError, TypeError):
            break
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            rule = node["id"]
    return line, rule


def load_model(path: Path | str, model: type[M], text: str | None = None) -> M:
    """Load a YAML file into `model`; raise ConfigFileError naming file, line and rule."""
    data, lines = read_yaml(path, text)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        line, rule = locate(data, lines, loc)
        where = ".".join(str(p) for p in loc) or "<root>"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigFileError(str(path), line, rule, f"{where}: {err['msg']}{more}") from None

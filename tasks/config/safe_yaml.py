"""Safe YAML: PyYAML's safe loader, refusing repeated keys and aliases that expand past
a bound or into themselves. Every reader of a YAML file a user writes uses
:func:`parse_yaml`."""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML loaders silently keep the last one)."""


class AliasBombError(yaml.YAMLError):
    """Aliases make the document expand past :data:`MAX_YAML_VALUES` values, or into
    itself: a "billion laughs" that would hang whatever walks the values."""


# The values a configuration file may hold once its aliases are expanded: a real
# params.yaml or farm.yaml holds a few hundred; nine nested aliases of nine ("billion
# laughs", 22 lines) expand to 9^9 and hang validation for minutes.
MAX_YAML_VALUES = 100_000


def _expanded_values(root: yaml.Node, limit: int = MAX_YAML_VALUES) -> int:
    """How many values the document under ``root`` holds once every alias is expanded
    (an alias is the node it names, counted again each time it is used); raises
    :class:`AliasBombError` past ``limit`` or on an alias inside the value it names."""
    sizes: dict[int, int] = {}  # id(node) -> its expanded size, each node counted once
    open_nodes: set[int] = set()  # the nodes on the current path: a repeat is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative: a deeply nested document must not exhaust Python's stack
        node, children_done = stack.pop()
        children = ([part for pair in node.value for part in pair]
                    if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limit:
                raise AliasBombError(
                    f"aliases expand the document to more than {limit:,} values (line "
                    f"{node.start_mark.line + 1}); write the values out or use fewer "
                    "nested aliases")
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise AliasBombError(f"an alias refers to the value it is part of (line "
                                 f"{node.start_mark.line + 1}); a configuration cannot "
                                 "contain itself")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key: `formats:` written
    twice would otherwise drop the first without a word. Keys merged in with ``<<`` may
    be overridden, as YAML intends. Aliases are bounded (:func:`_expanded_values`)
    before anything is built from the document."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_values(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not None:
                raise DuplicateKeyError(f"key {key!r} appears twice (lines {first} and {line}); "
                                        "YAML would keep only the last: remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str) -> Any:
    """A YAML document, as ``yaml.safe_load`` reads it but refusing repeated keys
    (:class:`DuplicateKeyError`) and aliases that expand past :data:`MAX_YAML_VALUES`
    values or into themselves (:class:`AliasBombError`). Every reader of a YAML file a
    user writes (params.yaml, farm.yaml, prefect.yaml) uses it."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass

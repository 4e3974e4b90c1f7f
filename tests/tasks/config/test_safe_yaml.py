"""Safe YAML (:mod:`tasks.config.safe_yaml`) in this process, where the loader tests'
alias bombs run in a child: the expanded size counted exactly (an alias counted again
each time it is used), the limit reached but not passed, the line each refusal names,
and repeated keys refused in every mapping but a merge's."""

from __future__ import annotations

import pytest
import yaml

from tasks.config.safe_yaml import (MAX_YAML_VALUES, AliasBombError, DuplicateKeyError,
                                    _expanded_values, parse_yaml)

# A document -> its values once every alias is expanded (each node counts 1 and its
# children's sizes, a mapping's keys included).
SIZES = [
    ("7\n", 1),
    ("[1, 2]\n", 3),
    ("{a: 1}\n", 3),
    ("a: &x [1, 2]\nb: *x\n", 1 + (1 + 3) + (1 + 3)),
    ("a: &x [1, 2]\nb: [*x, *x, *x]\n", 1 + (1 + 3) + (1 + 1 + 3 * 3)),
    ("- &y {k: v}\n- *y\n- *y\n", 1 + 3 * 3),
]


@pytest.mark.parametrize("text, size", SIZES)
def test_the_expanded_size_counts_each_use_of_an_alias(text: str, size: int) -> None:
    assert _expanded_values(yaml.compose(text)) == size


@pytest.mark.parametrize("text, size", SIZES)
def test_a_document_of_exactly_the_limit_is_read_and_one_more_is_refused(
        text: str, size: int) -> None:
    node = yaml.compose(text)
    assert _expanded_values(node, limit=size) == size
    with pytest.raises(AliasBombError) as caught:
        _expanded_values(yaml.compose(text), limit=size - 1)
    assert str(caught.value) == (f"aliases expand the document to more than {size - 1:,} "
                                 f"values (line 1); write the values out or use fewer nested "
                                 "aliases")


def test_the_limit_is_a_hundred_thousand_and_the_line_is_the_first_node_past_it() -> None:
    assert MAX_YAML_VALUES == 100_000
    # the root, a: 1, b: its list of 4, c: a list of 5 aliases of that list (21 values).
    text = "a: 1\nb: &l [1, 2, 3]\nc: [*l, *l, *l, *l, *l]\n"
    assert _expanded_values(yaml.compose(text)) == 1 + 2 + (1 + 4) + (1 + 1 + 5 * 4)
    with pytest.raises(AliasBombError) as caught:
        _expanded_values(yaml.compose(text), limit=20)
    assert "(line 3)" in str(caught.value) and "more than 20 values" in str(caught.value)


def test_the_limit_reaches_the_default_loader() -> None:
    """parse_yaml bounds with MAX_YAML_VALUES: a list of aliases of 1,000 values each,
    used 99 times, passes; 100 times, it is past the limit."""
    base = "l: &l [" + ", ".join(["0"] * 999) + "]\n"
    assert len(parse_yaml(base + "m: [" + ", ".join(["*l"] * 98) + "]\n")["m"]) == 98
    with pytest.raises(AliasBombError, match="more than 100,000 values"):
        parse_yaml(base + "m: [" + ", ".join(["*l"] * 100) + "]\n")


def test_an_alias_inside_itself_names_its_line() -> None:
    with pytest.raises(AliasBombError) as caught:
        parse_yaml("a: 1\nb: 2\nc: &self [1, *self]\n")
    assert str(caught.value) == ("an alias refers to the value it is part of (line 3); a "
                                 "configuration cannot contain itself")


@pytest.mark.parametrize("text, key, lines", [
    ("a: 1\nb: 2\na: 3\n", "a", (1, 3)),
    ("top:\n  x: 1\n  y: 2\n  x: 3\n", "x", (2, 4)),
    ("- {k: 1, k: 2}\n", "k", (1, 1)),
    ("1: a\n1: b\n", 1, (1, 2)),
])
def test_a_repeated_key_is_refused_naming_it_and_both_lines(text: str, key: object,
                                                           lines: tuple[int, int]) -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        parse_yaml(text)
    assert str(caught.value) == (f"key {key!r} appears twice (lines {lines[0]} and {lines[1]}); "
                                 "YAML would keep only the last: remove one")


def test_keys_of_a_merge_may_be_overridden_and_distinct_keys_are_all_kept() -> None:
    assert parse_yaml("base: &b {x: 1, y: 2}\nother: {<<: *b, x: 3, z: 4}\n") == {
        "base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2, "z": 4}}
    assert parse_yaml("") is None
    assert parse_yaml("a: ~\nb: [1, two]\n") == {"a": None, "b": [1, "two"]}


def test_only_safe_tags_are_read() -> None:
    with pytest.raises(yaml.YAMLError):
        parse_yaml("!!python/object/apply:os.system ['true']\n")

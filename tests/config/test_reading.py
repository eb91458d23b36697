"""Reading the file itself: every unreadable input is one SpecError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rayprune.config import load_spec, read_yaml
from rayprune.config.reading import MAX_DEPTH, parse_yaml
from rayprune.errors import SpecError

MINIMAL = ("name: quickstart\ndata: {task: demo}\ntraining: {steps: 10}\n"
           "space: {method: magnitude, target_sparsity: 0.5}\n")


def refused(path: Path, *needles: str) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def write(tmp_path: Path, content: str | bytes, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_a_directory_is_said_to_be_a_directory(tmp_path):
    refused(tmp_path, "is a directory")


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.yaml", "file not found")


@pytest.mark.parametrize("content", ["", "   \n", "# only a comment\n", "~\n"])
def test_empty_file(tmp_path, content):
    refused(write(tmp_path, content), "empty")


def test_a_non_utf8_byte(tmp_path):
    data = MINIMAL.encode().replace(b"quickstart", b"quick\xffstart", 1)
    refused(write(tmp_path, data), "not UTF-8", "0xff", "offset")


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    assert load_spec(write(tmp_path, b"\xef\xbb\xbf" + MINIMAL.encode())).name == "quickstart"


@pytest.mark.parametrize("content, key", [
    (MINIMAL + "training:\n  steps: 3\n", "training"),
    ("training:\n  steps: 10\n  steps: 20\n", "steps"),
    ("space: {method: magnitude, method: movement}\n", "method"),
])
def test_duplicate_keys_are_an_error_not_last_wins(tmp_path, content, key):
    refused(write(tmp_path, content), "duplicate key", repr(key))


def test_merge_keys_may_be_overridden(tmp_path):
    content = ("data: {task: demo}\ntraining:\n  <<: {steps: 99, batch_size: 4}\n  steps: 150\n"
               "space: {method: magnitude, target_sparsity: 0.5}\n")
    training = load_spec(write(tmp_path, content)).training
    assert (training.steps, training.batch_size) == (150, 4)


@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_nesting_is_refused_without_recursion(tmp_path, style):
    depth = 500
    if style == "flow":
        content = "space: " + "[" * depth + "]" * depth + "\n"
    else:
        content = "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "1\n"
    message = refused(write(tmp_path, content), f"nested deeper than {MAX_DEPTH} levels")
    assert len(message) < 1000


@pytest.mark.parametrize("content, needle", [
    ("training: {steps: " + "9" * 400 + "}\n", "2**63"),
    ("training: {steps: " + "9" * 5000 + "}\n", "not valid YAML"),
    ("training: {steps: 2024-13-45}\n", "not valid YAML"),
    ("training: !!python/object:os.system {}\n", "not valid YAML"),
    ("space: [unclosed\n", "not valid YAML"),
    ("? [a, b]\n: 1\n", "not valid YAML"),
    ("training: {epochs: .nan}\n", "finite"),
    ("resources: {cpu: .inf}\n", "finite"),
])
def test_unusable_scalars(tmp_path, content, needle):
    refused(write(tmp_path, content), needle)


@pytest.mark.parametrize("content, needle", [
    ("a: !!bool x\n", "'x' is not a valid !!bool"),  # KeyError inside PyYAML
    ("a: !!timestamp x\n", "'x' is not a valid !!timestamp"),  # AttributeError
    ("a: !!int\n", "'' is not a valid !!int"),  # IndexError
    ("a: !!float +\n", "'+' is not a valid !!float"),  # IndexError
    ("training: {steps: [1, !!bool maybe]}\n", "!!bool"),  # nested
    ("!!bool x: 1\n", "!!bool"),  # a key
    ("a: !!timestamp 2024-02-30\n", "day is out of range"),
])
def test_a_tag_its_constructor_cannot_build_is_one_error(tmp_path, content, needle):
    refused(write(tmp_path, content), "not valid YAML", needle, "line 1")


# Odd values for tags: empty, wrong kind of node, the wrong word, out of range.
_ODD = ["", "x", "1", "yes", "+", "-", "=", "<<", ".nan", "1e400", "0x1g", "1:2:3", "2024-13-45",
        "2024-02-30", "2024-01-01T25:00:00", "[1, 2]", "[[1, 2]]", "[{a: 1, b: 2}]", "{a: 1}", "{[1]: 2}"]


def test_every_tag_the_safe_loader_knows_builds_or_is_one_error():
    """The whole class, not the cases found so far: every tag SafeLoader has a constructor for
    (and a few it has not), on values its constructor does not expect, as a value, an item and a key."""
    tags = sorted(_tag for _tag in yaml.SafeLoader.yaml_constructors if _tag)
    tags = [t.replace("tag:yaml.org,2002:", "!!") for t in tags] + ["!foo", "!!python/name:os.system"]
    assert "!!bool" in tags and "!!timestamp" in tags
    built = refused_count = 0
    for tag in tags:
        for value in _ODD:
            for text in (f"a: {tag} {value}\n", f"a: [{tag} {value}]\n", f"{tag} {value}: 1\n"):
                try:
                    parse_yaml(text, source="t.yaml")
                    built += 1
                except SpecError as err:
                    assert str(err).startswith("t.yaml: ") and "\n" not in str(err), err
                    refused_count += 1
    assert built and refused_count


def test_aliases_are_checked_once(tmp_path):
    # Each level doubles the references to one list; walking them all would take 2**30 steps.
    lines = ["a0: &a0 [1, 2]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 31)]
    refused(write(tmp_path, "\n".join(lines) + "\n"), "unknown key")


def test_read_yaml_is_the_strict_reader_for_other_files_too(tmp_path):
    assert read_yaml(write(tmp_path, "a: 1\n")) == {"a": 1}
    with pytest.raises(SpecError, match="duplicate key"):
        read_yaml(write(tmp_path, "a: 1\na: 2\n"))
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}  # what a plain safe_load would have done

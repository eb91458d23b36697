"""Reading a YAML file that a user wrote: every way it can be unreadable is one :class:`SpecError`.

``yaml.safe_load`` alone lets several mistakes through or fails with a traceback: a duplicate key
silently keeps the last value, deep nesting exhausts the recursion limit (a 3,000-line
traceback), a non-UTF-8 byte raises ``UnicodeDecodeError``, ``.nan``/``.inf`` and integers of
hundreds of digits load as numbers that later comparisons or float conversions choke on, and an
explicit tag on a value its constructor cannot build (``!!bool x``, ``!!timestamp x``, ``!!int``
with no value) raises whatever that constructor happens to raise (``KeyError``,
``AttributeError``, ``IndexError``).
:func:`read_yaml` refuses each of them with a message that names the file, the place and what is
allowed.  Used for space files and for the configs ``rayprune export`` writes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from rayprune.config.fields import INT_LIMIT, describe_value, shorten
from rayprune.errors import SpecError

__all__ = ["read_yaml", "check_numbers", "MAX_DEPTH", "MAX_BYTES"]

#: Deepest nesting a file may have (a space file needs 4: space -> key -> {uniform: [lo, hi]}).
MAX_DEPTH = 32
#: Largest file read (a space file is a few kB).
MAX_BYTES = 4 * 2**20


def _tag(tag: str) -> str:
    """``tag:yaml.org,2002:bool`` as the user wrote it: ``!!bool``."""
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys and nesting deeper than :data:`MAX_DEPTH`, and
    turns any failure of a constructor into a ``ConstructorError`` at the node."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        """Every node, tagged or not, is built here (nested ones too), so this is the one place
        that sees every constructor's failure: the safe constructors assume a value that matches
        their tag and fail with unrelated exceptions on one that does not (``!!bool x`` is a
        ``KeyError``, ``!!timestamp x`` an ``AttributeError``, an empty ``!!int`` an
        ``IndexError``).  Whichever it is becomes a ``ConstructorError`` naming the tag, the value
        and the line; PyYAML's own errors and the recursion limit pass unchanged."""
        try:
            return super().construct_object(node, deep=deep)
        except (yaml.YAMLError, RecursionError):
            raise
        except Exception as err:  # noqa: BLE001 - any constructor, any exception: see above
            value = describe_value(node.value) if isinstance(node.value, str) else f"a {node.id}"
            reason = f" ({_one_line(err)})" if isinstance(err, (ValueError, OverflowError)) else ""
            raise ConstructorError(None, None, f"{value} is not a valid {_tag(node.tag)}{reason}",
                                   node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` may be overridden by the keys written beside it
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: SafeConstructor refuses it below
                if duplicate:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"found duplicate key {describe_value(key)}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return shorten(out, 80) or "<top level>"  # a user's key of any length


def check_numbers(source: str, document: Any) -> None:
    """Refuse NaN, infinities and integers beyond 2**63 anywhere in a loaded document; they are
    never a valid setting, and later conversions would fail with an unrelated error.

    Raises:
        SpecError: naming ``source`` and the key path of the first such number.
    """
    seen: set[int] = set()
    stack: list[tuple[tuple, Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{source}: {_where(path)}: {value} is not allowed; numbers must be finite")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= INT_LIMIT:
            raise SpecError(f"{source}: {_where(path)}: {describe_value(value)} is out of range; "
                            f"integers must be below 2**63 in magnitude")
        if isinstance(value, (dict, list)):
            if id(value) in seen:  # YAML aliases share one object: check it once
                continue
            seen.add(id(value))
            items = value.items() if isinstance(value, dict) else enumerate(value)
            stack.extend((path + (k if isinstance(k, (str, int)) else repr(k),), v) for k, v in items)


def read_yaml(path: str | Path, *, what: str = "file") -> Any:
    """Load one YAML document from ``path`` strictly (see the module docstring).

    Args:
        path: the file.
        what: what the file is, for the message when it is missing ("space file", "config").

    Raises:
        SpecError: missing, a directory, unreadable, too large, not UTF-8, not valid YAML,
            duplicate keys, too deep, non-finite or out-of-range numbers.
    """
    path = Path(path)
    if path.is_dir():
        raise SpecError(f"{path}: is a directory; expected a YAML {what}")
    if not path.exists():
        raise SpecError(f"{path}: file not found")
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{path}: {size} bytes is too large for a YAML {what} (at most {MAX_BYTES})")
        data = path.read_bytes()
    except OSError as err:
        raise SpecError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text: byte 0x{data[err.start]:02x} at offset {err.start}; "
                        f"save the file as UTF-8") from None
    return parse_yaml(text, source=str(path))


def parse_yaml(text: str, *, source: str) -> Any:
    """Load one YAML document from ``text`` strictly; ``source`` names it in messages."""
    try:
        document = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {_one_line(err)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        # Scalars the safe constructor cannot build: a 5,000-digit integer, a date like 2024-13-45.
        raise SpecError(f"{source}: not valid YAML: {_one_line(err)}") from None
    check_numbers(source, document)
    return document


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:500]

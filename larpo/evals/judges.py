"""Judges: the models (or rules) that grade a policy's answers for AlpacaEval 2 and MixEval.

A judge has a ``name`` (recorded next to every number it produces) and
``complete(prompts) -> texts``: chat messages in, text out. For alpaca_eval a judge also offers
``alpaca_eval_completions(prompts, **kwargs)``, a completion function in alpaca_eval's own
protocol (``alpaca_eval.decoders``: prompt strings in, ``dict(completions=[...],
price_per_example=[...], time_per_example=[...])`` out). alpaca_eval's named decoders are a closed
list and a dict annotator config is rejected, so the function enters through
``alpaca_eval.evaluate(..., fn_completions=judge.alpaca_eval_completions)`` together with an
annotator YAML that has no ``fn_completions`` key (see ``larpo.evals.alpacaeval``).

- ``OpenAICompatibleJudge``: the chat-completions HTTP protocol over the standard library; the
  OpenAI API (GPT-4-turbo for AlpacaEval 2, gpt-3.5-turbo-0125 for MixEval's model parser) or
  any compatible server (e.g. Llama-3-70B-Instruct behind vLLM, the paper's Table 3 judge).
- ``HFLocalJudge``: a local Hugging Face causal LM, greedy, loaded lazily, released after use.
- ``RewardJudge``: pairwise preference by a reward object (``larpo.rewards.scoring`` interface), offline.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from larpo.errors import JudgeError, JudgeHTTPError, MissingAPIKeyError

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
ASSETS = Path(__file__).resolve().parent / "assets"
OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class Judge(Protocol):
    name: str

    def complete(self, prompts: Sequence[Messages]) -> list[str]: ...


def chatml_to_messages(prompt: str) -> Messages:
    """Chat messages from alpaca_eval's ChatML prompt text (``<|im_start|>role\\n…<|im_end|>``).

    Mirrors ``alpaca_eval.utils.prompt_to_chatml`` (its OpenAI decoder's conversion) without
    importing alpaca_eval; a prompt without ChatML markers is one user message.
    """
    text = prompt.strip()
    if not text.startswith("<|im_start|>"):
        return [{"role": "user", "content": prompt}]
    messages = []
    for part in text.split("<|im_start|>")[1:]:
        header, _, body = part.partition("\n")
        role, *extra = header.strip().split()
        message = {"role": role, "content": body.split("<|im_end|>", 1)[0].strip()}
        for item in extra:  # e.g. "system name=example_user"
            key, _, value = item.partition("=")
            message[key] = value
        messages.append(message)
    return messages


class _TextJudgeForAlpacaEval:
    """alpaca_eval's completion protocol on top of ``complete`` (text judges)."""

    default_annotator = "alpaca_eval_llama3_70b_fn"  # a text (ranking) prompt; no log-probs needed

    def alpaca_eval_completions(self, prompts: Sequence[str], **kwargs: Any) -> dict[str, list]:
        if kwargs.get("logprobs"):
            raise ValueError(f"judge {self.name!r} gives no log-probs; choose a text annotator, not a weighted one")
        start = time.perf_counter()
        texts = self.complete([chatml_to_messages(p) for p in prompts], max_tokens=kwargs.get("max_tokens"))
        per = (time.perf_counter() - start) / max(len(prompts), 1)
        return {"completions": texts, "price_per_example": [math.nan] * len(texts),
                "time_per_example": [per] * len(texts)}


class OpenAICompatibleJudge:
    """A chat-completions judge over HTTP (OpenAI or any OpenAI-compatible server).

    The key is read from the environment variable ``api_key_env`` at each request and is never
    stored on the object, so it cannot reach ``repr``, ``name``, logs or configs; server error
    text is scrubbed of it before it is logged or raised. 408/409/429/5xx and connection errors
    are retried ``max_retries`` times with exponential backoff (``Retry-After`` honoured, capped).
    """

    default_annotator = "weighted_alpaca_eval_gpt4_turbo"

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_tokens: int = 1024, timeout: float = 60.0, max_retries: int = 6,
                 backoff: float = 1.0, max_backoff: float = 60.0, concurrency: int = 4,
                 price_per_token: float | None = None, annotator: str | None = None) -> None:
        if base_url is None and not os.environ.get(api_key_env):
            # Fail at construction: before any generation work is spent on answers nobody can judge.
            raise MissingAPIKeyError(
                f"judge {model!r} calls the OpenAI API and needs the environment variable {api_key_env}, "
                f"which is not set; export it (or set base_url to an OpenAI-compatible server)")
        self.model, self.api_key_env = model, api_key_env
        self.base_url = (base_url or OPENAI_BASE_URL).rstrip("/")
        self.temperature, self.max_tokens, self.timeout = temperature, max_tokens, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.concurrency, self.price_per_token = max(1, concurrency), price_per_token
        # The alpaca_eval annotator this judge runs when eval.alpacaeval2.annotator is null (and records as
        # the annotator's name): the config made for this judge, e.g. weighted_alpaca_eval_vllm_llama3_70b.
        self.default_annotator = annotator or type(self).default_annotator
        host = urllib.parse.urlsplit(self.base_url).hostname or self.base_url  # no user:pass@ in names
        self.name = f"openai:{model}" if base_url is None else f"openai-compatible:{model}@{host}"

    def __repr__(self) -> str:
        return (f"OpenAICompatibleJudge(model={self.model!r}, base_url={self.base_url!r}, "
                f"api_key_env={self.api_key_env!r})")

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:  # a local vLLM server may run without a key
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        return min(self.backoff * 2**attempt, self.max_backoff) * (0.5 + random.random() / 2)

    def chat(self, messages: Messages, attempts: int | None = None, **params: Any) -> dict:
        """One chat-completions call (with bounded retries); returns the parsed JSON response.

        A reply that cannot be read (not JSON, e.g. an HTML page sent with status 200; no choices; an
        empty or null ``content``) is a judge error like a 5xx: retried with backoff, then a
        :class:`JudgeError` naming the judge and the URL, never a bare JSONDecodeError/IndexError
        and never an empty verdict scored as if the judge had spoken.
        """
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens, **{k: v for k, v in params.items() if v is not None}}
        body, url = json.dumps(payload).encode(), f"{self.base_url}/chat/completions"
        tries = self.max_retries + 1 if attempts is None else max(1, attempts)
        for attempt in range(tries):
            request = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
            error: type[JudgeError] = JudgeHTTPError
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw, kind = response.read(), response.headers.get("Content-Type", "?")
                reply, reason = _read_reply(raw, kind)
                if reason is None:
                    return reply
                retry, wait, error = True, self._wait(attempt, None), JudgeError
            except urllib.error.HTTPError as err:
                reason = f"HTTP {err.code}: {err.read()[:500].decode(errors='replace')}"
                retry, wait = err.code in RETRY_STATUS, self._wait(attempt, err.headers.get("Retry-After"))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                reason, retry, wait = f"{type(err).__name__}: {err}", True, self._wait(attempt, None)
            reason = self._scrub(reason)
            if not retry or attempt == tries - 1:
                raise error(f"judge {self.name!r} at {url}: {reason} (attempt {attempt + 1} of {tries})") from None
            logger.warning("judge %s: %s; retry %d/%d in %.2fs", self.name, reason, attempt + 1, tries - 1, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def check(self) -> None:
        """Start-up: one small request (at most two tries), so an unreachable, failing or stalled judge
        is refused before any answer is generated for it."""
        self.chat([{"role": "user", "content": "Reply with the single word: ok"}], attempts=2, max_tokens=8)

    def _map(self, fn, items: Sequence) -> list:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, items))

    def complete(self, prompts: Sequence[Messages], max_tokens: int | None = None) -> list[str]:
        def one(messages: Messages) -> str:
            return self.chat(messages, max_tokens=max_tokens)["choices"][0]["message"]["content"]

        return self._map(one, list(prompts))

    def alpaca_eval_completions(self, prompts: Sequence[str], max_tokens: int | None = None,
                                temperature: float | None = None, logprobs: bool = False,
                                top_logprobs: int | None = None, **ignored: Any) -> dict[str, list]:
        """alpaca_eval's completion protocol, log-probs included (its ``logprob_parser`` reads
        ``completions_all[i]["logprobs"]["content"][j]["top_logprobs"]``, as OpenAI returns them)."""
        if ignored:
            logger.debug("judge %s ignores annotator completions_kwargs %s", self.name, sorted(ignored))
        params = {"max_tokens": max_tokens, "temperature": temperature}
        if logprobs:
            params.update(logprobs=True, top_logprobs=top_logprobs)

        def one(prompt: str) -> tuple[dict, float]:
            start = time.perf_counter()
            response = self.chat(chatml_to_messages(prompt), **params)
            choice = dict(response["choices"][0])
            choice["text"] = choice["message"]["content"]  # never empty: chat() refuses an empty verdict
            tokens = (response.get("usage") or {}).get("total_tokens")
            price = tokens * self.price_per_token if tokens is not None and self.price_per_token else math.nan
            return choice | {"_price": price}, time.perf_counter() - start

        results = self._map(one, list(prompts))
        choices = [c for c, _ in results]
        return {"completions": [c["text"] for c in choices], "completions_all": choices,
                "price_per_example": [c.pop("_price") for c in choices],
                "time_per_example": [t for _, t in results]}


def _read_reply(raw: bytes, content_type: str) -> tuple[dict, str | None]:
    """(the reply, None) when it holds a verdict to read, else (…, what is wrong with it)."""
    try:
        reply = json.loads(raw)
    except ValueError:
        return {}, f"the reply is not JSON ({content_type}: {raw[:200].decode(errors='replace')!r})"
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return reply, f"the reply has no choices ({raw[:200].decode(errors='replace')!r})"
    content = (choices[0].get("message") or {}).get("content")
    if not isinstance(content, str) or not content.strip():
        return reply, f"the reply's message content is {content!r}: no verdict to read"
    return reply, None


class HFLocalJudge(_TextJudgeForAlpacaEval):
    """A local Hugging Face causal LM as judge: chat template, greedy decoding, batched.

    Nothing is loaded at construction; ``complete`` loads the model and releases it when done
    (``keep_loaded=False``) so a judge never sits in memory next to the policy being trained.
    """

    def __init__(self, pretrained: str, max_new_tokens: int = 512, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, keep_loaded: bool = False, annotator: str | None = None,
                 logprob_tokens: Sequence[str] = ("m", "M"), label: str | None = None) -> None:
        self.pretrained, self.max_new_tokens, self.dtype, self.device = pretrained, max_new_tokens, dtype, device
        self.batch_size, self.keep_loaded = max(1, batch_size), keep_loaded
        # alpaca_eval's weighted annotators read the log-probs of their answer tokens ("m"/"M" for
        # weighted_alpaca_eval_gpt4_turbo); a small judge may rank them below its top 5, so their true
        # log-probs are always reported beside the top-k (see alpaca_eval_completions).
        self.logprob_tokens = tuple(logprob_tokens)
        self.default_annotator = annotator or type(self).default_annotator
        self.name = f"hf:{pretrained}" + (f" ({label})" if label else "")
        self._model = self._tokenizer = None

    def _load(self) -> None:
        from larpo.checkpoints import load_model
        from larpo.model import load_tokenizer, resolve_device, resolve_dtype

        if self._model is None:
            logger.info("loading judge %s", self.name)
            self._tokenizer = load_tokenizer(self.pretrained)
            self._tokenizer.padding_side = "left"  # generation continues from the right edge
            self._model = load_model(self.pretrained, resolve_dtype(self.dtype), resolve_device(self.device))

    def check(self) -> None:
        """Start-up: the model's folder (or hub id) and its config are there; no weights are loaded."""
        from larpo.errors import CheckpointError
        from larpo.model import check_local

        check_local(self.pretrained, "judge.pretrained")
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(self.pretrained)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"judge {self.name!r}: cannot read its config ({e})") from None

    def release(self) -> None:
        """Drop the model and tokenizer and return their memory."""
        self._model = self._tokenizer = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _encoded_batches(self, prompts: Sequence[Messages]):
        """The loaded judge's inputs, ``batch_size`` conversations at a time: its chat template with the
        generation prompt, padded (left, as loaded), on the model's device."""
        tok = self._tokenizer
        for i in range(0, len(prompts), self.batch_size):
            texts = [tok.apply_chat_template(list(m), add_generation_prompt=True, tokenize=False)
                     for m in prompts[i : i + self.batch_size]]
            yield tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._model.device)

    def complete(self, prompts: Sequence[Messages], max_tokens: int | None = None) -> list[str]:
        import torch

        self._load()
        tok, model, out = self._tokenizer, self._model, []
        try:
            for enc in self._encoded_batches(prompts):
                with torch.no_grad():
                    ids = model.generate(**enc, do_sample=False, max_new_tokens=max_tokens or self.max_new_tokens,
                                         pad_token_id=tok.pad_token_id)
                out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        finally:
            del model
            if not self.keep_loaded:
                self.release()
        return out


    def alpaca_eval_completions(self, prompts: Sequence[str], **kwargs: Any) -> dict[str, list]:
        """alpaca_eval's completion protocol; with ``logprobs`` (a weighted annotator), one forward pass per
        prompt gives the next token's log-probs in OpenAI's layout (``logprobs.content[0].top_logprobs``)."""
        if not kwargs.get("logprobs"):
            return super().alpaca_eval_completions(prompts, **kwargs)
        start = time.perf_counter()
        choices = self.next_token_logprobs([chatml_to_messages(p) for p in prompts], int(kwargs.get("top_logprobs") or 5))
        per = (time.perf_counter() - start) / max(len(prompts), 1)
        return {"completions": [c["text"] for c in choices], "completions_all": choices,
                "price_per_example": [0.0] * len(choices), "time_per_example": [per] * len(choices)}

    def next_token_logprobs(self, prompts: Sequence[Messages], k: int) -> list[dict]:
        """Per prompt: the most likely next token as ``text`` and, under ``logprobs.content[0].top_logprobs``,
        the top ``k`` tokens and the ``logprob_tokens`` (single tokens of the judge's vocabulary) with their
        log-probs, most likely first."""
        import torch

        self._load()
        tok, model, out = self._tokenizer, self._model, []
        single = [tok.encode(t, add_special_tokens=False) for t in self.logprob_tokens]
        extra = {ids[0] for ids in single if len(ids) == 1}
        try:
            for enc in self._encoded_batches(prompts):
                with torch.no_grad():
                    rows = model(**enc).logits[:, -1, :].float().log_softmax(-1).cpu()
                for row in rows:
                    ids = set(row.topk(k).indices.tolist()) | extra
                    top = sorted(({"token": tok.decode([j]), "logprob": float(row[j])} for j in ids),
                                 key=lambda t: -t["logprob"])
                    first = top[0]
                    out.append({"text": first["token"] or " ", "logprobs": {"content": [
                        {"token": first["token"], "logprob": first["logprob"], "top_logprobs": top}]}})
        finally:
            del model
            if not self.keep_loaded:
                self.release()
        return out


# The RewardJudge's annotator renders prompts with this template (assets/alpaca_eval/larpo_reward),
# so that its completion function can read the three fields back exactly.
REWARD_PROMPT = re.compile(
    r"\A<\|larpo:instruction\|>\n(?P<instruction>.*)\n<\|larpo:output_1\|>\n(?P<output_1>.*)"
    r"\n<\|larpo:output_2\|>\n(?P<output_2>.*)\n<\|larpo:end\|>\n?\Z", re.DOTALL)


class RewardJudge:
    """Pairwise preference by a reward: ``reward.score(prompts, responses, finished)`` (larpo.rewards.scoring).

    The better-scored output wins; equal scores are a draw (alpaca_eval's 1.5). For alpaca_eval it
    enters through alpaca_eval's own annotator machinery: the annotator ``larpo_reward`` renders
    instruction and outputs into a template of delimiters, alpaca_eval calls
    ``alpaca_eval_completions`` with the rendered prompts, which parses them back, scores both
    outputs, and answers "1", "2" or "1.5"; the annotator's ``eval_parser`` turns that into the
    preference. alpaca_eval's random swap of the two outputs is undone by alpaca_eval itself.
    """

    default_annotator = "larpo_reward"
    writes_text = False  # it ranks two answers; MixEval's model parser needs a judge that writes

    def __init__(self, reward: Any) -> None:
        if reward is None or not hasattr(reward, "score"):
            raise ValueError("RewardJudge needs a reward object with score(prompts, responses, finished)")
        self.reward = reward
        self.name = f"reward:{getattr(reward, 'name', type(reward).__name__)}"

    def check(self) -> None:
        """Start-up: a reward that scores only its own task's prompts (the task's verifier) cannot judge
        a benchmark's open questions: refused here, not after the answers were generated."""
        if not getattr(self.reward, "open_ended", True):
            raise JudgeError(f"judge {self.name!r}: the reward {getattr(self.reward, 'name', '?')} is a task's "
                             "verifier, which scores only that task's own prompts, not a benchmark's open "
                             "questions; judge with a reward model (reward=seqcls, pairrm, ...) or another judge "
                             "(judge=gpt4_turbo, openai_compatible, hf_local)")

    def preferences(self, instructions: Sequence[str], outputs_1: Sequence[str],
                    outputs_2: Sequence[str]) -> list[float]:
        """alpaca_eval preferences: 1 (output_1 better), 2 (output_2 better), 1.5 (tie)."""
        scores = self.reward.score(list(instructions), [[a, b] for a, b in zip(outputs_1, outputs_2)],
                                   [[True, True] for _ in instructions])
        return [1.0 if s1 > s2 else 2.0 if s2 > s1 else 1.5 for s1, s2 in scores]

    def alpaca_eval_completions(self, prompts: Sequence[str], **kwargs: Any) -> dict[str, list]:
        start = time.perf_counter()
        fields = []
        for prompt in prompts:
            match = REWARD_PROMPT.match(prompt)
            if match is None:
                raise ValueError(f"judge {self.name!r} got a prompt not rendered by the larpo_reward annotator: "
                                 f"{prompt[:200]!r}")
            fields.append((match["instruction"], match["output_1"], match["output_2"]))
        prefs = self.preferences(*zip(*fields)) if fields else []
        per = (time.perf_counter() - start) / max(len(prompts), 1)
        return {"completions": [{1.0: "1", 2.0: "2"}.get(p, "1.5") for p in prefs],
                "price_per_example": [0.0] * len(prefs), "time_per_example": [per] * len(prefs)}

    def complete(self, prompts: Sequence[Messages], max_tokens: int | None = None) -> list[str]:
        raise TypeError(f"judge {self.name!r} compares pairs of outputs; it writes no text (MixEval: parser=rule)")

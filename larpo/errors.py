"""Every error type of LarPO, in one ground module that imports nothing of the package.

A *refusal* (:func:`larpo.pipeline.refusals`) is an error whose message says what to do: ``run.py``
prints that one message and no traceback. Any other exception is a bug and keeps its traceback.
Each class keeps the built-in base its callers catch (``ValueError``, ``RuntimeError``, ...).
"""

from __future__ import annotations


class PipelineError(RuntimeError):
    """A run cannot go on as asked; the message says what is missing and what to do."""


class ConfigError(ValueError):
    """An option is out of its allowed range, or options do not fit together; the message names the
    key, the value and the range."""


class ArtifactError(ValueError):
    """A run-directory file is missing or malformed; the message names the file (and line)."""


class RunLockedError(RuntimeError):
    """Another live process holds the run directory."""


class CheckpointError(RuntimeError):
    """A model or tokenizer cannot be loaded; the message names the path."""


class SystemMessageError(ValueError):
    """The model's chat template refuses a system message (e.g. Gemma's)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops there, before the optimizer step and before
    anything is saved (a checkpoint trained to NaN must never be marked done)."""


class TaskDataError(ValueError):
    """A task's data cannot be used as they are; the message names the file (row, field) and the fix."""


class TaskDataMissing(TaskDataError, FileNotFoundError):
    """A task's data file or dataset does not exist (or is unreachable): a FileNotFoundError too."""


class TaskDataOffline(TaskDataError, ConnectionError):
    """A hub dataset that cannot be reached (no network): a ConnectionError too."""


class RowError(ValueError):
    """A row that must not be used as it is (a field of the wrong type): the task refuses its data."""


class MissingAPIKeyError(RuntimeError):
    """A judge that needs an API key was built without the environment variable holding it."""


class JudgeError(RuntimeError):
    """A judge cannot give a verdict (unreachable, failing, or answering what cannot be read), after
    the bounded retries; the message names the judge (and its URL) and never holds the key."""


class JudgeHTTPError(JudgeError):
    """The judge's server failed (after the bounded retries); the message never holds the key."""


class VLLMUnavailable(RuntimeError):
    """sampling.backend=vllm cannot run here (no vllm, a broken install, or no device for it)."""


class VLLMGenerationError(RuntimeError):
    """An engine child failed; the message names it, its log's last lines, and that the stage resumes."""


class FetchError(RuntimeError):
    """A fetch cannot go on; the message says what failed and what to do."""

"""A quiet console: third-party warnings known to be harmless are filtered (one list, here), and
progress bars draw only on a terminal (no carriage-return lines in a redirected log).

Each entry of :data:`KNOWN_WARNINGS` says whose warning it is and why it does not concern a run. A
warning not listed here is shown as Python shows it: new ones are meant to be seen.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

# (category, start of the message, whose, why it is harmless)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str, str], ...] = (
    (UserWarning, "pkg_resources is deprecated as an API", "alpaca_eval 0.6.6 (utils.py imports pkg_resources)",
     "the eval extra pins setuptools<82, which still has it"),
    (FutureWarning, "The default value for l1_ratios will change", "scikit-learn, from alpaca_eval's LC GLM",
     "the eval extra pins scikit-learn<1.10, where the old default still holds"),
    (FutureWarning, "'penalty' was deprecated in version 1.8", "scikit-learn, from alpaca_eval's LC GLM",
     "the same pin: penalty= works until 1.10"),
    (FutureWarning, "The fitted attributes of LogisticRegressionCV will be simplified",
     "scikit-learn, from alpaca_eval's LC GLM", "alpaca_eval reads only the predictions, not the fitted attributes"),
    (FutureWarning, "`is_gradient_checkpointing` is deprecated", "peft (get_peft_model reads the old name, model.lora)",
     "the old name still answers until transformers 6; LarPO's own code reads is_activation_checkpointing"),
)


def quiet_known_warnings() -> None:
    """Filter the warnings of :data:`KNOWN_WARNINGS` in this process (idempotent)."""
    for category, message, _, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


def progress(*args: Any, **kwargs: Any):
    """``tqdm.auto.tqdm`` that draws only on a terminal: ``disable=None`` is tqdm's "off when not a TTY".

    An explicit ``disable=True`` (e.g. a rank other than 0) still turns it off everywhere.
    """
    from tqdm.auto import tqdm

    if not kwargs.get("disable"):
        kwargs["disable"] = None
    return tqdm(*args, **kwargs)

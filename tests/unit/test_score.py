"""score_rows checks a reward's output like a file: one finite number per candidate."""

from __future__ import annotations

import pytest

from larpo.rewards.scoring import score_rows

ROWS = [{"prompt_id": "p1", "prompt": "1+1=", "responses": ["2", "3"], "finished": [True, True]}]


class Fixed:
    name = "fixed"

    def __init__(self, out):
        self.out = out

    def score(self, prompts, responses, finished):
        return self.out


def test_rows_carry_the_rewards_and_the_reward_name():
    assert score_rows(Fixed([[1, 0.5]]), ROWS) == [{"prompt_id": "p1", "rewards": [1.0, 0.5], "reward_model": "fixed"}]


@pytest.mark.parametrize(("out", "message"), [
    ([[1.0, float("nan")]], "reward 'fixed', prompt 'p1': candidate 1 got the score nan, not a finite number"),
    ([[float("inf"), 0.0]], "reward 'fixed', prompt 'p1': candidate 0 got the score inf, not a finite number"),
    ([["1.0", 0.0]], "reward 'fixed', prompt 'p1': candidate 0 got the score '1.0', not a finite number"),
    ([[True, 0.0]], "reward 'fixed', prompt 'p1': candidate 0 got the score True, not a finite number"),
    ([[1.0]], "reward 'fixed', prompt 'p1': 1 scores for 2 candidates"),
    ([], "reward 'fixed' returned 0 score lists for 1 prompts"),
])
def test_bad_reward_output_is_refused_naming_the_prompt(out, message):
    with pytest.raises(ValueError) as info:
        score_rows(Fixed(out), ROWS)
    assert str(info.value) == message

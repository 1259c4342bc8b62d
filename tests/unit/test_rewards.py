"""Model rewards: SeqClsReward and PairRMReward on tiny offline stand-ins (tests/helpers/stand_ins.py).

Scores are checked against hand-written forwards of the same weights (fp32, |Δ| <= 1e-5).
"""

from __future__ import annotations

import json
import logging
import shutil
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.helpers.rewards import TOL, hand_pair_logit, hand_seqcls_score

pytest.importorskip("transformers")
from hydra.utils import instantiate  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from larpo.rewards import PairRMReward, SeqClsReward, list_scores  # noqa: E402
from larpo.rewards.common import check_finite, keep_end  # noqa: E402
from larpo.rewards.pairrm import pairrm_model_class  # noqa: E402
from larpo.rewards.seqcls import _pad_id  # noqa: E402
from tests.helpers import stand_ins  # noqa: E402
from tests.helpers.config import CONF_DIR, compose_config  # noqa: E402

PROMPTS = ["What is 12 + 34?", "Sort 5, 3, 9 and 1.", "Say hello to the lazy dog, please."]
RESPONSES = [
    ["The answer is 46.", "46", "I think it is 47, but the quick brown fox disagrees."],
    ["1, 3, 5, 9"],
    ["hello dog", "good morning!"],
]
FINISHED = [[True] * len(rs) for rs in RESPONSES]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    return stand_ins.make_seqcls_rm(tmp_path_factory.mktemp("rm"))


@pytest.fixture(scope="module")
def pairrm_dir(tmp_path_factory) -> Path:
    return stand_ins.make_pairrm(tmp_path_factory.mktemp("pairrm"))


def spy_on_loads(monkeypatch, cls) -> list:
    """Weak references to every model ``cls`` loads."""
    refs, original = [], cls._load_model

    def load(self):
        model = original(self)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(cls, "_load_model", load)
    return refs


# ---- SeqClsReward -----------------------------------------------------------------------------


def test_seqcls_matches_hand_forward_in_input_order(rm_dir):
    # batch_size 2 over 6 pairs of different lengths: sorting, padding and unsorting all matter
    scores = SeqClsReward(str(rm_dir), batch_size=2).score(PROMPTS, RESPONSES, FINISHED)
    assert [len(s) for s in scores] == [3, 1, 2]
    for p, rs, row in zip(PROMPTS, RESPONSES, scores):
        for r, got in zip(rs, row):
            assert got == pytest.approx(hand_seqcls_score(rm_dir, p, r), abs=TOL)
    flat = [x for row in scores for x in row]
    assert len(set(round(x, 4) for x in flat)) == len(flat)  # distinct: a permutation would show


def test_seqcls_one_bos_even_when_tokenizer_adds_one(rm_dir):
    reward = SeqClsReward(str(rm_dir))
    ids = reward.encode(["hi"], [["yo"]])[0]
    bos = reward._tok.bos_token_id
    assert ids[0] == bos and ids[1] != bos
    assert reward._tok("x").input_ids[0] == bos  # the stand-in's tokenizer does add BOS itself


def test_seqcls_truncation_counted_logged_and_keeps_the_end(rm_dir, caplog):
    full = SeqClsReward(str(rm_dir)).encode(PROMPTS, RESPONSES)
    cut_reward = SeqClsReward(str(rm_dir), max_length=40)
    with caplog.at_level(logging.WARNING, logger="larpo.rewards.seqcls"):
        cut = cut_reward.encode(PROMPTS, RESPONSES)
    n_long = sum(len(ids) > 40 for ids in full)
    assert 0 < n_long < len(full)
    assert f"{n_long} of {len(full)} (prompt, response) pairs exceeded max_length=40" in caplog.text
    for a, b in zip(full, cut):
        assert len(b) == min(len(a), 40) and b[0] == a[0] and b[1:] == a[len(a) - len(b) + 1 :]
    assert all(isinstance(x, float) for row in cut_reward.score(PROMPTS, RESPONSES, FINISHED) for x in row)


def test_keep_end_keeps_bos_and_tail():
    assert keep_end([1, 2, 3, 4, 5], 3, keep_first=1) == ([1, 4, 5], True)
    assert keep_end([1, 2], 3, keep_first=1) == ([1, 2], False)


def test_pad_id_is_absent_from_the_batch():
    # pad = eos = 2 inside a sequence (Llama-3's <|eot_id|> ends every turn): ArmoRM-style heads
    # take the token before the *first* pad id, so the pad id must occur nowhere in the batch
    class Tok:
        pad_token_id, unk_token_id, eos_token_id, bos_token_id = 2, None, 2, 1

        def __len__(self) -> int:
            return 10

    assert _pad_id([[1, 5, 2, 6], [1, 7]], Tok()) == 0  # 2 (pad, eos) and 1 (bos) are used
    assert _pad_id([[1, 5, 6]], Tok()) == 2


def test_seqcls_nan_score_names_prompt_and_candidate(rm_dir, monkeypatch):
    original = SeqClsReward._load_model

    def poisoned(self):
        model = original(self)
        model.score.weight.data.fill_(float("nan"))
        return model

    monkeypatch.setattr(SeqClsReward, "_load_model", poisoned)
    long_prompt = "Q" * 79 + "!" + "tail that must not be quoted"
    with pytest.raises(ValueError, match=r"candidate 0 of prompt 'Q{79}!'") as err:
        SeqClsReward(str(rm_dir)).score([long_prompt], [["a", "b"]], [[True, True]])
    assert "tail" not in str(err.value)


def test_check_finite_names_the_right_candidate():
    with pytest.raises(ValueError, match=r"\(inf\) to candidate 1 of prompt 'second'"):
        check_finite([[0.0], [1.0, float("inf")]], ["first", "second"], "rm")


def test_seqcls_missing_chat_template_is_a_clear_error(tmp_path):
    path = stand_ins.make_seqcls_rm(tmp_path / "rm", chat_template=None)
    with pytest.raises(ValueError, match=f"reward tokenizer at '{path}' has no chat_template"):
        SeqClsReward(str(path)).score(["p"], [["r"]], [[True]])


@pytest.mark.parametrize("name", ["missing", "./not/here", "runs/a/b/rm"])
def test_seqcls_missing_local_path_is_named(tmp_path, name):
    path = str(tmp_path / name) if name == "missing" else name
    with pytest.raises(FileNotFoundError, match=f"{path!r} does not exist"):
        SeqClsReward(path).score(["p"], [["r"]], [[True]])


def test_custom_code_needs_trust_remote_code(tmp_path):
    path = stand_ins.make_custom_code_rm(tmp_path / "custom")
    with pytest.raises(ValueError, match=r"auto_map.*set reward\.trust_remote_code=true"):
        SeqClsReward(str(path)).score(["p"], [["r"]], [[True]])


def test_seqcls_model_released_after_score_and_kept_in_a_session(rm_dir, monkeypatch):
    refs = spy_on_loads(monkeypatch, SeqClsReward)
    reward = SeqClsReward(str(rm_dir))
    reward.score(PROMPTS, RESPONSES, FINISHED)
    assert len(refs) == 1 and refs[0]() is None and reward._model is None
    with reward.loaded():
        reward.score(PROMPTS[:1], RESPONSES[:1], FINISHED[:1])
        reward.score(PROMPTS[1:], RESPONSES[1:], FINISHED[1:])
        assert len(refs) == 2 and refs[1]() is not None  # one load for both calls
    assert refs[1]() is None


def test_seqcls_score_attr_reads_that_output_field(rm_dir, monkeypatch):
    original = SeqClsReward._load_model

    def fake_output(self):  # an ArmoRM-like output: the reward is .score, .logits is something else
        model = original(self)
        model.forward = lambda input_ids, attention_mask: SimpleNamespace(
            score=attention_mask.sum(-1, keepdim=True).float(), logits=torch.full((len(input_ids), 19), 99.0)
        )
        return model

    monkeypatch.setattr(SeqClsReward, "_load_model", fake_output)
    reward = SeqClsReward(str(rm_dir), score_attr="score", batch_size=4)
    lengths = [len(ids) for ids in reward.encode(PROMPTS, RESPONSES)]
    flat = [x for row in reward.score(PROMPTS, RESPONSES, FINISHED) for x in row]
    assert flat == lengths


# ---- PairRMReward -----------------------------------------------------------------------------


def test_pairrm_encoding_is_llm_blenders_tokenize_pair(pairrm_dir, caplog):
    """Reference: tokenize_pair of llm-blender's blender_utils.py / the PairRM-hf model card."""
    reward = PairRMReward(str(pairrm_dir), source_max_length=10, candidate_max_length=7)
    # a long prompt (source cut to 10) and a short one (candidates get the unused room: 10 > 7)
    prompts = ["hello there, the quick brown fox", "hi"]
    cands = ["good morning!", "thank you, the lazy dog", "the quick brown fox jumps over"]
    with caplog.at_level(logging.WARNING, logger="larpo.rewards.pairrm"):
        keys, seqs, _ = reward.encode(prompts, [cands, cands])
    assert "were truncated to PairRM's limits" in caplog.text
    tok = AutoTokenizer.from_pretrained(pairrm_dir)
    limits = []
    for (p, i, j), ids in zip(keys, seqs):
        source = tok.encode("<|source|>" + prompts[p], max_length=10, truncation=True)
        limit = (10 + 2 * 7 - len(source)) // 2
        cand1 = tok.encode("<|candidate1|>" + cands[i], max_length=limit, truncation=True)
        cand2 = tok.encode("<|candidate2|>" + cands[j], max_length=limit, truncation=True)
        assert ids == source + cand1 + cand2
        limits.append(limit)
    assert min(limits) == 7 and max(limits) > 7 and max(len(s) for s in seqs) > 10 + 2 * 7 - 4
    assert keys[:6] == [(0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 2), (0, 2, 0), (0, 2, 1)] and len(keys) == 12


def test_pairrm_two_candidates_follow_the_pairwise_head(pairrm_dir):
    model = pairrm_model_class().from_pretrained(pairrm_dir).eval()
    tok = AutoTokenizer.from_pretrained(pairrm_dir)
    prompts = PROMPTS
    lists = [["The answer is 46.", "46"], ["1, 3, 5, 9", "9, 5, 3, 1 and the quick brown fox"], ["hello", "hi dog"]]
    reward = PairRMReward(str(pairrm_dir), batch_size=4)  # 6 pairs of mixed lengths in 2 batches
    mats = reward.comparison_matrices(prompts, lists)
    scores = reward.score(prompts, lists, [[True, True]] * 3)
    for prompt, (a, b), mat, (s_a, s_b) in zip(prompts, lists, mats, scores):
        ab, ba = hand_pair_logit(model, tok, prompt, a, b), hand_pair_logit(model, tok, prompt, b, a)
        assert mat[0, 1].item() == pytest.approx(ab, abs=TOL) and mat[1, 0].item() == pytest.approx(ba, abs=TOL)
        assert s_a == pytest.approx((ab - ba) / 2, abs=TOL) and s_b == pytest.approx((ba - ab) / 2, abs=TOL)
        assert (s_a > s_b) == (ab - ba > 0)


def test_pairrm_scores_follow_candidates_when_reordered(pairrm_dir):
    reward = PairRMReward(str(pairrm_dir), batch_size=5)
    cands = ["The answer is 46.", "46", "forty six, says the lazy dog", "47"]
    order = [2, 0, 3, 1]
    base = reward.score([PROMPTS[0]], [cands], [[True] * 4])[0]
    permuted = reward.score([PROMPTS[0]], [[cands[k] for k in order]], [[True] * 4])[0]
    assert permuted == pytest.approx([base[k] for k in order], abs=TOL)
    assert max(base) - min(base) > 1e-3  # the check above is not trivially met by equal scores


def test_pairrm_row_mean_formula_by_hand(monkeypatch):
    C = torch.tensor([[0.0, 1.0, 2.0], [0.5, 0.0, -1.0], [3.0, 0.25, 0.0]])
    # C - Cᵀ = [[0, .5, -1], [-.5, 0, -1.25], [1, 1.25, 0]]; row sums / 3 (diagonal counted)
    expected = [-0.5 / 3, -1.75 / 3, 2.25 / 3]
    monkeypatch.setattr(PairRMReward, "comparison_matrices", lambda self, prompts, responses: [C])
    got = PairRMReward("/unused/never/loaded").score(["p"], [["a", "b", "c"]], [[True] * 3])
    assert got == [pytest.approx(expected, abs=1e-7)]
    assert list_scores(C).tolist() == pytest.approx(expected, abs=1e-7)


def test_pairrm_scores_sum_to_zero_and_small_lists(pairrm_dir):
    reward = PairRMReward(str(pairrm_dir))
    scores = reward.score(["a", "b", "c"], [["x", "yy", "zzz"], ["only one"], []], [[True] * 3, [True], []])
    assert sum(scores[0]) == pytest.approx(0.0, abs=1e-6)
    assert scores[1] == [0.0] and scores[2] == []


def test_pairrm_released_after_score(pairrm_dir, monkeypatch):
    refs = spy_on_loads(monkeypatch, PairRMReward)
    reward = PairRMReward(str(pairrm_dir))
    reward.score(PROMPTS[:1], RESPONSES[:1], FINISHED[:1])
    assert len(refs) == 1 and refs[0]() is None and reward._model is None


def test_pairrm_checkpoint_without_head_is_refused(pairrm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = Path(shutil.copytree(pairrm_dir, tmp_path / "headless"))
    weights = {k: v for k, v in load_file(broken / "model.safetensors").items() if not k.startswith("head_layer")}
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks weights.*head_layer"):
        PairRMReward(str(broken)).score(["p"], [["a", "b"]], [[True, True]])


def test_pairrm_checkpoint_keys_are_pairrm_hf_names(pairrm_dir):
    from safetensors import safe_open

    with safe_open(pairrm_dir / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    # names of the real llm-blender/PairRM-hf weights (DebertaV2PairRM: pretrained_model + head_layer)
    assert {
        "head_layer.1.weight",
        "head_layer.1.bias",
        "head_layer.4.weight",
        "head_layer.4.bias",
        "pretrained_model.embeddings.word_embeddings.weight",
        "pretrained_model.encoder.rel_embeddings.weight",
        "pretrained_model.encoder.layer.0.attention.self.query_proj.weight",
    } <= keys
    assert json.loads((pairrm_dir / "config.json").read_text())["architectures"] == ["DebertaV2PairRM"]


# ---- stand-ins and configs ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", stand_ins.ARCHS)
def test_causal_lm_stand_ins_load(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    path = stand_ins.make_causal_lm(tmp_path / arch, arch)
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch and tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert model(ids).logits.shape[-1] == len(tok)


REWARD_YAMLS = {
    "seqcls": SeqClsReward,
    "fsfairx_llama3": SeqClsReward,
    "skywork_v2": SeqClsReward,
    "armorm": SeqClsReward,
    "pairrm": PairRMReward,
}


def test_every_model_reward_yaml_is_covered():
    assert {p.stem for p in (CONF_DIR / "reward").glob("*.yaml")} - {"verifier"} == set(REWARD_YAMLS)


@pytest.mark.parametrize("option", sorted(REWARD_YAMLS))
def test_reward_yaml_composes_and_constructs_without_loading(option, monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("constructing a reward must not load anything")

    for cls in (
        transformers.AutoTokenizer,
        transformers.AutoModelForSequenceClassification,
        transformers.PretrainedConfig,
        pairrm_model_class(),
    ):
        for method in ("from_pretrained", "get_config_dict"):
            if hasattr(cls, method):
                monkeypatch.setattr(cls, method, refuse)
    cfg = compose_config([f"reward={option}", "run_dir=/tmp/x"])
    reward = instantiate(cfg.reward, task=None)
    assert isinstance(reward, REWARD_YAMLS[option]) and reward._model is None and reward._tok is None
    assert reward.name.endswith(cfg.reward.pretrained) and "/" in cfg.reward.pretrained
    assert reward.list_relative is (option == "pairrm")
    if option == "armorm":
        assert reward.trust_remote_code and reward.score_attr == "score"

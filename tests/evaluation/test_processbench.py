"""ProcessBench F1 with a fake scorer, worked by hand."""

import json
import math
import re

import numpy as np
import pytest

from rstar_jax.data import processbench as PB
from rstar_jax.data.prompts import END_OF_STEP
from rstar_jax.evaluation import processbench as E


class FakeScorer:
    """Scores a prefix by the `s=<x>` written in its last step."""

    def __init__(self):
        self.calls = []

    def score(self, texts):
        self.calls.append(len(texts))
        return np.array([float(re.findall(r"s=([0-9.]+)", t)[-1]) for t in texts], np.float32)


def sample(subset, i, scores, label):
    steps = tuple(f"step {j} s={x}" for j, x in enumerate(scores))
    return PB.ProcessBenchSample(f"{subset}-{i}", subset, f"problem {i}", steps, label)


A = [([0.9, 0.2, 0.8], 1), ([0.7, 0.6], -1), ([0.4, 0.9], 0), ([0.8, 0.5, 0.1], 2)]
B = [([0.45, 0.9], -1), ([0.6, 0.7], -1), ([0.8, 0.3, 0.2], 2), ([0.7, 0.4], 1),
     ([0.9, 0.95], 0)]


def test_prefix_texts_render_steps_like_nodes():
    s = sample("x", 0, [0.1, 0.2], -1)
    texts = PB.prefix_texts(s)
    assert len(texts) == 2
    assert texts[1].startswith("<|user|>:\nproblem 0\n\n<|assistant|>: Let's think step by step")
    assert texts[1].endswith(f"\nstep 0 s=0.1\n{END_OF_STEP}\nstep 1 s=0.2\n{END_OF_STEP}")
    assert texts[0] == texts[1][: len(texts[0])]


def test_predict_and_f1_by_hand():
    assert E.predict_first_error([0.9, 0.2, 0.1], 0.5) == 1
    assert E.predict_first_error([0.9, 0.5], 0.5) == -1  # strictly below
    r = E.f1_from_predictions([-1, -1, 2, 1, 0], [0, -1, 1, 1, -1])
    assert r["correct_acc"] == 50.0
    assert r["error_acc"] == pytest.approx(100 / 3)
    assert r["f1"] == pytest.approx(40.0)
    assert r["n_error"] == 3 and r["n_correct"] == 2
    assert math.isnan(E.f1_from_predictions([1], [-1])["f1"])  # no correct sample


def test_threshold_tuned_on_one_subset_reported_on_others():
    data = {"a": [sample("a", i, s, lab) for i, (s, lab) in enumerate(A)],
            "b": [sample("b", i, s, lab) for i, (s, lab) in enumerate(B)]}
    scorer = FakeScorer()
    out = E.evaluate_processbench(data, scorer, tune_subset="a", batch_size=4)
    # Intervals on a: (0.2,0.9], (-inf,0.6], (0.4,inf), (0.1,0.5] -> t = 0.5 gets all 4.
    assert out["threshold"] == pytest.approx(0.5)
    assert out["subsets"]["a"]["f1"] == pytest.approx(100.0)
    assert out["subsets"]["b"]["f1"] == pytest.approx(40.0)
    assert out["heldout_mean_f1"] == pytest.approx(40.0)
    assert sum(scorer.calls) == 10 + 11 and max(scorer.calls) == 4
    fixed = E.evaluate_scores({"b": [np.array(s) for s, _ in B]}, {"b": [lab for _, lab in B]},
                              threshold=0.95)
    # t=0.95: b1 pred 0 (x), b2 pred 0 (x), b3 pred 0 (x), b4 pred 0 (x), b5 pred 0 (ok)
    assert fixed["subsets"]["b"]["error_acc"] == pytest.approx(100 / 3)
    assert fixed["subsets"]["b"]["f1"] == 0.0


def test_scorer_shape_is_checked():
    class Bad:
        def score(self, texts):
            return np.zeros(len(texts) + 1)
    with pytest.raises(ValueError, match="shape"):
        E.score_samples([sample("a", 0, [0.1], -1)], Bad())


def test_load_real_processbench_counts(shared_data):
    data = PB.load_processbench(str(shared_data / "processbench"))
    assert {k: len(v) for k, v in data.items()} == PB.SUBSETS
    assert sum(s.label == -1 for s in data["gsm8k"]) == 193
    small = PB.load_processbench(str(shared_data / "processbench"), ["math"], limit=3)
    assert list(small) == ["math"] and len(small["math"]) == 3


def test_malformed_processbench(tmp_path):
    (tmp_path / "gsm8k.json").write_text(json.dumps([{"problem": "p", "steps": ["a"], "label": 3}]))
    with pytest.raises(PB.ProcessBenchError, match="row 0"):
        PB.load_processbench(str(tmp_path), ["gsm8k"])
    with pytest.raises(PB.ProcessBenchError, match="no math.json"):
        PB.load_processbench(str(tmp_path), ["math"])


def test_balanced_head_keeps_both_classes_in_file_order():
    samples = [sample("x", i, [0.5], lab) for i, lab in enumerate([0, 0, 0, -1, 0, -1])]
    assert [s.id for s in PB.balanced_head(samples, 3)] == ["x-0", "x-1", "x-3"]
    assert [s.id for s in PB.balanced_head(samples, 4)] == ["x-0", "x-1", "x-3", "x-5"]
    # Only 2 correct samples: topped up with erroneous ones.
    assert [s.id for s in PB.balanced_head(samples, 5)] == ["x-0", "x-1", "x-2", "x-3", "x-5"]

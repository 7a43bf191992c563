"""A resumed evaluation never mixes two inference protocols: the fingerprint
of an `evaluate` directory holds `inference_eval` (utils/fingerprint.py);
a training-data search, which never reads it, is not refused for it."""

import pytest
from evaluation.test_harness import FixedRunner, make_cfg
from evaluation.test_resume_fingerprint import evaluate

from rstar_jax.config.schema import replace
from rstar_jax.evaluation import harness
from rstar_jax.utils.fingerprint import differences, make_fingerprint


def with_protocol(cfg, **changes):
    return replace(cfg, inference_eval=replace(cfg.inference_eval, **changes))


@pytest.mark.parametrize("changes,named", [
    ({"rollouts": 8}, "inference_eval.rollouts 64 -> 8"),
    ({"temperature": 0.2}, "inference_eval.temperature"),
    ({"ppm_init_value": False}, "inference_eval.ppm_init_value true -> false"),
])
def test_changed_inference_protocol_is_refused_on_resume(tmp_path, changes, named):
    cfg = with_protocol(make_cfg(), rollouts=64)
    first = FixedRunner(fail_after=2)  # an interrupted evaluation...
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(tmp_path, cfg, first, method="majority")
    idle = FixedRunner()
    with pytest.raises(harness.EvaluationError, match=named) as e:  # ...resumed under another
        evaluate(tmp_path, with_protocol(cfg, **changes), idle, method="majority")
    assert "--force" in str(e.value) and idle.seen == []
    again = FixedRunner()  # the same protocol resumes where it stopped
    evaluate(tmp_path, cfg, again, method="majority")
    assert again.seen and not set(again.seen) & set(first.seen)


def test_a_search_fingerprint_leaves_the_inference_protocol_out():
    cfg = make_cfg()
    other = with_protocol(cfg, rollouts=3, temperature=0.1)
    search = [make_fingerprint(c, command="search", problems={}, with_ppm=False)
              for c in (cfg, other)]
    assert not any(k.startswith("inference_eval.") for k in search[0]["config"])
    assert differences(*search) == []
    ev = [make_fingerprint(c, command="evaluate", problems={}, with_ppm=False) for c in (cfg, other)]
    assert [d.split(" ")[0] for d in differences(*ev)] == [
        "inference_eval.rollouts", "inference_eval.temperature"]

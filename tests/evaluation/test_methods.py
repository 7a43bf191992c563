"""The real method runners over the search package's mock engine, fake
executor and mock PPM ("What is A + B?"; offset 0 is the right path)."""

import dataclasses

import pytest

from rstar_jax.config.schema import Config, replace
from rstar_jax.data.problems import Problem
from rstar_jax.evaluation import harness, methods
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine, MockScorer


def make_cfg(**mcts):
    cfg = Config()
    base = dict(rollouts=4, candidates=2, errors_threshold=2, trees_in_flight=2, beam_width=2,
                temperature=0.8)
    base.update(mcts)
    # The evaluation protocol at the same small budgets (the PPM values answers only).
    protocol = dataclasses.replace(
        cfg.inference_eval, ppm_init_value=False, runs=3,
        **{k: base[k] for k in ("rollouts", "candidates", "errors_threshold", "temperature")})
    return dataclasses.replace(
        cfg, mcts=dataclasses.replace(cfg.mcts, **base), inference_eval=protocol,
        eval=dataclasses.replace(cfg.eval, k=4, chunk_size=2, bootstrap_samples=50),
        logging=dataclasses.replace(cfg.logging, progress=False))


PROBLEMS = [Problem(f"p{i}", f"What is {3 + i} + 4?", str(7 + i)) for i in range(3)]


def runner(scorer=True):
    return methods.make_runner(MockEngine(steps=2, seeded=True), FakeExecutor(),
                               MockScorer() if scorer else None, MOCK_HOOKS)


def evaluate(tmp_path, method, run=None):
    return harness.evaluate(make_cfg(), ["add"], method, str(tmp_path / method),
                            run_method=run or runner(), problems={"add": PROBLEMS})


def test_greedy_solves_the_mock_problems(tmp_path):
    out = evaluate(tmp_path, "greedy")
    s = out["summaries"][0]
    assert s["accuracy"] == 100.0 and s["n"] == 3 and s["avg_candidates"] == 1.0
    rec = harness.ResultStore(str(tmp_path / "greedy" / "add" / "results.jsonl")).load()["p1"]
    assert rec.preds == ["8"] and rec.chosen == "8" and rec.scores is None
    assert rec.outputs[0].startswith("<code>\n# Step 1: start\nx = 4 + 0")
    assert rec.outputs[0].endswith("<end_of_answer>")
    assert rec.prompt.startswith("<|user|>:\nWhat is 4 + 4?\n\n<|assistant|>:")


@pytest.mark.parametrize("method", ["majority", "best_of_n", "beam", "mcts_ppm"])
def test_each_method_end_to_end(tmp_path, method):
    out = evaluate(tmp_path, method)
    s = out["summaries"][0]
    recs = harness.ResultStore(str(tmp_path / method / "add" / "results.jsonl")).load()
    assert len(recs) == 3
    for r in recs.values():
        assert r.preds and len(r.outputs) == len(r.preds)
        assert (r.scores is not None) == (method in methods.NEEDS_PPM)
        # Mock answers are A + B + offsets, offsets >= 0.
        assert all(p is None or int(p) >= int(r.gold) for p in r.preds)
    if method == "best_of_n":
        # The mock PPM scores even answers 0.9, odd -0.9: best-of-N picks an even one.
        assert all(int(r.chosen) % 2 == 0 for r in recs.values() if r.chosen)
    assert 0.0 <= s["accuracy"] <= 100.0 and s["pass@k"] >= s["accuracy"]


def test_scored_methods_need_a_scorer(tmp_path):
    with pytest.raises(methods.MethodUnavailable, match="needs a PPM"):
        evaluate(tmp_path, "best_of_n", runner(scorer=False))


def test_counting_engine_attributes_tokens():
    from rstar_jax.data.prompts import policy_prompt
    from rstar_jax.inference.types import Completion, GenerationRequest, SamplingParams

    class Fixed:
        def generate(self, requests):
            return [[Completion("x", (1, 2, 3), "eos")] * r.params.n for r in requests]

    eng = methods.CountingEngine(Fixed())
    eng.generate([GenerationRequest(policy_prompt("Q1", "<code>"), SamplingParams(n=2)),
                  GenerationRequest(policy_prompt("Q2"), SamplingParams(n=1)),
                  GenerationRequest(policy_prompt("Q1", "<code>\nx"), SamplingParams(n=1))])
    assert dict(eng.tokens) == {"Q1": 9, "Q2": 3}


def test_method_config_views():
    cfg = make_cfg()
    assert methods.method_config("greedy", cfg).mcts.mode == "greedy"
    maj = methods.method_config("majority", cfg).mcts
    assert maj.mode == "best_of_n" and maj.best_of_n == 4
    m = methods.method_config("mcts_ppm", cfg).mcts
    assert m.mode == "mcts" and m.terminal_value == "ppm"


def _round_like(cfg, **mcts):
    return replace(cfg, mcts=replace(cfg.mcts, **mcts))


def test_every_round_is_evaluated_with_the_one_inference_protocol():
    """The per-round policy + PPM evaluation uses `inference_eval`, not the
    round's training-data search budgets (issue 19, point 1)."""
    from rstar_jax.config.schema import Config

    default = Config().inference_eval
    # The reference's sft_eval_mcts.yaml, run 64 times (run_example.sh).
    assert (default.mode, default.runs, default.rollouts, default.candidates, default.ppm_init_value,
            default.errors_threshold, default.temperature) == ("runs", 64, 12, 32, True, 1, 1.0)
    cfg = make_cfg()
    rounds = [  # the shape of configs/rounds/round{1..4}.yaml's search settings
        _round_like(cfg, rollouts=8, candidates=5, errors_threshold=2, ppm_init_value=False,
                    few_shot=True),
        _round_like(cfg, rollouts=16, candidates=8, errors_threshold=1, ppm_init_value=False,
                    second_tree_for_unsolved=True, unsolved_rollouts=16),
        _round_like(cfg, rollouts=16, candidates=8, errors_threshold=1, ppm_init_value=True),
        _round_like(cfg, rollouts=64, candidates=16, errors_threshold=1, ppm_init_value=True,
                    unsolved_seeds=1, unsolved_max_rollouts=128, temperature=1.0),
    ]
    views = [methods.method_config("mcts_ppm", r).mcts for r in rounds]
    assert all(v == views[0] for v in views)
    p = cfg.inference_eval
    v = views[0]
    assert (v.rollouts, v.candidates, v.ppm_init_value, v.errors_threshold, v.temperature) == (
        p.rollouts, p.candidates, p.ppm_init_value, p.errors_threshold, p.temperature)
    assert not v.few_shot and v.unsolved_seeds == 0 and v.unsolved_max_rollouts == 0
    # The sampled best-of-N paths too: same sampling in every round.
    bon = [methods.method_config("best_of_n", r).mcts for r in rounds]
    assert all(b == bon[0] for b in bon) and bon[0].temperature == p.temperature
    other = replace(cfg, inference_eval=replace(p, rollouts=3, candidates=2))
    assert (methods.method_config("mcts_ppm", other).mcts.rollouts,
            methods.method_config("mcts_ppm", other).mcts.candidates) == (3, 2)


def test_evaluation_prompts_are_zero_shot_after_a_few_shot_search():
    """Round 1 searches with the few-shot bootstrap prompt; its fine-tuned
    policy is evaluated zero-shot (issue 19, point 2)."""
    from rstar_jax.data.prompts import make_prompt_fn, policy_prompt

    cfg = _round_like(make_cfg(), few_shot=True)
    q = "What is 2 + 3?"
    assert make_prompt_fn(cfg)(q) != policy_prompt(q, sep=cfg.data.assistant_sep)
    for method in ("greedy", "majority", "best_of_n", "beam", "mcts_ppm"):
        view = methods.method_config(method, cfg)
        assert make_prompt_fn(view)(q, "<code>") == policy_prompt(q, "<code>",
                                                                 sep=cfg.data.assistant_sep)


def test_inference_eval_few_shot_keeps_the_search_prompt_for_an_untuned_model():
    """`inference_eval.few_shot` (the CPU preset for a pretrained model never
    fine-tuned on the step format) evaluates with the search's few-shot
    prompt, and the report's protocol says so; the default stays zero-shot."""
    from rstar_jax.config.schema import replace
    from rstar_jax.data.prompts import make_prompt_fn

    cfg = _round_like(make_cfg(), few_shot=True)
    cfg = replace(cfg, inference_eval=replace(cfg.inference_eval, few_shot=True))
    q = "What is 2 + 3?"
    for method in ("greedy", "mcts_ppm"):
        view = methods.method_config(method, cfg)
        assert make_prompt_fn(view)(q) == make_prompt_fn(cfg)(q)
    assert methods.protocol(cfg)["prompt"] == "few-shot"
    off = replace(cfg, inference_eval=replace(cfg.inference_eval, few_shot=False))
    assert methods.protocol(off)["prompt"] == "zero-shot"


def test_session_rebuilds_when_the_model_changes(monkeypatch):
    import rstar_jax.execution.pool as pool
    import rstar_jax.inference as inf

    built = []
    monkeypatch.setattr(inf, "load_policy_engine", lambda cfg: built.append(("engine", cfg.seed))
                        or object())
    monkeypatch.setattr(inf, "load_ppm_scorer", lambda cfg: built.append(("ppm", cfg.seed))
                        or object())
    monkeypatch.setattr(pool, "ExecutorPool", lambda c: FakeExecutor())
    cfg = make_cfg()
    try:
        methods._session(cfg, False)
        methods._session(cfg, True)
        methods._session(cfg, True)
        assert built == [("engine", 0), ("ppm", 0)]
        other = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, checkpoint="/x"))
        methods._session(other, True)
        assert built[2:] == [("engine", 0), ("ppm", 0)]
        ppm2 = dataclasses.replace(other, ppm=dataclasses.replace(other.ppm, checkpoint="/p"))
        methods._session(ppm2, True)
        assert built[4:] == [("ppm", 0)]
    finally:
        methods.close_session()


def test_counting_engine_attributes_few_shot_prompts():
    from rstar_jax.data.prompts import make_prompt_fn
    from rstar_jax.inference.types import Completion, GenerationRequest, SamplingParams

    class Fixed:
        def generate(self, requests):
            return [[Completion("x", (1, 2), "eos")] * r.params.n for r in requests]

    cfg = make_cfg()
    build = make_prompt_fn(replace(cfg, mcts=replace(cfg.mcts, few_shot=True)))
    q1, q2 = "What is 2 + 3?", "What is 12 + 3?"  # q1 is inside q2
    eng = methods.CountingEngine(Fixed(), questions=[q1, q2])
    eng.generate([GenerationRequest(build(q1, "<code>"), SamplingParams(n=2)),
                  GenerationRequest(build(q2), SamplingParams(n=1))])
    assert dict(eng.tokens) == {q1: 4, q2: 2}


def test_methods_send_and_record_the_zero_shot_prompt_after_a_few_shot_search():
    """A round-1 config (few-shot bootstrap search) evaluates zero-shot: every
    request and every recorded prompt is the plain policy prompt."""
    from search.search_helpers import add_problems

    from rstar_jax.data import prompts

    cfg = make_cfg()
    cfg = replace(cfg, mcts=replace(cfg.mcts, few_shot=True))
    problems = add_problems(2)
    engine = MockEngine(steps=2)
    sent = []
    recorder = type("Rec", (), {"generate": lambda self, reqs: (
        sent.extend(r.prompt for r in reqs), engine.generate(reqs))[1]})()
    results = methods.make_runner(recorder, FakeExecutor(), hooks=MOCK_HOOKS)("greedy", problems, cfg)
    sep = cfg.data.assistant_sep
    assert [r.prompt for r in results] == [prompts.policy_prompt(p.question, sep=sep)
                                           for p in problems]
    assert sent and not any(p.startswith(prompts.FEW_SHOT_INSTRUCTIONS) for p in sent)
    assert [r.preds[0] for r in results] == [p.answer for p in problems]


def _mcts_ppm(cfg, problems):
    """mcts_ppm's ProblemResults and, searched again the same way, its trees."""
    from rstar_jax.search.driver import run_mcts

    got = runner()("mcts_ppm", problems, cfg)
    trees = run_mcts(methods.method_config("mcts_ppm", cfg), problems, MockEngine(steps=2, seeded=True),
                     FakeExecutor(), MockScorer(), MOCK_HOOKS, runs=methods.mcts_runs(cfg))
    return got, trees


def test_mcts_ppm_runs_keep_each_runs_best_trajectory(tmp_path):
    """Default protocol (issue 25, point 1): `inference_eval.runs` independent
    MCTS runs per problem, each contributing its best trajectory by PPM
    score; the answer is chosen among those; the compute is reported."""
    from rstar_jax.search.baselines import best_answer

    cfg = make_cfg()
    assert cfg.inference_eval.mode == "runs" and methods.mcts_runs(cfg) == 3
    got, searched = _mcts_ppm(cfg, PROBLEMS)
    for r, s in zip(got, searched):
        assert len(s.trees) == 3 and len(set(s.seeds)) == 3
        bests = [best_answer(t) for t in s.trees]
        assert r.preds == [a for i, a in bests if i is not None]
        assert r.scores == [s.trees[k].nodes[i].ppm_value for k, (i, _) in enumerate(bests)
                            if i is not None]
        assert r.meta["trees"] == 3 and r.meta["rollouts"] == sum(t.rollouts for t in s.trees)
        assert len(r.preds) < len(methods.candidates(s.trees))  # one per run, not every leaf
    out = harness.evaluate(cfg, ["add"], "mcts_ppm", str(tmp_path / "m"), run_method=runner(),
                           problems={"add": PROBLEMS})
    s = out["summaries"][0]
    assert s["avg_candidates"] <= 3
    assert s["avg_rollouts"] == pytest.approx(sum(r.meta["rollouts"] for r in got) / len(got))
    p = methods.protocol(cfg)
    assert (p["mode"], p["runs"], p["rollouts"], p["rollouts_per_problem"]) == ("runs", 3, 4, 12)
    assert s["protocol"] == p
    row = f"| {_fmt1(s['avg_generated_tokens'])} | {_fmt1(s['avg_rollouts'])} |"
    md = open(out["paths"]["markdown"]).read()
    assert "| avg tokens | avg rollouts |" in md and row in md


def _fmt1(v):
    return f"{v:.1f}"


def test_mcts_ppm_single_tree_switch_pools_every_answer_of_one_tree():
    cfg = make_cfg()
    cfg = replace(cfg, inference_eval=replace(cfg.inference_eval, mode="single_tree"))
    assert methods.mcts_runs(cfg) == 1
    got, searched = _mcts_ppm(cfg, PROBLEMS)
    for r, s in zip(got, searched):
        assert len(s.trees) == 1 and r.meta["trees"] == 1
        assert [c[1] for c in methods.candidates(s.trees)] == r.preds
    p = methods.protocol(cfg)
    assert (p["mode"], p["runs"], p["rollouts_per_problem"]) == ("single_tree", 1, 4)

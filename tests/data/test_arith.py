"""The arithmetic world: exact answers, determinism, disjoint seeds, the corpus."""

import re
from fractions import Fraction

import pytest

from rstar_jax.data import prompts
from rstar_jax.data.arith import apply_op, generate_items, generate_problems, make_item
from rstar_jax.data.corpus import make_corpus, render_solution, solution_steps

_NUM = re.compile(r"\d+")


def _recompute(item):
    """The answer from the question text alone, with exact rationals."""
    x = Fraction(item.start)
    for op in item.ops:
        n = Fraction(op.n)
        x = {"add": x + n, "sub": x - n, "mul": x * n, "div": x / n,
             "pct": x * (1 - n / 100), "mod": x % n}[op.kind]
    return x


def test_answers_are_exact_and_match_the_text():
    items = generate_items(3, 400)
    for it in items:
        exact = _recompute(it)
        assert exact.denominator == 1 and exact == it.answer >= 0, it.question
        for op in it.ops:  # every operand is stated in the question
            assert op.sentence in it.question and str(op.n) in op.sentence


def test_levels_have_their_shape():
    items = generate_items(5, 400, levels=[1, 2, 3, 4])
    assert [it.level for it in items[:5]] == [1, 2, 3, 4, 1]
    for it in items:
        n_ops = len(it.ops)
        assert {1: n_ops == 1, 2: n_ops == 2, 3: n_ops in (3, 4), 4: n_ops == 5}[it.level]
        assert bool(it.distractors) == (it.level >= 3)
        assert len(it.question) <= 240
        # No phrasing twice in a problem: every step comment is an unambiguous copy.
        prefixes = [op.sentence.split(str(op.n))[0] for op in it.ops]
        assert len(set(prefixes)) == len(prefixes), it.question
        if it.level == 4:
            assert it.ops[0].kind in ("mul", "pct")
    kinds4 = {op.kind for it in items if it.level == 4 for op in it.ops}
    assert {"pct", "mod", "div", "mul"} <= kinds4


def test_final_mod_share_changes_only_the_remainder_problems():
    half = generate_items(5, 400)
    none = generate_items(5, 400, final_mod=0.0)
    every = generate_items(5, 400, final_mod=1.0)
    mod_ended = [a.ops[-1].kind == "mod" for a in half]
    assert 20 <= sum(mod_ended) <= 80  # about half of the 100 level-4 problems
    assert not any(it.ops[-1].kind == "mod" for it in none)
    assert all(it.ops[-1].kind == "mod" for it in every if it.level == 4)
    for a, b in zip(half, none):
        # Levels 1-3 stay the same; level 4 keeps its shape and exact answers.
        if a.level < 4:
            assert a == b
        else:
            assert len(b.ops) == 5 and b.ops[0].kind in ("mul", "pct")
            assert "not in a box" not in b.question and _recompute(b) == b.answer
    assert sum(a != b for a, b in zip(half, none)) >= sum(mod_ended)
    with pytest.raises(ValueError, match=r"final_mod share must be in \[0, 1\]"):
        generate_items(5, 4, final_mod=1.5)


def test_corpus_follows_the_final_mod_share():
    recs = make_corpus(9, 80, final_mod=0.0)
    assert recs and not any("not in a box" in r["query"] for r in recs)
    assert any("not in a box" in r["query"] for r in make_corpus(9, 80))


def test_worked_example_semantics():
    assert apply_op("pct", 40, 25) == 30
    assert apply_op("mod", 23, 4) == 3
    assert apply_op("div", 36, 4) == 9


def test_deterministic_per_seed_and_index():
    a = generate_problems(11, 50)
    b = generate_problems(11, 50)
    assert [(p.id, p.question, p.answer) for p in a] == [(p.id, p.question, p.answer) for p in b]
    assert make_item(11, 7, 4) == make_item(11, 7, 4)
    assert a[7].question == generate_problems(11, 8)[7].question  # prefix-stable
    assert a[3].meta == {"level": 4, "seed": 11, "index": 3} and a[3].id == "arith-11-3"


def test_different_seeds_give_disjoint_sets():
    train = {p.question for p in generate_problems(0, 1000)}
    test = {p.question for p in generate_problems(1_000_003, 500, levels=[2, 3, 4])}
    assert len(train) >= 995
    assert len(train & test) <= 1


def test_bad_level_is_an_error():
    with pytest.raises(ValueError, match="level"):
        make_item(0, 0, 5)


def test_correct_solution_format_and_value():
    item = make_item(2, 0, 2)
    steps, value = solution_steps(item)
    assert value == item.answer
    text = render_solution(steps, value)
    assert text.startswith(f"{prompts.CODE}\n# Step 1: {item.start_sentence[:-1]}\nx = {item.start}\n"
                           f"{prompts.END_OF_STEP}\n\n# Step 2: ")
    assert text.endswith(f"\n\n# Now print the final answer\nprint(x)\n{prompts.END_OF_CODE}\n"
                         f"{prompts.OUTPUT}{value}{prompts.END_OF_OUTPUT}\n"
                         f"{prompts.ANSWER}The answer is \\boxed{{{value}}}.{prompts.END_OF_ANSWER}")
    assert text.count(prompts.END_OF_STEP) == 3


def _exec_code(response):
    code = response.split(prompts.END_OF_CODE)[0][len(prompts.CODE):]
    code = code.replace(prompts.END_OF_STEP, "").replace("print(x)", "")
    env = {}
    exec(code, env)  # our own generated code, not model output
    return env["x"]


def test_corpus_outputs_agree_with_the_code_even_when_wrong():
    records = make_corpus(9, 400, error_rates=[0.2, 0.4, 0.6, 0.8])
    for r in records:
        printed = int(re.search(r"<output>(-?\d+)<end_of_output>", r["response"]).group(1))
        assert _exec_code(r["response"]) == printed
        assert f"\\boxed{{{printed}}}" in r["response"]
        assert (r["error"] is None) <= r["correct"]
    wrong = {lvl: sum(not r["correct"] for r in records if r["level"] == lvl) / 100 for lvl in (1, 2, 3, 4)}
    # Harder levels carry more mistakes (rates 0.2..0.8; a mistake is sometimes harmless).
    assert wrong[1] < wrong[2] < wrong[4] and 0.05 < wrong[1] < 0.35 and wrong[4] > 0.5
    assert {r["error"] for r in records} == {None, "wrong_op", "wrong_operand", "skip", "off_by_one"}


def test_corpus_error_rates_zero_and_validated():
    assert all(r["correct"] for r in make_corpus(1, 80, error_rates=[0, 0, 0, 0]))
    with pytest.raises(ValueError, match="one error rate per level"):
        make_corpus(1, 4, error_rates=[0.1])


def _pct_lines(response):
    """(correct, twin) counts of percentage steps in a response."""
    right = len(re.findall(r"x = x - x \* \d+ // 100", response))
    twin = len(re.findall(r"x = x \* \d+ // 100", response))
    return right, twin


def test_corpus_habits_make_the_wrong_twin_the_majority_step():
    no_slips = [0, 0, 0, 0]
    records = make_corpus(5, 800, levels=[4], error_rates=no_slips, habits={"pct": 0.7})
    right = twin = 0
    for r in records:
        a, b = _pct_lines(r["response"])
        right, twin = right + a, twin + b
        assert r["habits"] == b
        printed = int(re.search(r"<output>(-?\d+)<end_of_output>", r["response"]).group(1))
        assert _exec_code(r["response"]) == printed
    share = twin / (right + twin)
    assert right + twin > 500 and 0.65 < share < 0.75, share
    # A habit-free corpus is the same whatever other streams draw.
    plain = make_corpus(5, 50, error_rates=[0.2, 0.4, 0.6, 0.8])
    assert plain == [dict(r, habits=0) for r in make_corpus(5, 50, error_rates=[0.2, 0.4, 0.6, 0.8],
                                                            habits={})]
    # Habits change nothing on problems without that kind of step.
    base = make_corpus(5, 40, levels=[1], error_rates=no_slips)
    assert base == make_corpus(5, 40, levels=[1], error_rates=no_slips, habits={"pct": 1.0})


def test_corpus_habits_validated():
    with pytest.raises(ValueError, match="unknown operation kind 'pow'"):
        make_corpus(1, 4, habits={"pow": 0.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_corpus(1, 4, habits={"pct": 1.5})

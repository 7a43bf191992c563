"""`rstar-jax search` end to end with the real engine, PPM scorer, executor
pool and grader, on a random tiny model.

A random model writes junk steps, so these tests check structure, not
quality: a record per problem, tags, visit conservation, terminal reasons,
observations of code steps, byte-identical records for the same seed when
a resumed run finishes what an uninterrupted one did; in process,
one engine request (n samples) per expanded leaf, the parent's prompt KV
reused from the prefix cache, and the configured answer selection. The
tokenizer (`mock.tiny_step_tokenizer`) is small enough that the random
model ends steps and writes `\\boxed{A}` tokens now and then.
"""

import json

import pytest
from search.search_helpers import add_problems

from rstar_jax.cli import main
from rstar_jax.search import tree as T
from rstar_jax.search import treefile
from rstar_jax.testing import mock
from testutil import REPO

PROBLEMS = add_problems(3)  # golds 7, 8, 9
ALLOWED = {T.FINAL_ANSWER, T.TOO_MANY_CODE_ERRORS, T.TOO_MANY_STEPS, T.NO_VALID_CHILD,
           T.INCOMPLETE_STEP, None}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    tok = mock.tiny_step_tokenizer(boxed_answers=("7", "8", "9"))
    tok.save_pretrained(root / "tok")
    probs = root / "problems.jsonl"
    probs.write_text("\n".join(json.dumps({"id": p.id, "question": p.question, "answer": p.answer})
                               for p in PROBLEMS))
    overrides = [
        f"model.vocab_size={len(tok)}", f"model.tokenizer_dir={root / 'tok'}",
        "engine.num_slots=8", "engine.max_seq_len=256", "engine.prefill_buckets=[256]",
        "engine.truncation=left", "mcts.rollouts=4", "mcts.candidates=3", "mcts.max_depth=3",
        "mcts.max_new_tokens_per_step=16", "mcts.temperature=1.0", "mcts.trees_in_flight=2",
        "mcts.ppm_init_value=true", "executor.num_workers=2", "executor.timeout_s=10",
        "logging.progress=false", "seed=4",
    ]
    return root, probs, overrides


def search(capsys, setup, out, *extra):
    root, probs, overrides = setup
    rc = main(["search", "--config", str(REPO / "configs/models/tiny.yaml"), "--problems",
               str(probs), "--out", str(root / out), *overrides, *extra])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    return json.loads(captured.out.strip().splitlines()[-1]), root / out / "trees.0.jsonl"


def check_tree(tree: T.Tree, budget: int) -> None:
    """Structural invariants of one finished MCTS tree."""
    nodes = tree.nodes
    assert 1 <= tree.rollouts <= budget
    finals = 0
    for i, n in enumerate(nodes):
        assert n.terminal_reason in ALLOWED
        for k, ci in enumerate(n.children, start=1):
            c = nodes[ci]
            assert c.parent == i and c.tag == f"{n.tag}.{k}" and c.depth == n.depth + 1
        if n.program is not None:  # every code step ran in the pool
            assert n.observation is not None
        if n.terminal_reason == T.FINAL_ANSWER:
            finals += 1
            assert n.value in (1.0, -1.0) and n.correct is (n.value == 1.0)
        if n.terminal_reason in T.LOCAL_TERMINALS:
            assert (n.N, n.W, n.value) == (1, -1.0, -1.0)
        if i and not n.terminal:
            assert n.ppm_value is not None and -1.0 <= n.ppm_value <= 1.0  # ppm_init_value
    # Visit conservation at every node: its own first update (a PPM initial
    # value or a local terminal's -1, never backed up) plus one visit and the
    # value of every final answer at or below it. Children come after their
    # parents in `nodes`, so one reverse pass sums the subtrees.
    n_below = [0] * len(nodes)
    w_below = [0.0] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        if n.terminal_reason == T.FINAL_ANSWER:
            n_below[i] += 1
            w_below[i] += n.value
        own_n, own_w = 0, 0.0
        if n.terminal_reason in T.LOCAL_TERMINALS:
            own_n, own_w = 1, -1.0
        elif n.ppm_value is not None and n.terminal_reason != T.FINAL_ANSWER:
            own_n, own_w = 1, n.ppm_value
        assert n.N == own_n + n_below[i] and n.W == pytest.approx(own_w + w_below[i])
        if n.parent is not None:
            n_below[n.parent] += n_below[i]
            w_below[n.parent] += w_below[i]
    assert tree.root.N == finals  # the root: exactly one visit per backed-up answer


@pytest.mark.slow  # two searches, each loading and compiling the models
def test_search_with_the_real_engine_is_structured_deterministic_and_resumable(capsys, setup):
    first, path = search(capsys, setup, "a")
    assert (first["searched"], first["skipped"]) == (3, 0)
    records = list(treefile.read_records(str(path)))
    assert sorted(r["id"] for r in records) == [p.id for p in PROBLEMS]
    kinds, observed = set(), 0
    for rec in records:
        assert rec["mode"] == "mcts" and len(rec["trees"]) == 1 and "prediction" not in rec
        tree = treefile.record_trees(rec)[0]
        check_tree(tree, budget=4)
        kinds.update(n.terminal_reason for n in tree.nodes)
        observed += sum(n.observation is not None for n in tree.nodes)
        assert len(tree.nodes) > 1
    assert first["rollouts"] == sum(r["trees"][0]["rollouts"] for r in records)
    assert len(kinds - {None}) >= 2  # the random model does reach several kinds of ends
    assert observed > 0  # its junk code did run in the sandbox

    # Killed after its first record, then resumed by a fresh process state:
    # the records of the uninterrupted run, byte for byte (same seed, new
    # engines, another schedule).
    resume_dir = setup[0] / "b"
    resume_dir.mkdir()
    first_line = path.read_bytes().splitlines(keepends=True)[0]
    (resume_dir / "trees.0.jsonl").write_bytes(first_line)
    for name in ("fingerprint.json", "config.yaml"):  # written before the first tree
        (resume_dir / name).write_bytes((path.parent / name).read_bytes())
    resumed, path2 = search(capsys, setup, "b")
    assert (resumed["skipped"], resumed["searched"]) == (1, 2)
    assert sorted(path2.read_bytes().splitlines()) == sorted(path.read_bytes().splitlines())


class SpyEngine:
    """Delegates to the real engine and records every call's requests."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, requests):
        self.calls.append([(r.prompt, r.params.n) for r in requests])
        return self.engine.generate(requests)


@pytest.mark.slow  # one model load and compile
def test_inference_search_in_process_one_request_per_leaf_and_parent_kv_reused(setup, tmp_path):
    from rstar_jax.config.loader import load_config
    from rstar_jax.execution.pool import ExecutorPool
    from rstar_jax.inference import load_policy_engine, load_ppm_scorer
    from rstar_jax.search.run import search_to_dir

    root, _, overrides = setup
    tok = mock.tiny_step_tokenizer(boxed_answers=("7", "8", "9"))
    cfg = load_config(str(REPO / "configs/models/tiny.yaml"), overrides + [
        "mcts.terminal_value=ppm", "mcts.ppm_init_value=false", "mcts.rollouts=6",
        "mcts.answer_selection=majority"])
    engine = SpyEngine(load_policy_engine(cfg, tokenizer=tok))
    scorer = load_ppm_scorer(cfg, tokenizer=tok)
    executor = ExecutorPool(cfg.executor)
    try:
        summary = search_to_dir(cfg, PROBLEMS, str(tmp_path), engine, executor, scorer,
                                process_index=0, process_count=1)
    finally:
        executor.close()
    assert summary["searched"] == 3
    records = list(treefile.read_records(str(tmp_path / "trees.0.jsonl")))
    trees = [treefile.record_trees(r)[0] for r in records]
    # The n candidates of a leaf are ONE request with n samples, and every
    # leaf expanded is exactly one request.
    requests = [req for call in engine.calls for req in call]
    assert all(n == 3 for _, n in requests)
    expanded = sum(n.expanded for t in trees for n in t.nodes)
    assert len(requests) == expanded and len(requests) > len(trees)
    # Each non-root leaf's prompt extends its parent's, whose KV the engine
    # cached when it generated the parent's candidates: all of them hit.
    cache = engine.engine.prefix_cache
    assert cache.hits == expanded - len(trees) and cache.reused_tokens > 16 * cache.hits

    seen = 0
    for rec, tree in zip(records, trees):
        finals = [tree.nodes[i] for i in T.answer_nodes(tree)]
        for n in finals:  # PPM-valued terminals, graded against the gold answer
            assert n.value == n.ppm_value and -1.0 <= n.value <= 1.0 and n.correct is not None
        assert rec["answer_selection"] == "majority" and rec["answer_candidates"] == len(finals)
        answers = [n.final_answer for n in finals if n.final_answer is not None]
        if not answers:
            assert rec["prediction"] is None
            continue
        seen += 1
        # The tokenizer's answers are the distinct strings 7, 8, 9: majority by count,
        # ties to the first seen.
        best = max(dict.fromkeys(answers), key=answers.count)
        assert rec["prediction"] == best
        node = next(n for n in finals if n.final_answer == best)
        assert rec["prediction_tag"] == node.tag and rec["prediction_correct"] is node.correct
    assert seen >= 1

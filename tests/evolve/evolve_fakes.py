"""Fake stage functions with hand-checkable outputs (no model, no search).

Each fake writes a small file, resumes from its partial output like the real
stages do, and logs every unit of work to RUN_DIR/calls.log so tests can
count repeats. `FAKE_KILL=roundN.stage:K` makes the fake search stop after K
problems: by SIGKILL of its own process (`FAKE_KILL_MODE=sigkill`, for the
CLI test) or by raising `SimulatedKill` (in-process tests).
"""

import json
import os
import signal


class SimulatedKill(RuntimeError):
    pass


def _log(ctx, what):
    with open(os.path.join(ctx.run_dir, "calls.log"), "a") as f:
        f.write(f"round{ctx.round}.{ctx.stage}:{what}\n")


def _model(ctx, init):
    os.makedirs(ctx.path("model"), exist_ok=True)
    with open(ctx.path("model", "weights.json"), "w") as f:
        json.dump({"round": ctx.round, "stage": ctx.stage, "init": init}, f)
    _log(ctx, "train")
    return {"outputs": {"model": ctx.path("model")}}


def world(ctx):
    _log(ctx, "world")
    os.makedirs(ctx.path("tokenizer"), exist_ok=True)
    return {"outputs": {"tokenizer": ctx.path("tokenizer")}, "counts": {"vocab": 7}}


def pretrain(ctx):
    return _model(ctx, None)


def search(ctx):
    path = ctx.problems("train")
    with open(path) as f:
        ids = [json.loads(line)["id"] for line in f]
    policy, ppm = ctx.search_policy(), ctx.search_ppm()
    out = ctx.path("trees.jsonl")
    done = set()
    if os.path.exists(out):
        with open(out) as f:
            done = {json.loads(line)["id"] for line in f if line.endswith("\n")}
    kill = os.environ.get("FAKE_KILL", "")
    kill_at = int(kill.split(":")[1]) if kill.startswith(f"round{ctx.round}.search:") else None
    with open(out, "a") as f:
        for pid in ids:
            if pid in done:
                continue
            if kill_at is not None and len(done) >= kill_at:
                if os.environ.get("FAKE_KILL_MODE") == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise SimulatedKill(pid)
            # Round N solves problems whose index % 4 < N.
            solved = int(pid.rsplit("-", 1)[1]) % 4 < ctx.round
            f.write(json.dumps({"id": pid, "solved": solved}) + "\n")
            f.flush()
            done.add(pid)
            _log(ctx, pid)
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    solved = sum(r["solved"] for r in rows)
    return {"outputs": {"trees": out}, "counts": {"problems": len(rows), "solved": solved},
            "metrics": {"solved_share": solved / len(rows)},
            "inputs_seen": {"policy": policy, "ppm": ppm}}


def extract(ctx):
    trees = ctx.output(ctx.round, "search", "trees")
    with open(trees) as f:
        n = sum(json.loads(line)["solved"] for line in f)
    _log(ctx, "extract")
    with open(ctx.path("sft.jsonl"), "w") as f:
        f.write(f"{n}\n")
    return {"outputs": {"sft": ctx.path("sft.jsonl")}, "counts": {"sft": 2 * n}}


def sft(ctx):
    ctx.output(ctx.round, "extract", "sft")
    return _model(ctx, ctx.sft_init())


def ppm(ctx):
    result = _model(ctx, ctx.ppm_init())
    return {**result, "metrics": {"ppm_pair_acc": 0.6 + 0.05 * ctx.round},
            "details": {"ppm_pairs": {"heldout_share": 0.1, "measured_on": "held_out_problems",
                                      "problems": 1, "pairs": 6}}}


def evaluate(ctx):
    ctx.policy()
    ctx.ppm()
    _log(ctx, "eval")
    r = ctx.round
    path = ctx.path("correctness.json")
    with open(path, "w") as f:
        json.dump({"sets": {"test": fake_correctness(r)}}, f)
    if r == 0:
        return {"outputs": {"correctness": path}, "metrics": {"greedy_acc": 0.25},
                "details": {"benchmarks": {"test": {"n": 10, "greedy_acc": 0.0}}}}
    from rstar_jax.evaluation.methods import protocol

    return {"outputs": {"correctness": path},
            "metrics": {"greedy_acc": 0.25 + 0.1 * r, "mcts_ppm_acc": 0.35 + 0.1 * r,
                        "majority_acc": 0.3 + 0.1 * r, "ppm_selected_acc": 0.32 + 0.1 * r,
                        "trajectories": 8},
            "details": {"protocol": protocol(ctx.cfg), "ppm_margins": fake_margins(r),
                        "benchmarks": {"test": {"n": 10, "greedy_acc": 0.2 * r,
                                                "mcts_ppm_acc": 0.2 * r + 0.1}}}}


def fake_correctness(r):
    """Ten test problems: the base gets none; round r's greedy the first 2r,
    its MCTS+PPM one more, PPM-selected and majority the same as greedy; one
    of the k trajectories right on 2 more problems than the vote, one of the
    tree's answers on 3 more than MCTS+PPM (capped at 10)."""
    ids = [f"t{i}" for i in range(10)]
    greedy = [1.0 if i < 2 * r else 0.0 for i in range(10)]
    out = {"ids": ids, "digests": [f"d{i}" for i in range(10)], "greedy": greedy}
    if r:
        out.update(mcts_ppm=[1.0 if i < 2 * r + 1 else 0.0 for i in range(10)],
                   ppm_selected=list(greedy), majority=list(greedy),
                   any_of_k=[1.0 if i < 2 * r + 2 else 0.0 for i in range(10)],
                   mcts_any=[1.0 if i < 2 * r + 4 else 0.0 for i in range(10)])
    return out


def fake_margins(r):
    """Per-level margins as `evaluation.report.ppm_margins` writes them."""
    row = {"problems": 4, "mixed": 2, "all_right": 1, "all_wrong": 1,
           "mean_margin": 0.1 * r - 0.2, "median_margin": 0.05 * r, "right_first": 0.5}
    return {"best_of_n": {"1": row, "all": row}, "mcts_ppm": {"all": row}}

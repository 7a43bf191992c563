"""Progress where pods and CI read it: log lines when stderr is a file, a bar
that stays on a terminal, and the metrics JSONL of search and evaluate."""

import io
import json
import logging
import os
import re
import subprocess
import sys

from rstar_jax.utils.logging import MetricsLog, Progress, format_duration
from testutil import REPO

LINE = re.compile(r"INFO rstar_jax\.progress: search\[mcts\]: (\d+)/4 problems \(\d+%\), "
                  r"[\d.e+]+ problems/[sh], ETA \S+, elapsed \S+, solved=\d+%")


def test_search_stage_writes_progress_lines_to_a_redirected_stderr(tmp_path):
    err = tmp_path / "stderr.log"
    with open(err, "w") as f:
        proc = subprocess.run(
            [sys.executable, str(REPO / "tests" / "utils" / "progress_stage.py"),
             str(tmp_path / "p.jsonl"), str(tmp_path / "out"), "logging.progress_every_s=0"],
            stdout=subprocess.PIPE, stderr=f, text=True, cwd=REPO, timeout=300,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")])))
    log = err.read_text()
    assert proc.returncode == 0, log
    assert "search[mcts]: starting, 4 problems to do" in log
    done = [int(m.group(1)) for m in LINE.finditer(log)]
    assert done == [1, 2, 3, 4], log  # every_s=0: a line per problem, none repeated at the end
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.0.jsonl").read_text().splitlines()]
    assert [r["done"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["searched"] == 4 and rows[-1]["solved_share"] == 1.0
    assert {r["problem"] for r in rows} == {"p0", "p1", "p2", "p3"}


def _capture():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("rstar_jax.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return stream, lambda: logger.removeHandler(handler)


def test_lines_are_throttled_by_every_s():
    stream, undo = _capture()
    try:
        p = Progress(10, desc="train lm", unit="step", every_s=3600, stream=io.StringIO())
        for _ in range(10):
            p.update(1, loss=0.5)
        p.close()
    finally:
        undo()
    lines = stream.getvalue().splitlines()
    # The start line and the end line only: the hour never passed.
    assert len(lines) == 2, lines
    assert lines[0] == "train lm: starting, 10 steps to do"
    assert lines[1].startswith("train lm: 10/10 steps (100%), ") and lines[1].endswith("loss=0.5")


def test_resumed_stage_says_so_and_counts_its_own_rate():
    stream, undo = _capture()
    try:
        p = Progress(8, desc="search[mcts]", unit="problem", initial=6, every_s=0,
                     stream=io.StringIO())
        p.update(1)
        p.close()
    finally:
        undo()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "search[mcts]: starting, 2 problems to do, 6 already done"
    assert lines[1].startswith("search[mcts]: 7/8 problems (88%)") and len(lines) == 2


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_gets_a_bar_that_stays_and_no_log_lines():
    stream, undo = _capture()
    term = _Terminal()
    try:
        p = Progress(3, desc="evaluate gsm8k greedy", unit="problem", every_s=0, stream=term)
        for _ in range(3):
            p.update(1, accuracy="50.0%")
        p.close()
    finally:
        undo()
    assert stream.getvalue() == ""
    shown = term.getvalue()
    assert "evaluate gsm8k greedy" in shown and "3/3" in shown and "accuracy=50.0%" in shown
    assert shown.endswith("\n")  # leave=True: the finished bar stays on screen


def test_disabled_progress_is_silent():
    stream, undo = _capture()
    try:
        p = Progress(3, desc="x", enabled=False, every_s=0, stream=io.StringIO())
        p.update(3)
        p.close()
    finally:
        undo()
    assert stream.getvalue() == "" and p.bar is None


def test_format_duration():
    assert [format_duration(s) for s in (0, 12.4, 166, 11040)] == ["0s", "12s", "2m46s", "3h04m"]
    assert format_duration(float("inf")) == "?"


def test_metrics_log_appends(tmp_path):
    path = tmp_path / "d" / "metrics.jsonl"
    for i in range(2):
        m = MetricsLog(str(path))
        m.write({"i": i})
        m.close()
    assert [json.loads(x)["i"] for x in path.read_text().splitlines()] == [0, 1]
    off = MetricsLog(str(tmp_path / "off.jsonl"), enabled=False)
    off.write({"i": 0})
    assert not (tmp_path / "off.jsonl").exists()


def test_evaluate_reports_accuracy_so_far_in_lines_and_metrics(tmp_path):
    from evaluation.test_harness import PROBLEMS, FixedRunner, make_cfg
    from evaluation.toygrader import toy_equiv, toy_grade

    from rstar_jax.config.schema import replace
    from rstar_jax.evaluation import harness

    cfg = make_cfg()
    cfg = replace(cfg, logging=replace(cfg.logging, progress=True, progress_every_s=0.0))
    stream, undo = _capture()
    try:
        harness.evaluate(cfg, ["gsm8k"], "greedy", str(tmp_path / "out"), run_method=FixedRunner(),
                         grade=toy_grade, equiv=toy_equiv, problems={"gsm8k": PROBLEMS})
    finally:
        undo()
    lines = stream.getvalue().splitlines()
    # chunk_size=2: greedy gets p0 right, p1 wrong (None), p2 right, p3 wrong (None).
    assert lines[1].startswith("evaluate gsm8k greedy: 2/4 problems") and "accuracy=50.0%" in lines[1]
    assert lines[2].startswith("evaluate gsm8k greedy: 4/4 problems") and "accuracy=50.0%" in lines[2]
    rows = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["done"], r["correct"], r["accuracy"]) for r in rows] == [(2, 1, 50.0), (4, 2, 50.0)]


def test_evaluate_bar_counts_each_problem_as_the_runner_finishes_it(tmp_path):
    """A runner that reports finished problems (`on_done`, as the real MCTS and
    baseline runners do) moves the bar per problem, not per chunk."""
    from evaluation.test_harness import PROBLEMS, FixedRunner, make_cfg
    from evaluation.toygrader import toy_equiv, toy_grade

    from rstar_jax.config.schema import replace
    from rstar_jax.evaluation import harness

    class ReportingRunner(FixedRunner):
        def __call__(self, method, problems, cfg, on_done=None):
            out = super().__call__(method, problems, cfg)
            for r in out:
                on_done(r)
                on_done(r)  # a result reported twice still counts once per problem
            return out

    cfg = make_cfg()
    cfg = replace(cfg, logging=replace(cfg.logging, progress=True, progress_every_s=0.0))
    stream, undo = _capture()
    try:
        harness.evaluate(cfg, ["gsm8k"], "greedy", str(tmp_path / "out"),
                         run_method=ReportingRunner(), grade=toy_grade, equiv=toy_equiv,
                         problems={"gsm8k": PROBLEMS})
    finally:
        undo()
    done = [int(m.group(1)) for m in re.finditer(r"evaluate gsm8k greedy: (\d+)/4 problems",
                                                 stream.getvalue())]
    # chunk_size=2: a line per problem as it finishes, then the chunk's graded line.
    assert done[:2] == [1, 2] and 3 in done and done[-1] == 4, stream.getvalue()
    assert done == sorted(done)


def test_log_handler_follows_the_current_stderr(monkeypatch):
    """A handler set up under one stderr keeps working when that stream is
    replaced and closed (pytest's capture, a notebook's redirect)."""
    import logging as std_logging

    from rstar_jax.utils.logging import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO")
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    std_logging.getLogger("rstar_jax.test").warning("still heard")
    assert "still heard" in second.getvalue()

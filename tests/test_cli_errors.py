"""Every user mistake reported in issue 20, run as a user runs it: the real
`rstar-jax` process, the exact arguments. Each exits with status 2 and one
line on stderr naming what is wrong, with no traceback and no model loaded
first.

"No model loaded first" is checked two ways: most commands run with a
`jax` package on the path that refuses to import, so the refusal provably
comes before JAX (let alone a model); the rest (`sample`, which imports the
engine package to parse its flags) use `configs/base.yaml`, a 7B
architecture whose fresh init would not finish within the timeout.

The cases run concurrently (one process each) so that the module costs a
few seconds of wall time.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from testutil import REPO

BASE = "configs/base.yaml"
TINY = "configs/models/tiny.yaml"
DEMO = "configs/demo/base.yaml"

# (id, argv, stdin, text expected in the one stderr line, jax allowed)
CASES = [
    ("exec-timeout-nan", ["exec", "--timeout", "nan"], "{}", "--timeout: nan; expected a number in (0, 86400]", False),
    ("exec-timeout-inf", ["exec", "--timeout", "inf"], "{}", "--timeout: inf; expected", False),
    ("exec-timeout-1e300", ["exec", "--timeout", "1e300"], "{}", "--timeout: 1e+300; expected", False),
    ("exec-cfg-timeout-nan", ["exec", "executor.timeout_s=nan"], "{}", "'executor.timeout_s': nan", False),
    ("exec-cfg-timeout--1", ["exec", "executor.timeout_s=-1"], "{}", "'executor.timeout_s': -1.0", False),
    ("exec-cfg-timeout-0", ["exec", "executor.timeout_s=0"], "{}", "'executor.timeout_s': 0.0", False),
    ("exec-workers--3", ["exec", "executor.num_workers=-3"], "{}", "'executor.num_workers': -3", False),
    ("exec-memory-1", ["exec", "executor.memory_limit_mb=1"], "{}",
     "'executor.memory_limit_mb': 1; expected a number in [256, inf)", False),
    ("grade-timeout--1", ["grade", "--timeout", "-1"], "{}", "--timeout: -1.0; expected", False),
    ("train-batch--4", ["train-policy", "--config", TINY, "--data", "{data}", "--out", "{tmp}/t",
                        "train.sft.batch_size=-4"], None, "'train.sft.batch_size': -4", False),
    ("search-rollouts-0", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                           "mcts.rollouts=0"], None, "'mcts.rollouts': 0; expected a number in [1, inf)", False),
    ("search-rollouts--1", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                            "mcts.rollouts=-1"], None, "'mcts.rollouts': -1", False),
    ("search-depth--3", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                         "mcts.max_depth=-3"], None, "'mcts.max_depth': -3", False),
    ("search-candidates-0", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                             "mcts.candidates=0"], None, "'mcts.candidates': 0", False),
    ("search-limit-0", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                        "--limit", "0"], None, "--limit: 0; expected a number in [1, inf)", False),
    ("search-limit--1", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                         "--limit", "-1"], None, "--limit: -1; expected", False),
    ("search-out-file", ["search", "--config", BASE, "--problems", "{data}", "--out", "{file}"],
     None, "--out {file} is a file", False),
    ("search-ckpt-missing", ["search", "--config", BASE, "--problems", "{data}", "--out", "{tmp}/s",
                             "model.checkpoint=artifacts/nope"], None,
     "model.checkpoint=artifacts/nope: no such directory", False),
    ("make-world-count--5", ["make-world", "--config", DEMO, "--out", "{tmp}/w", "data.arith_count=-5"],
     None, "'data.arith_count': -5", False),
    ("make-world-out-file", ["make-world", "--config", DEMO, "--out", "{file}"], None,
     "--out {file} is a file", False),
    ("extract-out-file", ["extract", "--trees", "{tmp}", "--out", "{file}"], None,
     "--out {file} is a file", False),
    ("config-show-range", ["config", "show", BASE, "mcts.rollouts=-5"], None,
     "'mcts.rollouts': -5; expected a number in [1, inf)", False),
    ("config-show-dir", ["config", "show", "configs"], None, "is a directory", False),
    ("config-show-binary", ["config", "show", "{binary}"], None, "is not UTF-8 text", False),
    ("evaluate-benchmark-dir", ["evaluate", "--config", BASE, "--benchmark", "gsm8k", "--out",
                                "{tmp}/e", "eval.benchmark_dir={tmp}/nope"], None,
     "eval.benchmark_dir", False),
    ("evaluate-limit-0", ["evaluate", "--config", BASE, "--out", "{tmp}/e", "--limit", "0"], None,
     "--limit: 0", False),
    ("sample-temperature--1", ["sample", "--config", BASE, "--prompt", "1+1?", "--temperature", "-1"],
     None, "--temperature: -1.0; expected a number in [0, 100]", True),
    ("sample-no-tokenizer", ["sample", "--config", BASE, "--prompt", "1+1?"], None,
     "no tokenizer: set model.tokenizer_dir", True),
    ("sample-tokenizer-missing", ["sample", "--config", BASE, "--prompt", "1+1?",
                                  "model.tokenizer_dir=artifacts/nope"], None,
     "model.tokenizer_dir=artifacts/nope: no such directory", True),
    ("sample-ckpt-missing", ["sample", "--config", BASE, "--prompt", "1+1?",
                             "model.checkpoint=artifacts/nope"], None,
     "model.checkpoint=artifacts/nope: no such directory", True),
    ("sample-mcts-candidates-0", ["sample", "--config", BASE, "--prompt", "1+1?", "mcts.candidates=0"],
     None, "'mcts.candidates': 0", True),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_errors")
    data = tmp / "problems.jsonl"
    data.write_text(json.dumps({"id": "p1", "question": "1+1?", "answer": "2",
                                "query": "1+1?", "response": "2"}) + "\n")
    file = tmp / "a_file"
    file.write_text("not a directory\n")
    binary = tmp / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00 model: x\n")
    nojax = tmp / "nojax" / "jax"
    nojax.mkdir(parents=True)
    (nojax / "__init__.py").write_text("raise ImportError('jax imported before the refusal')\n")
    subs = {"{tmp}": str(tmp), "{data}": str(data), "{file}": str(file), "{binary}": str(binary)}

    def fill(text):
        for k, v in subs.items():
            text = text.replace(k, v)
        return text

    def run(case):
        name, argv, stdin, expected, jax_ok = case
        # Without `jax_ok` the stub comes first on the path, before the installed jax.
        path = [str(REPO)] if jax_ok else [str(nojax.parent), str(REPO)]
        env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(path))
        proc = subprocess.run([sys.executable, "-m", "rstar_jax", *map(fill, argv)],
                              input=stdin or "", capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=120)
        return name, (proc, fill(expected))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2(results, name):
    proc, expected = results[name]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in lines[0], lines[0]
    assert lines[0].startswith("rstar-jax")
    assert proc.stdout == ""


def test_version():
    proc = subprocess.run([sys.executable, "-m", "rstar_jax", "--version"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.startswith("rstar-jax 0.")


def test_overrides_anywhere_on_the_line():
    from rstar_jax.cli import parse_args

    args = parse_args(["search", "--config", BASE, "a.b=1", "--limit", "2", "c.d=2",
                       "--problems", "p.jsonl", "e.f=3", "--out", "o"])
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=3"] and args.limit == 2
    with pytest.raises(SystemExit) as e:
        parse_args(["search", "--config", BASE, "--problems", "p", "--out", "o", "--nope"])
    assert e.value.code == 2


def test_command_table_matches_the_registered_commands():
    from rstar_jax.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for command in COMMANDS:  # the fast path registers the command it is asked for
        sub = next(a for a in build_parser(command)._actions if a.dest == "command")
        assert command in sub.choices

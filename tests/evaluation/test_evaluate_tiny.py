"""`rstar-jax evaluate`: every method end to end on a tiny random model over
a few problems of every benchmark (real engine, executor pool and PPM).

The tiny model writes noise, so accuracy is near 0: this checks the wiring
(prompts in, candidates, scores, tokens and reports out), not the method."""

import argparse
import json

import pytest

from rstar_jax.data.benchmarks import PAPER_BENCHMARKS, load_benchmark
from rstar_jax.evaluation import commands, methods
from testutil import REPO

METHODS = ("greedy", "majority", "best_of_n", "beam", "mcts_ppm")


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, shared_data):
    from rstar_jax.data.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("tiny")
    bench = shared_data / "benchmarks"
    texts = [p.question for b in PAPER_BENCHMARKS for p in load_benchmark(b, path=str(bench),
                                                                         limit=20)]
    sft = json.loads((shared_data / "rstar_examples" / "sft_data_examples.json").read_text())
    texts += [ex["response"] for ex in sft]
    train_tokenizer(texts, str(d / "tok"), vocab_size=512)
    cfg = d / "tiny.yaml"
    cfg.write_text(f"""base_config:
  - {REPO}/configs/base.yaml
  - {REPO}/configs/models/tiny.yaml
model:
  tokenizer_dir: {d / 'tok'}
engine:
  num_slots: 8
  max_seq_len: 1024
  prefill_buckets: [1024]
  max_new_tokens: 16
  truncation: left
  score_batch_size: 8
mcts:
  rollouts: 2
  candidates: 2
  max_depth: 3
  max_new_tokens_per_step: 12
  greedy_max_new_tokens: 24    # the whole-solution greedy's call
  beam_width: 2
  trees_in_flight: 8
inference_eval:
  runs: 2                      # independent MCTS runs per problem
  rollouts: 2
  candidates: 2
executor:
  num_workers: 1
  timeout_s: 5.0
eval:
  benchmark_dir: {bench}
  k: 2
  limit: 2
  chunk_size: 8
  bootstrap_samples: 20
  allow_untrained_ppm: true    # a tiny random model: the PPM methods score with a fresh head
logging:
  level: WARNING
  progress: false
""")
    return str(cfg)


@pytest.mark.slow
def test_every_method_on_every_benchmark(tiny_config, tmp_path, capsys, monkeypatch):
    # One engine, pool and PPM for all five commands (one compile), closed at the end.
    real_close = methods.close_session
    monkeypatch.setattr(methods, "close_session", lambda: None)
    try:
        run_all(tiny_config, tmp_path, capsys)
    finally:
        real_close()


def run_all(tiny_config, tmp_path, capsys):
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers(dest="command"))
    names = ",".join(PAPER_BENCHMARKS)
    for method in METHODS:
        out = tmp_path / method
        args = p.parse_args(["evaluate", "--config", tiny_config, "--benchmark", names,
                             "--method", method, "--out", str(out)])
        assert commands._evaluate(args) == 0, capsys.readouterr().err
        summary = json.loads((out / "summary.json").read_text())["benchmarks"]
        assert [s["benchmark"] for s in summary] == list(PAPER_BENCHMARKS)
        assert all(s["n"] == 2 and s["accuracy"] is not None for s in summary)
        for b in PAPER_BENCHMARKS:
            recs = [json.loads(x) for x in (out / b / "results.jsonl").read_text().splitlines()]
            assert len(recs) == 2
            assert all(r["outputs"] and r["generated_tokens"] > 0 for r in recs)
            if method in ("best_of_n", "beam", "mcts_ppm"):
                assert all(r["scores"] is not None for r in recs)


@pytest.mark.slow
def test_evaluate_ppm_with_a_tiny_ppm(tiny_config, tmp_path, capsys, shared_data):
    p = argparse.ArgumentParser()
    commands.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["evaluate-ppm", "--config", tiny_config, "--benchmark", "processbench",
                         "--data", str(shared_data / "processbench"), "--subsets", "gsm8k,math",
                         "--limit", "4", "--out", str(tmp_path)])
    assert commands._evaluate_ppm(args) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    assert got["tuned_on"] == "gsm8k" and isinstance(got["threshold"], float)
    for name in ("gsm8k", "math"):
        s = got["subsets"][name]
        assert s["n_error"] == 2 and s["n_correct"] == 2
        a, b = s["error_acc"], s["correct_acc"]
        assert s["f1"] == pytest.approx(0.0 if a + b == 0 else 2 * a * b / (a + b))
    assert (tmp_path / "processbench.json").is_file()

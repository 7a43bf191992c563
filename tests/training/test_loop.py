"""The host loop end to end: loss falls, PPM learns from a policy start,
SIGKILL + restart equals an uninterrupted run, two processes equal one."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import (
    TINY,
    final_params,
    memorisable_sft,
    read_metrics,
    resume_config,
    save_tiny_tokenizer,
    tiny_config,
    write_jsonl,
)

from rstar_jax import cli
from rstar_jax.models.mesh import make_mesh
from rstar_jax.training import state as st
from rstar_jax.training.loop import train_policy, train_ppm

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return save_tiny_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "sft.jsonl", memorisable_sft(8))


@pytest.fixture(scope="module")
def policy_run(tok_dir, sft_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("policy"))
    cfg = tiny_config(tok_dir, "train.sft.max_steps=40", "train.sft.learning_rate=0.01",
                      "train.sft.schedule=constant", "train.log_every=5", "train.tensorboard=true")
    return out, train_policy(cfg, sft_file, out)


def test_sft_loss_falls_on_a_memorisable_set(policy_run):
    out, summary = policy_run
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(5, 45, 5))
    first, last = rows[0]["loss"], rows[-1]["loss"]
    # uniform guessing over 512 tokens is ln 512 = 6.24; memorised: far below
    assert first > 4.0 and last < 1.0 and last < first / 5
    assert rows[-1]["token_accuracy"] > 0.7
    assert summary["steps"] == 40 and summary["final_loss"] == pytest.approx(last)
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["tokens"] == summary["tokens"] > 0
    assert os.path.isfile(os.path.join(out, "final", "rstar_model.json"))
    assert os.path.isdir(os.path.join(out, "final", "tokenizer"))
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tb")))


def test_ppm_starts_from_the_policy_and_learns_pairs(policy_run, tok_dir, tmp_path):
    pol_out, _ = policy_run
    pairs = [{"prompt": f"<|user|>:\nQ{i}\n\n<|assistant|>: ", "pos": f"good {i}<end_of_step>",
              "neg": f"bad {i}<end_of_step>", "pos_count": 2, "neg_count": 2} for i in range(8)]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = tiny_config(tok_dir, "train.ppm.max_steps=30", "train.ppm.learning_rate=0.003",
                      "train.ppm.schedule=constant", "train.log_every=10",
                      "train.eval_fraction=0.25", "train.eval_every=15")
    summary = train_ppm(cfg, data, str(tmp_path / "ppm"), init_from=os.path.join(pol_out, "final"))
    rows = read_metrics(str(tmp_path / "ppm"))
    # Each pair weighs 1/4 (a step's 2 x 2 pairs) and the loss is over pairs
    # (train.ppm_loss_norm=pairs): ln 2 / 4 = 0.17 at chance.
    assert rows[0]["loss"] > rows[-1]["loss"] and rows[-1]["loss"] < 0.2 / 4
    assert summary["pair_accuracy"] == 1.0
    # 2 of the 8 pairs held out, evaluated every 15 steps and at the end
    assert summary["examples"] == 6 and summary["eval_examples"] == 2
    evals = read_metrics(str(tmp_path / "ppm"), "eval")
    assert [r["step"] for r in evals] == [15, 30]
    assert evals[-1]["loss"] < evals[0]["loss"] and 0 <= evals[-1]["pair_accuracy"] <= 1
    pol, ppm = final_params(pol_out), final_params(str(tmp_path / "ppm"))
    assert set(ppm) == {"model", "value_kernel", "value_bias"}
    # the PPM's starting point is exactly the policy's backbone
    _, init, _, _ = st.load_for_training(cfg, "ppm", make_mesh(cfg.mesh),
                                         os.path.join(pol_out, "final"))
    for x, y in zip(jax.tree.leaves(jax.device_get(init["model"])), jax.tree.leaves(pol["model"])):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tok_dir, sft_file, tmp_path):
    ref, out = str(tmp_path / "ref"), str(tmp_path / "killed")
    train_policy(resume_config(tok_dir), sft_file, ref)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "resume_worker.py"), tok_dir,
                           sft_file, out, "7", "6"], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert [r["step"] for r in read_metrics(out)] == list(range(1, 8))
    assert not os.path.exists(os.path.join(out, "final"))
    assert sorted(os.listdir(os.path.join(out, "ckpt"))) == ["3", "6", "tokenizer"]
    summary = train_policy(resume_config(tok_dir), sft_file, out)  # resumes at step 6
    assert summary["steps"] == 8
    got, want = read_metrics(out), read_metrics(ref)
    assert [r["step"] for r in got] == list(range(1, 9))
    assert [r["loss"] for r in got] == [r["loss"] for r in want]
    assert sorted(os.listdir(os.path.join(out, "ckpt"))) == ["6", "8", "tokenizer"]  # keep=2
    a, b = final_params(out), final_params(ref)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    # a finished run rerun: nothing left to train, same result
    again = train_policy(resume_config(tok_dir), sft_file, out)
    assert again["final_loss"] == summary["final_loss"] == got[-1]["loss"]
    assert read_metrics(out) == got


@pytest.mark.slow
def test_two_processes_train_like_one(tok_dir, tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", memorisable_sft(16))
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "two")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multihost_worker.py"), str(i),
                               str(port), tok_dir, data, out], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    one = str(tmp_path / "one")
    cfg = tiny_config(tok_dir, "train.sft.max_steps=3", "mesh.data=2", "mesh.fsdp=2",
                      "mesh.tensor=2", "checkpoint.save_every=2", "train.sft.batch_size=8")
    train_policy(cfg, data, one)
    got, want = read_metrics(out), read_metrics(one)
    assert [r["step"] for r in got] == [1, 2, 3]
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=1e-6)
    for x, y in zip(jax.tree.leaves(final_params(out)), jax.tree.leaves(final_params(one))):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_cli_rejects_bad_input_with_status_2(tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", ["{nope", {"query": ""}])
    common = ["--config", TINY, "--out", str(tmp_path / "o")]
    assert cli.main(["train-policy", "--data", str(tmp_path / "missing.jsonl")] + common) == 2
    assert cli.main(["train-ppm", "--data", str(bad)] + common + [
        f"model.tokenizer_dir={save_tiny_tokenizer(str(tmp_path / 'tok'))}"]) == 2
    err = capsys.readouterr().err
    assert "no such data file" in err and "no usable ppm record" in err
    assert cli.main(["train-ppm", "--data", str(bad), "--init-from", str(tmp_path / "nope")]
                    + common) == 2

"""Makes the demo's base model (`configs/demo/base_model/`) from the demo's
own recipe, and says how it was made.

The demo starts its rounds from this base instead of pretraining one on
every run (issue 26: pretraining was ~9 of the demo's minutes on a 2-core
host, and the base it made depended on how the host rounds). What this
does, all offline:
  1. `rstar-jax evolve --config configs/demo/evolve.yaml --only round0` with
     the pretraining stage on (`evolve.base_stages=[world,pretrain,eval]`,
     `evolve.base_policy=null`): the world, 550 steps of pretraining on its
     corpus (`evolve.pretrain`) under the demo's pinned CPU rounding, and the
     base's greedy accuracy on the test split;
  2. `rstar-jax convert ckpt-to-hf` of the pretrained checkpoint (float32,
     with the world's tokenizer) into OUT;
  3. OUT/PROVENANCE.json: the commands, the commit, the runtime settings
     (CPU, ISA, XLA flags, pool size), the final losses, the base's greedy
     accuracy and the weights' sha256.

    python scripts/make_demo_base.py [--run-dir runs/demo_base] [--out configs/demo/base_model]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/demo/evolve.yaml"
PRETRAIN = ["evolve.base_stages=[world,pretrain,eval]", "evolve.base_policy=null"]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str:
    """HEAD, marked when the working tree holds uncommitted changes to tracked files."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def _shown(path: str) -> str:
    """`path` relative to the repository when inside it, else as it is."""
    rel = os.path.relpath(path, REPO)
    return path if rel.startswith("..") else rel


def _run(cmd) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default="runs/demo_base", help="evolve run directory for round 0")
    p.add_argument("--out", default="configs/demo/base_model", help="HF directory to write")
    args = p.parse_args(argv)
    cli = [sys.executable, "-m", "rstar_jax"]
    evolve = [*cli, "evolve", "--config", CONFIG, "--out", args.run_dir, "--only", "round0",
              *PRETRAIN]
    _run(evolve)
    run_dir = os.path.join(REPO, args.run_dir)
    with open(os.path.join(run_dir, "round_0/pretrain/manifest.json"), encoding="utf-8") as f:
        pretrain = json.load(f)
    ckpt = os.path.join(run_dir, "round_0/pretrain", pretrain["outputs"]["model"])
    out = os.path.join(REPO, args.out)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run([*cli, "convert", "ckpt-to-hf", "--ckpt", ckpt, "--out", tmp, "--dtype", "float32"])
    with open(os.path.join(run_dir, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    with open(os.path.join(run_dir, "round_0/eval/manifest.json"), encoding="utf-8") as f:
        base_eval = json.load(f)
    provenance = {
        "what": "the demo's base model: configs/demo/evolve.yaml's round 0 with pretraining on",
        "commands": [" ".join(["rstar-jax", *evolve[3:]]),
                     f"rstar-jax convert ckpt-to-hf --ckpt {_shown(ckpt)} "
                     f"--out {args.out} --dtype float32"],
        "remake": "python scripts/make_demo_base.py",
        "commit": _git_commit(),
        "pretrain": {k: pretrain.get(k) for k in ("counts", "metrics", "timings") if k in pretrain},
        "base_eval": base_eval.get("metrics"),
        "runtime": report.get("runtime"),
        "sha256": {name: _sha256(os.path.join(tmp, name)) for name in sorted(os.listdir(tmp))
                   if os.path.isfile(os.path.join(tmp, name))},
    }
    with open(os.path.join(tmp, "PROVENANCE.json"), "w", encoding="utf-8") as f:
        json.dump(provenance, f, indent=2, sort_keys=True)
        f.write("\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(f"wrote {args.out} ({provenance['sha256'].get('model.safetensors', '?')[:16]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

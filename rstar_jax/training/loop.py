"""The host training loop and the library entry points `train_policy` and
`train_ppm`.

One loop serves every stage: it builds the plan of batches, initialises or
restores the sharded state, runs the jitted step, logs metrics every
`train.log_every` steps (JSON Lines, TensorBoard), evaluates on a held-out
split, checkpoints with Orbax (async, keep-N) and, at the end, exports the
final parameters the engine loads.

Resumption is exact: the checkpoint holds the train state, the next step
of the plan and the partial metrics window, and metrics logged after the
checkpoint are dropped from `metrics.jsonl`, so a run killed at any point
and restarted writes the same parameters and loss curve as an
uninterrupted run.

Output layout (`out_dir`): `ckpt/` (Orbax steps), `metrics.jsonl`,
`tb/` (TensorBoard), `final/` (params + model.json + tokenizer),
`summary.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from rstar_jax.config.schema import Config, OptimConfig
from rstar_jax.models.decoder import ArchConfig
from rstar_jax.training import pipeline, records, steps
from rstar_jax.training import state as st
from rstar_jax.utils.logging import progress

log = logging.getLogger(__name__)

OnStep = Callable[[int, Optional[Dict[str, float]]], None]


@dataclasses.dataclass
class Run:
    """Everything a training run needs, built once before the loop."""

    kind: str  # lm | ppm
    cfg: Config
    opt: OptimConfig
    arch: ArchConfig
    tokenizer: object
    examples: list
    eval_examples: list
    plan: pipeline.Plan
    skipped: Dict[str, int]


def flops_per_token(arch: ArchConfig, seq_len: int, *, lm_head: bool) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 L H Dh T attention
    (the PaLM appendix count; forward + backward)."""
    d, h, k, dh = arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.head_dim
    per_layer = d * dh * (2 * h + 2 * k) + 3 * d * arch.intermediate_size
    n = arch.num_layers * per_layer + (d * arch.vocab_size if lm_head else d)
    return 6.0 * n + 12.0 * arch.num_layers * h * dh * seq_len


def _split_eval(examples: list, fraction: float, seed: int):
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    n_eval = min(len(examples) - 1, max(1, int(round(fraction * len(examples)))))
    order = np.random.default_rng(seed + 17).permutation(len(examples))
    held = set(order[:n_eval].tolist())
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def build_run(cfg: Config, data_path: str, kind: str, tokenizer, arch: ArchConfig) -> Run:
    """Reads, tokenises and plans the data (every process does the same)."""
    opt = cfg.train.ppm if kind == "ppm" else cfg.train.sft
    tok = tokenizer
    examples, skipped = records.load_examples(data_path, tok, kind=kind, seq_len=opt.seq_len,
                                              sep=cfg.data.assistant_sep,
                                              overlong=cfg.train.overlong)
    train, held = _split_eval(examples, cfg.train.eval_fraction, cfg.train.seed)
    lengths = [e.length for e in train]
    epochs = opt.epochs
    per_epoch = max(1, math.ceil(len(train) / opt.batch_size))
    if opt.max_steps:
        epochs = max(epochs, opt.max_steps / per_epoch)
    if cfg.train.batching == "pack" and kind != "ppm":
        plan = pipeline.pack_plan(lengths, batch=opt.batch_size, epochs=epochs,
                                  seed=cfg.train.seed, seq_len=opt.seq_len)
    else:
        plan = pipeline.bucket_plan(lengths, batch=opt.batch_size, epochs=epochs,
                                    seed=cfg.train.seed, buckets=cfg.train.length_buckets,
                                    seq_len=opt.seq_len)
    if opt.max_steps:
        plan = dataclasses.replace(plan, steps=plan.steps[:opt.max_steps],
                                   lengths=plan.lengths[:opt.max_steps])
    return Run(kind, cfg, opt, arch, tok, train, held, plan, skipped)


def _fingerprint(run: Run) -> str:
    h = hashlib.sha256(json.dumps([run.plan.steps[:64], run.plan.lengths[:64],
                                   len(run.plan.steps)]).encode())
    return h.hexdigest()[:16]


class MetricsWriter:
    """JSON Lines (+ TensorBoard) on process 0."""

    def __init__(self, out_dir: str, tensorboard: bool, resume_step: int):
        self.path = os.path.join(out_dir, "metrics.jsonl")
        self.main = jax.process_index() == 0
        self.tb = None
        self.last_train: Dict = {}  # the last train row kept (a finished run's result)
        if not self.main:
            return
        if os.path.exists(self.path):  # drop what was logged after the checkpoint
            with open(self.path, encoding="utf-8") as f:
                keep = [ln for ln in f if ln.strip() and json.loads(ln)["step"] <= resume_step]
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(keep)
            train_rows = [json.loads(ln) for ln in keep if '"split": "train"' in ln]
            self.last_train = train_rows[-1] if train_rows else {}
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tb"), purge_step=resume_step + 1)

    def write(self, row: Dict) -> None:
        if not self.main:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and v is not None:
                    self.tb.add_scalar(f"{row.get('split', 'train')}/{k}", v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _sum_stats(rows: List[Dict]) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for r in rows:
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


class Trainer:
    """Holds the sharded state, the step functions and the data of one run."""

    def __init__(self, run: Run, mesh, graphdef, params):
        self.run, cfg = run, run.cfg
        self.mesh = mesh
        self.rules = cfg.mesh.training_rules
        self.model_kind = "ppm" if run.kind == "ppm" else "policy"
        self.graphdef = graphdef
        self.total = len(run.plan.steps)
        self.tx = steps.optimizer(run.opt, self.total, decay_biases=cfg.train.decay_biases)
        self.state = st.init_train_state(self.tx, params, self.mesh)
        self.state_sh = jax.tree.map(lambda x: x.sharding, self.state)
        self.global_batch = run.opt.batch_size
        pad = run.tokenizer.pad_token_id or 0
        probe = pipeline.make_dataset(run.examples, run.plan, kind=run.kind, pad_id=pad)[0]
        self.batch_sh = st.batch_shardings(self.mesh, self.rules, probe, self.global_batch)
        self.rows = pipeline.local_rows(next(iter(self.batch_sh.values())), self.global_batch)
        self.data = pipeline.make_dataset(run.examples, run.plan, kind=run.kind, rows=self.rows,
                                          pad_id=pad)
        loss_fn = (steps.ppm_loss_fn(cfg.ppm, cfg.train.ppm_loss, cfg.train.ppm_loss_norm)
                   if run.kind == "ppm" else steps.lm_loss)
        # The learning rate enters each step as an argument (see
        # steps.schedule_table): the compiled step is then the same program
        # for every run length, so later stages load it from the cache.
        self.lrs = steps.schedule_table(run.opt, self.total)
        self.lr_sh = st.replicated(self.mesh)

        def tx_for_lr(lr):
            return steps.optimizer(run.opt, self.total, decay_biases=cfg.train.decay_biases,
                                   learning_rate=lambda _count: lr)

        self.step_fn = steps.make_train_step(self.graphdef, loss_fn, self.tx,
                                             accum=run.opt.grad_accum, mesh=self.mesh,
                                             rules=self.rules, state_shardings=self.state_sh,
                                             batch_shardings=self.batch_sh, tx_for_lr=tx_for_lr)
        self.eval_fn = steps.make_eval_step(self.graphdef, loss_fn, mesh=self.mesh,
                                            rules=self.rules)
        self.eval_data = None
        if run.eval_examples:
            lens = [e.length for e in run.eval_examples]
            eplan = pipeline.bucket_plan(lens, batch=self.global_batch, epochs=1.0,
                                         seed=cfg.train.seed, buckets=cfg.train.length_buckets,
                                         seq_len=run.opt.seq_len)
            self.eval_data = pipeline.make_dataset(run.eval_examples, eplan, kind=run.kind,
                                                   rows=self.rows, pad_id=pad)

    def global_batch_at(self, k: int, data=None) -> Dict:
        return pipeline.to_global((data or self.data)[k], self.batch_sh, self.global_batch)

    def lr_at(self, k: int):
        """Step `k`'s learning rate, replicated (the optimizer's count is `k`)."""
        return jax.device_put(self.lrs[k], self.lr_sh)

    def evaluate(self) -> Dict[str, float]:
        rows = [self.eval_fn(self.state["params"], self.global_batch_at(k, self.eval_data))
                for k in range(len(self.eval_data))]
        return steps.metrics_from_stats(_sum_stats(jax.device_get(rows)))

    def tokens_in(self, k: int) -> int:
        """Trained (non-pad) tokens of step `k` in the global batch."""
        lens = self.run.plan.steps[k]
        ex = self.run.examples
        if self.run.plan.packed:
            return sum(ex[i].length for row in lens for i in row)
        if self.run.kind == "ppm":
            return sum(len(ex[i].pos) + len(ex[i].neg) for i in lens)
        return sum(ex[i].length for i in lens)


class ResumeMismatch(ValueError):
    """The checkpoint in the output directory was made for other data or settings."""


def data_settings(run: Run, data_path: str) -> Dict:
    """What a checkpoint records of its data, to say what changed on resume."""
    h = hashlib.sha256()
    with open(data_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"data_sha256": h.hexdigest()[:16], "examples": len(run.examples),
            "eval_examples": len(run.eval_examples), "steps": len(run.plan.steps)}


def _flat(tree, prefix: str = "") -> Dict:
    out: Dict = {}
    for k, v in (tree or {}).items():
        if isinstance(v, dict) and v and k not in ("arith_habits",):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# Config keys that shape a run's batches, shown when a resume is refused.
_PLAN_KEYS = ("train.", "model.", "data.assistant_sep")


def mismatch_message(directory: str, old_cfg: Optional[Dict], new_cfg: Config,
                     old_data: Optional[Dict], new_data: Dict) -> str:
    """One line: what differs between a checkpoint's run and this one, and
    how to continue."""
    from rstar_jax.config import to_dict

    changes = []
    if old_cfg is not None:
        old, new = _flat(old_cfg), _flat(to_dict(new_cfg))
        for key in sorted(set(old) | set(new)):
            if key.startswith(_PLAN_KEYS) and old.get(key) != new.get(key):
                changes.append(f"{key} {old.get(key)!r} -> {new.get(key)!r}")
    for key in ("data_sha256", "examples", "eval_examples", "steps"):
        if old_data and key in old_data and old_data[key] != new_data[key]:
            changes.append(f"{key} {old_data[key]!r} -> {new_data[key]!r}")
    what = "; ".join(changes) if changes else "the data file's content or order"
    out_dir = os.path.dirname(directory)
    return (f"{directory} holds a run made with other data or settings ({what}); to continue it, "
            f"rerun with its data and settings; to train anew, give another --out, or pass "
            f"--force to discard its checkpoints and start over in {out_dir}")


def _restore(tr: Trainer, ckpt, fp: str, settings: Dict):
    """Restores the latest checkpoint into `tr`; returns (next step, window).

    Raises:
      ResumeMismatch: the checkpoint's plan is not this run's (other data or
        batch settings), saying what differs.
    """
    from rstar_jax.models.loading import MODEL_CLASSES, abstract_model

    opt_target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        tr.state["opt_state"])
    got = ckpt.restore(abstract_model(MODEL_CLASSES[tr.model_kind], tr.run.arch),
                       mesh=tr.mesh, rules=tr.rules, extra_targets={"opt_state": opt_target})
    data = got.extra["data"]
    if data["plan"] != fp:
        raise ResumeMismatch(mismatch_message(ckpt.directory, got.metadata.get("config"),
                                              tr.run.cfg, data.get("settings"), settings))
    _, params = st.split_params(got.model)
    step = jax.device_put(jnp.asarray(data["next_step"], jnp.int32), st.replicated(tr.mesh))
    tr.state = {"params": params, "opt_state": got.extra["opt_state"], "step": step}
    return data["next_step"], data["window"]


def _save(tr: Trainer, ckpt, done: int, window: Dict, fp: str, settings: Dict) -> None:
    from flax import nnx

    ckpt.save(done, nnx.merge(tr.graphdef, tr.state["params"]), extra={
        "opt_state": tr.state["opt_state"],
        "data": {"next_step": done, "window": window, "plan": fp, "settings": settings}})


def _discard_checkpoints(ckpt, out_dir: str, cfg: Config, tok):
    """`--force`: removes the checkpoints of another run; returns a fresh
    `Checkpointer` over the emptied directory."""
    import shutil

    from rstar_jax.models.checkpoint import Checkpointer

    directory = ckpt.directory
    ckpt.close()
    if jax.process_index() == 0:
        log.warning("--force: discarding the checkpoints in %s (another run's) and starting over",
                    directory)
        shutil.rmtree(directory)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("discard_checkpoints")
    return Checkpointer(directory, cfg.checkpoint, config=cfg, tokenizer=tok)


def train(cfg: Config, data_path: str, out_dir: str, *, kind: str, init_from: Optional[str] = None,
          tokenizer=None, on_step: Optional[OnStep] = None, force: bool = False) -> Dict:
    """Trains one stage (`kind`: `lm` = policy SFT / pretraining, `ppm`).

    A checkpoint in `out_dir/ckpt` is resumed when it was made for the same
    data and batch settings; otherwise `ResumeMismatch` says what differs,
    unless `force`, which discards it and starts over.

    Returns the summary dict (also written to `out_dir/summary.json`).
    """
    from rstar_jax.models.checkpoint import Checkpointer
    from rstar_jax.models.mesh import make_mesh, maybe_initialize_distributed

    maybe_initialize_distributed(cfg.mesh.distributed)
    os.makedirs(out_dir, exist_ok=True)
    mesh = make_mesh(cfg.mesh)
    model_kind = "ppm" if kind == "ppm" else "policy"
    graphdef, params, tok, arch = st.load_for_training(cfg, model_kind, mesh, init_from, tokenizer)
    run = build_run(cfg, data_path, kind, tok, arch)
    tr = Trainer(run, mesh, graphdef, params)
    ckpt = Checkpointer(os.path.join(out_dir, "ckpt"), cfg.checkpoint, config=cfg, tokenizer=tok)
    fp = _fingerprint(run)
    settings = data_settings(run, data_path)
    start, window = 0, {}
    if ckpt.latest_step() is not None:
        try:
            start, window = _restore(tr, ckpt, fp, settings)
            log.info("resumed from step %d of %d", start, tr.total)
        except ResumeMismatch:
            if not force:
                raise
            ckpt = _discard_checkpoints(ckpt, out_dir, cfg, tok)
    writer = MetricsWriter(out_dir, cfg.train.tensorboard, start)
    flops_tok = flops_per_token(run.arch, run.opt.seq_len, lm_head=kind != "ppm")
    peak = cfg.train.peak_flops * jax.device_count()
    pending: List[Dict] = []
    last = {k: v for k, v in writer.last_train.items() if k in ("loss", "pair_accuracy")}
    t0, tok0, nsteps = time.perf_counter(), 0, 0
    bar = progress(total=tr.total, initial=start, desc=f"train {kind}", unit="step",
                   enabled=cfg.logging.progress, every_s=cfg.logging.progress_every_s)
    if last:
        bar.set_postfix(**last)

    def flush():
        nonlocal pending
        for row in jax.device_get(pending):
            for key, v in row.items():
                window[key] = window.get(key, 0.0) + float(v)
        pending = []

    for k in range(start, tr.total):
        tr.state, m = tr.step_fn(tr.state, tr.global_batch_at(k), tr.lr_at(k))
        pending.append({key: v for key, v in m.items() if key != "grad_norm"})
        tok0 += tr.tokens_in(k)
        nsteps += 1
        done = k + 1
        bar.update(1)
        if done % cfg.train.log_every == 0 or done == tr.total:
            flush()
            gn = float(jax.device_get(m["grad_norm"]))
            dt = max(time.perf_counter() - t0, 1e-9)
            last = steps.metrics_from_stats(window)
            row = {"step": done, "split": "train", **last, "grad_norm": gn,
                   "tokens_per_s": tok0 / dt, "step_time_s": dt / nsteps}
            row["mfu"] = (tok0 / dt) * flops_tok / peak if peak > 0 else None
            writer.write(row)
            bar.set_postfix(**{k: last[k] for k in ("loss", "pair_accuracy") if k in last})
            window, t0, tok0, nsteps = {}, time.perf_counter(), 0, 0
        if tr.eval_data is not None and cfg.train.eval_every and done % cfg.train.eval_every == 0:
            writer.write({"step": done, "split": "eval", **tr.evaluate()})
        if cfg.checkpoint.save_every and (done % cfg.checkpoint.save_every == 0
                                          or done == tr.total):
            flush()
            _save(tr, ckpt, done, window, fp, settings)
        if on_step is not None:
            on_step(done, last)
    bar.close()
    ckpt.close()
    summary = _finish(tr, out_dir, last, writer)
    writer.close()
    return summary


def _finish(tr: Trainer, out_dir: str, last: Dict, writer: MetricsWriter) -> Dict:
    run = tr.run
    from flax import nnx

    from rstar_jax.models.checkpoint import export_params

    dtype = jnp.bfloat16 if run.cfg.checkpoint.export_bf16 else jnp.float32
    export_params(nnx.merge(tr.graphdef, tr.state["params"]), os.path.join(out_dir, "final"),
                  dtype, tokenizer=run.tokenizer, source=f"rstar-jax train ({run.kind})")
    summary = {"kind": tr.model_kind, "model": run.cfg.model.name, "steps": tr.total, "final_loss": last.get("loss"),
               "pair_accuracy": last.get("pair_accuracy"),
               "tokens": int(sum(tr.tokens_in(k) for k in range(tr.total))),
               "examples": len(run.examples), "eval_examples": len(run.eval_examples),
               "skipped": run.skipped, "final": os.path.join(out_dir, "final")}
    if tr.eval_data is not None:
        ev = tr.evaluate()
        writer.write({"step": tr.total, "split": "eval_final", **ev})
        summary["eval"] = ev
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1)
    return summary


def train_policy(cfg: Config, data_path: str, out_dir: str, *, init_from: Optional[str] = None,
                 tokenizer=None, on_step: Optional[OnStep] = None,
                 force: bool = False) -> Dict:
    """Policy SFT (or plain-text pretraining) on `data_path` (spec section 6).

    Args:
      init_from: a model to start from: an export (`<out_dir>/final` of an
        earlier run, or `rstar-jax convert` output) or a checkpoint dir;
        None starts from `cfg.model` (`model.checkpoint`, `model.hf_dir`,
        else a fresh init). Each round's SFT starts from the base model:
        the caller passes the base model here, not the previous round's.
      tokenizer: overrides `model.tokenizer_dir` / the export's tokenizer.
    Returns:
      The summary: final loss, steps, tokens, skipped records, final path.
    """
    return train(cfg, data_path, out_dir, kind="lm", init_from=init_from, tokenizer=tokenizer,
                 on_step=on_step, force=force)


def train_ppm(cfg: Config, data_path: str, out_dir: str, *, init_from: Optional[str] = None,
              tokenizer=None, on_step: Optional[OnStep] = None,
              force: bool = False) -> Dict:
    """PPM training on preference pairs (`train.ppm_loss`: `bt` or `pqm`).

    `init_from` is normally that round's policy export: its backbone with a
    fresh value head (spec section 6); a PPM export continues as is. None
    uses `ppm.checkpoint`, else the policy of `cfg.model` with a fresh head.
    """
    return train(cfg, data_path, out_dir, kind="ppm", init_from=init_from, tokenizer=tokenizer,
                 on_step=on_step, force=force)

"""What a stage function sees: its config, its directory, and the artifacts of earlier stages.

Artifacts are found only through manifests (a stage without one is not
finished, so nothing may read its output). Every lookup a stage makes is
recorded in `ctx.inputs`, which goes into its manifest.

Which model each stage starts from (spec sections 1 and 6), switchable:
  base model        `evolve.base_policy`, else round 0's `pretrain` output,
                    else `model.checkpoint` / `model.hf_dir`;
  search policy     round 1: `evolve.bootstrap_policy` or the base model;
                    round N > 1: round N-1's SFT policy;
  SFT init          the base model (`train.sft_init: base`), or the previous
                    round's policy (`previous`);
  PPM init          that round's policy (`evolve.ppm_init: policy`; round 1
                    from the base model, as in the paper), or the base;
  search PPM        round N-1's PPM when `mcts.ppm_init_value` (rounds 3-4).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from rstar_jax.config.schema import Config
from rstar_jax.evolve.manifest import read_manifest


class MissingInput(RuntimeError):
    """A stage needs the output of a stage that has not finished."""


def stage_dir(run_dir: str, round_: int, stage: str) -> str:
    """`RUN_DIR/round_N/<stage>/`."""
    return os.path.join(run_dir, f"round_{round_}", stage)


@dataclass
class StageContext:
    """The arguments of every stage function: `fn(ctx) -> dict`.

    A stage returns `{"outputs": {key: path}, "counts": {...}, "metrics": {...}}`
    (any part may be missing); output paths under `ctx.out_dir` are stored
    relative to it.
    """

    cfg: Config
    run_dir: str
    round: int
    stage: str
    inputs: Dict[str, Any] = field(default_factory=dict)

    @property
    def out_dir(self) -> str:
        return stage_dir(self.run_dir, self.round, self.stage)

    def path(self, *parts: str) -> str:
        """A path inside this stage's directory."""
        return os.path.join(self.out_dir, *parts)

    # Artifacts of finished stages.
    def manifest(self, round_: int, stage: str) -> Optional[Dict[str, Any]]:
        return read_manifest(stage_dir(self.run_dir, round_, stage))

    def output(self, round_: int, stage: str, key: str, *, required: bool = True) -> Optional[str]:
        """The absolute path of output `key` of a finished stage (recorded as an input)."""
        m = self.manifest(round_, stage)
        if m is None or key not in m.get("outputs", {}):
            if not required:
                return None
            raise MissingInput(
                f"round{self.round}.{self.stage} needs output '{key}' of round{round_}.{stage}, "
                f"which has not finished; run it first (e.g. --only round{round_}.{stage})")
        path = os.path.join(stage_dir(self.run_dir, round_, stage), m["outputs"][key])
        self.inputs[f"round{round_}.{stage}.{key}"] = path
        return path

    def _record(self, name: str, value: Optional[str]) -> Optional[str]:
        self.inputs[name] = value
        return value

    # Which model each stage starts from.
    def base_model(self) -> str:
        ev, m = self.cfg.evolve, self.cfg.model
        path = ev.base_policy or self.output(0, "pretrain", "model", required=False)
        path = path or m.checkpoint or m.hf_dir
        if not path:
            raise MissingInput("no base model: set evolve.base_policy, model.hf_dir or "
                               "model.checkpoint, or add 'pretrain' to evolve.base_stages")
        if ev.base_policy:
            self._check_base_tokenizer(ev.base_policy)
        return self._record("base_model", path)

    def _check_base_tokenizer(self, base: str) -> None:
        """A base model that ships its tokenizer (an HF dir) must have the
        world's, when the run made one: the stages encode with the world's
        (`tokenizer_dir`), and another vocabulary would feed the model other
        ids with no error anywhere (e.g. the demo's shipped base after a
        change to the world's corpus)."""
        world = self.output(0, "world", "tokenizer", required=False)
        shipped = os.path.join(base, "tokenizer.json")
        if self.cfg.model.tokenizer_dir or not world or not os.path.isfile(shipped):
            return
        if _vocabulary(shipped) != _vocabulary(os.path.join(world, "tokenizer.json")):
            raise MissingInput(
                f"the base model {base} was trained with another tokenizer than this run's "
                f"world made ({world}); make the base again from this world (evolve.base_stages "
                "with 'pretrain', evolve.base_policy=null) or set model.tokenizer_dir")

    def search_policy(self) -> str:
        if self.round <= 1:
            path = self.cfg.evolve.bootstrap_policy or self.base_model()
        else:
            path = self.output(self.round - 1, "sft", "model")
        return self._record("search_policy", path)

    def sft_init(self) -> str:
        if self.cfg.train.sft_init == "previous" and self.round > 1:
            path = self.output(self.round - 1, "sft", "model")
        else:
            path = self.base_model()
        return self._record("sft_init", path)

    def policy(self) -> str:
        """This round's policy (round 0: the base model)."""
        path = self.base_model() if self.round == 0 else self.output(self.round, "sft", "model")
        return self._record("policy", path)

    def ppm_init(self) -> str:
        """What this round's PPM starts from: the base model in round 1; then
        this round's policy (`evolve.ppm_init: policy`, the spec), the base
        model (`base`), or the previous round's PPM, value head included
        (`previous`: a small run's PPM keeps learning across rounds)."""
        mode = self.cfg.evolve.ppm_init
        if mode == "base" or self.round <= 1:
            path = self.base_model()
        elif mode == "previous":
            path = self.output(self.round - 1, "ppm", "model")
        else:
            path = self.policy()
        return self._record("ppm_init", path)

    def search_ppm(self) -> Optional[str]:
        """The previous round's PPM for PPM-augmented search, else None."""
        if not self.cfg.mcts.ppm_init_value or self.round <= 1:
            return self._record("search_ppm", None)
        return self._record("search_ppm", self.output(self.round - 1, "ppm", "model"))

    def ppm(self) -> Optional[str]:
        """This round's PPM (None in round 0)."""
        if self.round == 0:
            return None
        return self._record("ppm", self.output(self.round, "ppm", "model"))

    def tokenizer_dir(self) -> Optional[str]:
        """`model.tokenizer_dir`, else the world's tokenizer, else the HF dir's."""
        path = self.cfg.model.tokenizer_dir or self.output(0, "world", "tokenizer", required=False)
        return self._record("tokenizer_dir", path or self.cfg.model.hf_dir)

    def problems(self, split: str = "train") -> str:
        """This round's problem file (the `problems` stage output)."""
        return self.output(self.round, "problems", split)


def _vocabulary(tokenizer_json: str):
    """What decides a tokenizer's ids: its model's vocabulary and merges and
    its added tokens (not how the library wrote the file)."""
    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok.get("model") or {}
    added = sorted((t.get("id"), t.get("content")) for t in tok.get("added_tokens") or [])
    merges = [" ".join(m) if isinstance(m, list) else m for m in model.get("merges") or []]
    return model.get("type"), model.get("vocab"), merges, added

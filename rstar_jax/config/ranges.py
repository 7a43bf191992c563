"""The valid range of every numeric config key.

A value out of range is refused when the config loads, before any model or
worker starts, with one line naming the key, the value and the range: a
negative batch size would loop forever in the batch planner, a NaN timeout
kills the executor's dispatcher thread, zero rollouts writes records that a
correct rerun then skips. Non-finite floats (NaN, +-inf) are never valid.

`tests/config/test_ranges.py` walks the schema and fails for a numeric key
(int, float, or a list / dict / optional of them) without an entry here, so
a key added later must say what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

INF = math.inf


@dataclass(frozen=True)
class Range:
    """An interval of numbers; `lo_open` / `hi_open` exclude the ends."""

    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        def num(x):
            if x == INF:
                return "inf"
            if x == -INF:
                return "-inf"
            return repr(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)

        left = "(" if self.lo_open or self.lo == -INF else "["
        right = ")" if self.hi_open or self.hi == INF else "]"
        return f"{left}{num(self.lo)}, {num(self.hi)}{right}"


def at_least(n: float) -> Range:
    return Range(lo=n)


def positive() -> Range:
    """(0, inf): a float that must be above zero."""
    return Range(lo=0.0, lo_open=True)


NONNEG = at_least(0)
ONE_UP = at_least(1)
UNIT = Range(0.0, 1.0)
SEED = Range(0, 2**32 - 1)
# Wall-clock limits: finite and at most a day (1e300 s overflows the timers).
SECONDS = Range(0.0, 86_400.0, lo_open=True)
FINITE = Range()


def _optim(prefix: str) -> Dict[str, Range]:
    return {
        f"{prefix}.learning_rate": Range(0.0, 10.0),
        f"{prefix}.warmup_steps": NONNEG,
        f"{prefix}.weight_decay": NONNEG,
        f"{prefix}.grad_clip": NONNEG,  # 0: no clipping
        f"{prefix}.batch_size": ONE_UP,
        f"{prefix}.grad_accum": ONE_UP,
        f"{prefix}.epochs": positive(),
        f"{prefix}.max_steps": ONE_UP,
        f"{prefix}.seq_len": ONE_UP,
        f"{prefix}.b1": Range(0.0, 1.0, hi_open=True),
        f"{prefix}.b2": Range(0.0, 1.0, hi_open=True),
    }


# Dotted key -> valid range. For a list or dict the range applies to each
# element / value; an optional key may also be null.
RANGES: Dict[str, Range] = {
    "seed": SEED,
    "model.vocab_size": ONE_UP,
    "model.hidden_size": ONE_UP,
    "model.intermediate_size": ONE_UP,
    "model.num_layers": ONE_UP,
    "model.num_heads": ONE_UP,
    "model.num_kv_heads": ONE_UP,
    "model.head_dim": ONE_UP,
    "model.max_position_embeddings": ONE_UP,
    "model.rope_theta": positive(),
    "model.rms_norm_eps": Range(0.0, 1.0, lo_open=True),
    "ppm.score_scale": positive(),
    "mesh.data": at_least(-1),  # -1: the devices the other axes leave
    "mesh.fsdp": at_least(-1),
    "mesh.tensor": at_least(-1),
    "mesh.max_replicated_fraction": UNIT,
    "mesh.distributed.num_processes": ONE_UP,
    "mesh.distributed.process_id": NONNEG,
    "mesh.distributed.local_device_ids": NONNEG,
    "engine.num_slots": ONE_UP,
    "engine.max_seq_len": ONE_UP,
    "engine.prefill_buckets": ONE_UP,
    "engine.decode_steps_per_call": ONE_UP,
    "engine.max_new_tokens": ONE_UP,
    "engine.prefix_cache_tokens": NONNEG,
    "engine.score_batch_size": ONE_UP,
    "engine.score_buckets": ONE_UP,
    "engine.score_row_buckets": ONE_UP,
    "engine.prefill_tokens": ONE_UP,
    "engine.prefill_chunk": ONE_UP,
    "engine.prefill_row_buckets": ONE_UP,
    "engine.page_size": ONE_UP,
    "engine.num_pages": NONNEG,
    "mcts.rollouts": ONE_UP,
    "mcts.candidates": ONE_UP,
    "mcts.max_depth": ONE_UP,
    "mcts.c_puct": NONNEG,
    "mcts.temperature": Range(0.0, 100.0),  # 0: greedy
    "mcts.top_p": Range(0.0, 1.0, lo_open=True),
    "mcts.top_k": NONNEG,  # 0: off
    "mcts.max_new_tokens_per_step": ONE_UP,
    "mcts.errors_threshold": ONE_UP,
    "mcts.unsolved_rollouts": NONNEG,
    "mcts.unsolved_seeds": NONNEG,
    "mcts.unsolved_max_rollouts": NONNEG,  # 0: no extension
    "mcts.trees_in_flight": ONE_UP,
    "mcts.beam_width": ONE_UP,
    "mcts.best_of_n": ONE_UP,
    "mcts.greedy_errors_threshold": ONE_UP,
    "mcts.greedy_max_new_tokens": ONE_UP,
    "mcts.beam_expand": NONNEG,  # 0: `candidates`
    "mcts.answer_top_k": ONE_UP,
    "mcts.extract_top_k": ONE_UP,
    "mcts.extract_min_correct_share": UNIT,
    "mcts.ppm_pairs_per_side": ONE_UP,
    "mcts.ppm_pairs_one_side_max": ONE_UP,
    "mcts.ppm_min_margin": Range(0.0, 2.0),  # Q values lie in [-1, 1]
    "mcts.ppm_min_edit_distance": NONNEG,
    "inference_eval.runs": ONE_UP,
    "inference_eval.rollouts": ONE_UP,
    "inference_eval.candidates": ONE_UP,
    "inference_eval.errors_threshold": ONE_UP,
    "inference_eval.temperature": Range(0.0, 100.0),  # 0: greedy
    "inference_eval.top_p": Range(0.0, 1.0, lo_open=True),
    "inference_eval.top_k": NONNEG,  # 0: off
    "executor.num_workers": Range(1, 1024),
    "runtime.intra_op_threads": Range(1, 4096),
    "executor.timeout_s": SECONDS,
    # A worker imports numpy and sympy under this address-space cap.
    "executor.memory_limit_mb": at_least(256),
    "executor.cpu_limit_s": Range(1, 86_400),
    "executor.file_size_limit_mb": ONE_UP,
    "executor.max_processes": ONE_UP,
    "executor.max_output_chars": ONE_UP,
    "executor.observation_chars": ONE_UP,
    "executor.cache_size": NONNEG,  # 0: no cache
    "executor.tmp_size_mb": ONE_UP,
    "executor.prefix_snapshots": NONNEG,  # 0: off
    "executor.screen_max_chars": NONNEG,
    "data.limit": ONE_UP,
    "data.test_limit": ONE_UP,
    "data.arith_seed": SEED,
    "data.arith_count": ONE_UP,
    "data.arith_levels": Range(1, 4),
    "data.arith_test_seed": SEED,
    "data.arith_test_count": ONE_UP,
    "data.arith_final_mod_share": UNIT,
    "data.arith_corpus_seed": SEED,
    "data.arith_corpus_count": ONE_UP,
    "data.arith_error_rates": UNIT,
    "data.arith_habits": UNIT,
    "data.tokenizer_vocab_size": Range(64, 1_000_000),
    "train.seed": SEED,
    **_optim("train.sft"),
    **_optim("train.ppm"),
    "train.length_buckets": ONE_UP,
    "train.log_every": ONE_UP,
    "train.eval_every": NONNEG,  # 0: off
    "train.eval_fraction": Range(0.0, 1.0, hi_open=True),
    "train.peak_flops": NONNEG,  # 0: MFU not reported
    "evolve.round": NONNEG,  # 0: the base model's stages
    **_optim("evolve.pretrain"),
    "evolve.ppm_heldout": Range(0.0, 1.0, hi_open=True),  # 0: every pair trains the PPM
    "eval.k": ONE_UP,
    "eval.limit": ONE_UP,
    "eval.bootstrap_samples": NONNEG,  # 0: no confidence interval
    "eval.top_k_vote": ONE_UP,
    "eval.grade_timeout_s": SECONDS,
    "eval.chunk_size": ONE_UP,
    "eval.processbench_threshold": FINITE,
    "checkpoint.keep": ONE_UP,
    "checkpoint.save_every": NONNEG,  # 0: only at the end
    "logging.progress_every_s": Range(0.0, 86_400.0),  # 0: a line per item
}


def range_error(key: str, value, rng: Range, where: str = "") -> Optional[str]:
    """The one-line complaint about `value` for `key`, or None if valid.

    Lists and dicts are checked element by element; None (an optional key
    left unset) is valid.
    """
    if value is None:
        return None
    items = (value.values() if isinstance(value, dict)
             else value if isinstance(value, (list, tuple)) else [value])
    for item in items:
        if not rng.contains(item):
            shown = f"{item!r} in {value!r}" if item is not value else repr(value)
            at = f" in {where}" if where else ""
            return f"bad value for '{key}'{at}: {shown}; expected a number in {rng}"
    return None

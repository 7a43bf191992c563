"""The typed configuration schema.

Every section is a frozen dataclass; `Config` nests them. YAML files under
`configs/` state only the values that differ from these defaults (through a
`base_config:` chain), and the command line overrides single values with
dotted `section.key=value` arguments. The loader (`loader.py`) validates every
key and type against this schema, and every number against its range in
`ranges.py`, so a misspelt key, a wrong type or a value out of range is an
error before anything runs.

Defaults describe a sensible single-host run of the real method; the `tiny`
model preset and the demo configs scale it down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

# Logical axis -> mesh axes. An empty list means replicated. The layers only
# ever name logical axes; these tables are the one place that maps them onto
# the mesh ('data', 'fsdp', 'tensor').
DEFAULT_TRAINING_RULES: Dict[str, List[str]] = {
    "activation_batch": ["data", "fsdp"],
    "activation_length": [],
    "activation_embed": [],
    "activation_heads": ["tensor"],
    "activation_kv_heads": ["tensor"],
    "activation_mlp": ["tensor"],
    "activation_vocab": ["tensor"],
    "embed": ["fsdp"],
    "vocab": ["tensor"],
    "heads": ["tensor"],
    "kv_heads": ["tensor"],
    "head_dim": [],
    "mlp": ["tensor"],
    "norm": [],
    "layers": [],
    "cache_batch": ["data", "fsdp"],
    "cache_length": [],
    "cache_heads": ["tensor"],
    "cache_head_dim": [],
}

# Inference keeps whole weights per data replica (no fsdp gather per token)
# and shards the KV cache over the batch.
DEFAULT_INFERENCE_RULES: Dict[str, List[str]] = {
    **DEFAULT_TRAINING_RULES,
    "activation_batch": ["data", "fsdp"],
    "embed": [],
    "cache_batch": ["data", "fsdp"],
}


def _rules(table: Dict[str, List[str]]):
    return field(default_factory=lambda: {k: list(v) for k, v in table.items()})


@dataclass(frozen=True)
class ModelConfig:
    """Decoder architecture (Qwen2 and Llama families) and numerics.

    When `hf_dir` is set, the architecture numbers are read from its
    `config.json` and the values here are ignored except the dtypes.
    """

    name: str = "tiny"  # a label: training summaries name the model they trained
    family: str = "qwen2"  # qwen2 | llama
    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: Optional[int] = None  # None: hidden_size // num_heads
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    attention_bias: bool = True  # q/k/v bias: Qwen2 yes, Llama no
    tie_word_embeddings: bool = True
    param_dtype: str = "float32"  # float32 | bfloat16
    compute_dtype: str = "float32"  # float32 | bfloat16
    # Training: rematerialise each decoder block (models/decoder.py):
    # none | full (recompute the block) | dots_saveable (keep matmul outputs).
    remat: str = "none"
    hf_dir: Optional[str] = None  # HF model directory (config.json + weights)
    tokenizer_dir: Optional[str] = None  # HF tokenizer directory
    checkpoint: Optional[str] = None  # our checkpoint directory to load
    # Add the rStar step tags (spec section 2) to the tokenizer as single
    # tokens. None: for training, or a fresh init; a pretrained model keeps
    # them as plain text at inference (models/vocab.py `wants_tags`).
    add_special_tokens: Optional[bool] = None


@dataclass(frozen=True)
class PPMConfig:
    """Process Preference Model head and score transform.

    Scoring always applies the transform: `none` (raw linear output),
    `tanh` (the paper), `tanh_scaled` (tanh(r / score_scale), the
    reference's inference-time transform). The Bradley-Terry loss sees the
    same transformed score (the paper) unless `train_on_raw`, which trains
    on the raw linear output as the reference does; the transform is
    monotone, so both rank candidates the same way as they were trained.
    The bounded tanh caps a pair's margin at 2 and its gradient vanishes
    once a pair saturates, which at a small model's learning rates stalls
    training (measured in benchmarks/RESULTS.md, demo section).
    """

    score_transform: str = "tanh"  # none | tanh | tanh_scaled
    score_scale: float = 5.0
    train_on_raw: bool = False  # BT loss on the raw output (the reference)
    checkpoint: Optional[str] = None


@dataclass(frozen=True)
class DistributedConfig:
    """`jax.distributed.initialize` arguments; unset values come from the
    usual environment (cluster auto-detection). Skipped on one process."""

    enabled: str = "auto"  # auto | on | off
    coordinator_address: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    local_device_ids: Optional[List[int]] = None


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh ('data', 'fsdp', 'tensor'); one axis may be -1 (the rest)."""

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    training_rules: Dict[str, List[str]] = _rules(DEFAULT_TRAINING_RULES)
    inference_rules: Dict[str, List[str]] = _rules(DEFAULT_INFERENCE_RULES)
    # Report a model whose parameters are mostly replicated; refuse it when
    # `refuse_replicated` (a mesh with more than one device only).
    max_replicated_fraction: float = 0.5
    refuse_replicated: bool = False
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


@dataclass(frozen=True)
class EngineConfig:
    """The batched generation engine (fixed slots, bucketed prompts)."""

    num_slots: int = 64
    max_seq_len: int = 4096
    prefill_buckets: List[int] = field(default_factory=lambda: [128, 256, 512, 1024, 2048, 4096])
    decode_steps_per_call: int = 8
    # Batched prefill: prompts go into their decode slots in calls of at most
    # `prefill_tokens` tokens (rows x chunk length, both bucketed); prompts
    # longer than `prefill_chunk` are split over several calls, between which
    # running slots keep decoding.
    prefill_tokens: int = 2048
    prefill_chunk: int = 512
    # Row counts a prefill call may be padded to (None: powers of two up to
    # prefill_tokens // chunk). Each is compiled per (chunk, cache length):
    # fewer buckets (e.g. [1, 4, 16] on a GPU, where a few padded rows cost
    # little) compile faster.
    prefill_row_buckets: Optional[List[int]] = None
    # Persistent XLA compilation cache for the engine's shapes (None: off, or
    # whatever JAX_COMPILATION_CACHE_DIR says).
    compilation_cache_dir: Optional[str] = None
    max_new_tokens: int = 1024
    prefix_cache: bool = True
    prefix_cache_tokens: int = 1 << 20
    truncation: str = "error"  # error | left | right (for over-long prompts)
    score_batch_size: int = 64  # PPM scoring batch
    # Length buckets of PPM scoring calls (None: the prefill buckets). Scored
    # texts are whole partial solutions whose lengths spread evenly, and a
    # full forward's cost grows faster than its length, so finer buckets
    # than the prefill's pay (each is one more compiled shape).
    score_buckets: Optional[List[int]] = None
    # Row counts a scoring call may be padded to (None: powers of two up to
    # score_batch_size). One value makes every call the same shape, so a
    # text's score is bit-identical whatever it is scored with (XLA's CPU
    # kernels round differently for different row counts): a resumed search
    # then rebuilds exactly the trees of an uninterrupted one.
    score_row_buckets: Optional[List[int]] = None
    # KV cache layout (issue 24): `dense` keeps a `max_seq_len` row per slot;
    # `paged` keeps a pool of `page_size`-token pages with a page table per
    # slot, so a node's candidates share their prompt's pages (only the
    # partly filled last page is copied) and the prefix cache holds pages by
    # reference. `page_size` must divide every prefill bucket.
    kv_layout: str = "dense"
    page_size: int = 16
    # Pages in the pool (paged layout); 0: as many as the dense cache of
    # num_slots x max_seq_len holds. When it is full, new candidates wait.
    num_pages: int = 0
    # Paged layout: while slots are decoding, a prefill chunk runs in the
    # first step of the next decode call (one device call, weights read once
    # for both) instead of a call of its own. Off by default: the decode
    # rows then share matmuls with the chunk's, so their float32 rounding
    # (and a seeded sample at a near-tie) depends on what rode with them.
    mixed_prefill: bool = False


@dataclass(frozen=True)
class MCTSConfig:
    """Search budgets and rules (spec section 4). Defaults: round 1."""

    mode: str = "mcts"  # mcts | greedy | best_of_n | beam
    rollouts: int = 8
    candidates: int = 5
    max_depth: int = 16
    c_puct: float = 2.0
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_new_tokens_per_step: int = 2048  # the reference's step limit
    # A step the engine cut off without a stop string is a terminal worth -1
    # (ours; the reference keeps it as an ordinary step).
    incomplete_step_terminal: bool = False
    errors_threshold: int = 2
    # Where terminal values come from: `gold` (training-data generation,
    # +1/-1 from the gold answer) or `ppm` (inference, no gold answer).
    terminal_value: str = "gold"  # gold | ppm
    ppm_init_value: bool = False  # PPM-augmented (rounds 3-4)
    # Candidates kept when some end with a final answer (search/tree.py):
    # first_answer (the reference: that answer is the only child) |
    # first_answer_and_steps (also the non-answer steps) | all.
    answer_expansion: str = "first_answer"
    second_tree_for_unsolved: bool = False
    unsolved_rollouts: int = 0  # extra rollouts for unsolved problems
    unsolved_seeds: int = 0  # extra independent trees for unsolved problems
    # A tree that used its rollouts without solving its problem goes on up to
    # this many (0: no extension); round 4: 64, then up to 128 (spec section 4).
    unsolved_max_rollouts: int = 0
    trees_in_flight: int = 64
    # Run one cohort's step code while the engine generates for the other.
    overlap_execution: bool = True
    beam_width: int = 4
    best_of_n: int = 8
    # The `greedy` baseline (search/baselines.py). `whole_solution`: the
    # reference's (config/sft_eval_greedy.yaml): one call writes the whole
    # solution, stopping only at `<end_of_code>` / `<end_of_answer>`; its
    # code runs and, after the output (an error included), a second call
    # writes the answer. `step`: one step per call, like the search.
    greedy_mode: str = "whole_solution"  # whole_solution | step
    greedy_errors_threshold: int = 3  # whole_solution: the reference's greedy threshold
    greedy_max_new_tokens: int = 4096  # whole_solution: one call's limit (the reference's max_tokens)
    few_shot: bool = False  # round-1 bootstrap prompt with demonstrations
    # A reference-format few_shots.json (or its directory; optional mcts_prompt.json beside it).
    few_shot_path: Optional[str] = None
    # Baselines: beam search keeps `beam_width` partial solutions and samples
    # `beam_expand` candidates from each (0: `candidates`).
    beam_expand: int = 0
    # The final answer of an inference MCTS (terminal_value=ppm) among the
    # final-answer nodes of all its trees (spec section 4, search/selection.py):
    # the top PPM score (the paper), a majority / score-weighted vote, or a
    # majority over the `answer_top_k` best-scored answers (reference README).
    answer_selection: str = "top_score"  # top_score | majority | weighted | top_k_majority
    answer_top_k: int = 4  # k of top_k_majority
    # Training-data extraction from trees (spec section 5).
    extract_top_k: int = 2  # SFT trajectories per problem (by mean step Q, then min Q)
    # top_k_first: the top-k correct, then drop responses containing "error"
    # (the reference); filter_first: drop error and duplicate responses, then
    # the top-k of the rest (data/extract.py).
    extract_sft_order: str = "top_k_first"
    extract_min_correct_share: float = 0.5  # drop problems with fewer correct trajectories
    ppm_pairs_per_side: int = 2  # positives / negatives per expanded node
    ppm_pairs_one_side_max: int = 4  # per side when the other side has only one
    # Step pairs also need the mean Q of the positive's best continuation above
    # that of the negative's worst (the reference's extraction; data/extract.py).
    ppm_continuation_q: bool = True
    # Also require the margin and edit distance below (the reference's pair
    # sampling; off: the paper asks only Q(pos) > Q(neg)).
    ppm_reference_filters: bool = False
    ppm_min_margin: float = 0.5
    ppm_min_edit_distance: int = 20


@dataclass(frozen=True)
class ExecutorConfig:
    """The sandboxed process pool that runs step code (spec section 3)."""

    num_workers: int = 2
    timeout_s: float = 30.0
    memory_limit_mb: int = 2048
    cpu_limit_s: int = 60
    file_size_limit_mb: int = 16
    max_processes: int = 64
    max_output_chars: int = 1_000_000  # raw capture cap before truncation
    observation_chars: int = 1024
    preload_modules: List[str] = field(default_factory=lambda: ["math", "numpy", "sympy", "fractions"])
    cache_size: int = 100_000
    tmp_size_mb: int = 256  # size of each worker's private /tmp (tmpfs)
    # Without kernel isolation (no user namespaces, no bubblewrap, no seccomp)
    # the pool refuses to run model code, naming what is missing; true runs it
    # unisolated anyway (a trusted machine, a debugging session).
    allow_unsandboxed: bool = False
    # Per worker: finished programs kept alive so a program extending one runs only
    # its new statements (see execution/worker.py); 0 = off (measured: no net win
    # on light steps, a large one on deep heavy prefixes).
    prefix_snapshots: int = 0
    preload_grading: bool = True  # workers also import math-verify (grade_many in the pool)
    # Programs that do not compile are answered on the host (compiled, never run)
    # with the sandbox's exact result, skipping a fork per junk program
    # (execution/screen.py); longer sources always go to the pool.
    screen_programs: bool = True
    screen_max_chars: int = 100_000


@dataclass(frozen=True)
class DataConfig:
    """Problem sources and prompt templates."""

    source: str = "jsonl"  # jsonl | tfds | arith
    path: Optional[str] = None
    limit: Optional[int] = None
    test_path: Optional[str] = None
    test_limit: Optional[int] = None
    # Prompt template (spec section 2). `assistant_sep` is the text between
    # the question and `<|assistant|>`; the reference infers with "\n\n" and
    # trains with "\n". We use one everywhere (see docs).
    assistant_sep: str = "\n\n"
    # Arithmetic word-problem generator (the embedded demo).
    arith_seed: int = 0
    arith_count: int = 256
    arith_levels: List[int] = field(default_factory=lambda: [1, 2, 3, 4])
    arith_test_seed: int = 1_000_003
    arith_test_count: int = 128
    # Share of level-4 problems that end with a remainder question (answers
    # 0-8: a wrong chain of steps often lands on the gold answer, and a
    # search then keeps wrong trajectories as verified ones).
    arith_final_mod_share: float = 0.5
    # The demo's pretraining corpus of imperfect solutions (data/corpus.py):
    # its own problem stream, and per level 1..4 the share of wrong solutions.
    arith_corpus_seed: int = 7_000_001
    arith_corpus_count: int = 4096
    arith_error_rates: List[float] = field(default_factory=lambda: [0.15, 0.3, 0.5, 0.7])
    # Per operation kind (add, sub, mul, div, pct, mod), the probability that
    # the corpus writes a step of that kind as its systematic wrong twin: the
    # base model's wrong habits (data/corpus.py). Empty: no habits.
    arith_habits: Dict[str, float] = field(default_factory=dict)
    tokenizer_vocab_size: int = 512  # the demo BPE's size (special tokens included)


@dataclass(frozen=True)
class OptimConfig:
    """One training stage's optimisation settings."""

    learning_rate: float = 7e-6
    schedule: str = "linear"  # linear | constant | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    batch_size: int = 128
    grad_accum: int = 1
    epochs: float = 2.0
    max_steps: Optional[int] = None
    seq_len: int = 4096
    # AdamW betas: the reference's (transformers' AdamW defaults, eps 1e-8 as
    # optax's); the demo keeps the b2 0.95 it was measured with.
    b1: float = 0.9
    b2: float = 0.999


@dataclass(frozen=True)
class TrainConfig:
    """Policy SFT and PPM training (spec section 6)."""

    seed: int = 0
    sft: OptimConfig = field(default_factory=OptimConfig)
    # No weight decay for the PPM: the reference's RM script sets none (its
    # SFT script sets 0.1); the spec gives none either.
    ppm: OptimConfig = field(
        default_factory=lambda: OptimConfig(batch_size=512, epochs=1.0, weight_decay=0.0)
    )
    ppm_loss: str = "bt"  # bt (pairwise Bradley-Terry) | pqm (MSE on Q)
    # What divides the batch's summed weighted Bradley-Terry loss
    # sum_r w_r * -log sigmoid(s_pos - s_neg), w_r = 1 / (pos_count * neg_count):
    # `pairs`, the number of pairs (the reference: its per-device sums averaged
    # over devices and accumulation, which is this times its per-device batch);
    # `weights`, the summed weights (ours before: every step of the tree
    # weighs the same in every batch). training/steps.py.
    ppm_loss_norm: str = "pairs"
    # A record longer than the stage's seq_len: `truncate` keeps its first
    # seq_len tokens (the reference's tokenizers truncate on the right);
    # `skip` drops it and counts it. training/records.py.
    overlong: str = "truncate"
    # Weight decay on biases too (ours before); the reference's trainer
    # decays every parameter but the biases. training/steps.py.
    decay_biases: bool = False
    sft_init: str = "base"  # base | previous  (every round from the base model)
    batching: str = "bucket"  # bucket | pack
    length_buckets: List[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    log_every: int = 10
    eval_every: int = 0  # 0: off
    eval_fraction: float = 0.0
    tensorboard: bool = True
    # Peak FLOP/s of one device (MFU = model FLOP/s / (peak x devices))
    # (0: MFU not reported). benchmarks/bench_train.py measures the CPU's.
    peak_flops: float = 0.0


@dataclass(frozen=True)
class EvolveConfig:
    """Self-evolution rounds (spec section 1)."""

    round: int = 1
    # Per-round config files (relative to this file's directory); empty
    # means this file is itself the config of one round.
    rounds: List[str] = field(default_factory=list)
    # Checkpoint or HF dir of the base model; round-1 policy if not the base.
    # A relative path written in a config file is relative to that file
    # (config/loader.py, FILE_RELATIVE_KEYS); on the command line, to the
    # working directory.
    base_policy: Optional[str] = None
    bootstrap_policy: Optional[str] = None
    ppm_init: str = "policy"  # policy | base | previous (the previous round's PPM)
    # Policy SFT data: this round's extracted trajectories (`round`), or
    # those of rounds 1..N, exact duplicates dropped (`cumulative`).
    sft_data: str = "round"
    stages: List[str] = field(
        default_factory=lambda: ["problems", "search", "extract", "sft", "ppm", "eval"]
    )
    # Round 0, before round 1: e.g. [world, pretrain, eval] for the demo
    # (make the world, pretrain the base model, measure its greedy accuracy);
    # [eval] for a real base model; [] to skip.
    base_stages: List[str] = field(default_factory=list)
    # Round 0 `pretrain`: the base model trained from scratch on the world's
    # corpus (the demo's stand-in for a pretrained base model).
    pretrain: OptimConfig = field(
        default_factory=lambda: OptimConfig(learning_rate=3e-3, schedule="cosine", warmup_steps=20,
                                            weight_decay=0.01, batch_size=32, epochs=2.0, seq_len=512)
    )
    # Share of the round's problems whose PPM pairs are kept out of PPM
    # training and only scored: the report's "PPM pair acc" (0: train on all
    # pairs as the reference does; the accuracy is then the training window's).
    ppm_heldout: float = 0.1
    # JAX's persistent compilation cache for the run (relative: under the
    # run directory; null: off). Later stages and resumed runs load the
    # programs earlier ones compiled instead of compiling them again.
    compile_cache: Optional[str] = None
    # Stage name -> "package.module:function" replacing the built-in stage
    # (custom stages, and the fakes the tests plug in).
    stage_functions: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation harness."""

    benchmarks: List[str] = field(default_factory=lambda: ["math500"])
    # What each round's evolve eval stage runs (round 0: greedy only):
    # greedy, best_of_n (the PPM's pick and the majority vote over eval.k
    # sampled trajectories), mcts_ppm (MCTS with the round's PPM under
    # inference_eval). greedy is required (every comparison needs it); a
    # method left out is "-" in the report and its comparisons are skipped
    # (the demo runs MCTS+PPM only in round 4, for time).
    round_methods: List[str] = field(default_factory=lambda: ["greedy", "best_of_n", "mcts_ppm"])
    data_dir: Optional[str] = None
    method: str = "greedy"  # greedy | majority | best_of_n | beam | mcts_ppm
    k: int = 8
    limit: Optional[int] = None
    bootstrap_samples: int = 1000
    top_k_vote: int = 4
    grade_timeout_s: float = 5.0
    # Directory holding the official benchmark files (or any one problem
    # file); with `data_dir` set it is the tfds builders' source instead.
    benchmark_dir: Optional[str] = None
    levels_path: Optional[str] = None  # math500_levels.jsonl (default: beside the files)
    # Answer choice of mcts_ppm (spec section 4): the paper's top PPM score,
    # the reference README's majority over the top `top_k_vote`, or votes.
    mcts_selection: str = "top_score"  # top_score | top_k_majority | weighted | majority
    # best_of_n / beam / mcts_ppm without a trained PPM (no ppm.checkpoint) are
    # refused; true runs them with a fresh value head and says so in the report.
    allow_untrained_ppm: bool = False
    chunk_size: int = 16  # problems per runner call; each finished chunk is saved
    processbench_dir: Optional[str] = None  # ProcessBench <subset>.json files
    processbench_tune_subset: str = "gsm8k"  # threshold chosen here, reported on all
    processbench_threshold: Optional[float] = None  # fixed threshold (skips tuning)


@dataclass(frozen=True)
class InferenceEvalConfig:
    """The inference protocol of every evaluation (spec section 4).

    Evaluation searches with these values, never the round's training-data
    search config (`mcts`), so every round's policy + PPM is measured the
    same way; prompts are zero-shot (the format the policy and PPM were
    trained on). Defaults: the paper's protocol as the reference runs it
    (run_example.sh, config/sft_eval_mcts.yaml): "64 trajectories" are 64
    independent MCTS runs per test problem, each of 12 rollouts x 32
    candidates per step at temperature 1 with the PPM scoring every new
    leaf; each run keeps its best trajectory by PPM score and the answer is
    chosen among those 64 (`eval.mcts_selection`). `mode: single_tree`
    grows one tree of `rollouts` rollouts instead and chooses among all its
    answers. `max_depth`, `c_puct` and the step limits are the same in
    every round and come from `mcts`.
    """

    # runs: `runs` independent MCTS runs (distinct seeds), one best
    # trajectory each | single_tree: one tree, every answer a candidate.
    mode: str = "runs"
    runs: int = 64  # independent MCTS runs per test problem (mode: runs)
    rollouts: int = 12  # MCTS+PPM rollouts of each run (or of the single tree)
    candidates: int = 32  # candidates per step
    ppm_init_value: bool = True  # the PPM gives every new leaf its initial value
    errors_threshold: int = 1  # the trained policy's (round 1's search uses 2)
    temperature: float = 1.0  # the reference's (sft_eval_mcts.yaml)
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    # Evaluate with the search's few-shot prompt (`mcts.few_shot`) instead of
    # zero-shot: only for a pretrained model never fine-tuned on the step
    # format (configs/presets/cpu-eval.yaml); the rounds keep false.
    few_shot: bool = False


@dataclass(frozen=True)
class CheckpointConfig:
    """Orbax checkpointing."""

    keep: int = 3
    save_every: int = 500
    async_save: bool = True
    export_bf16: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    """Logging and progress display."""

    level: str = "INFO"
    # Progress of long stages: bars on a terminal; when stderr is not a
    # terminal (a log file, a pod, CI), a log line every `progress_every_s`
    # seconds with done/total, rate, ETA and the stage's key figure.
    progress: bool = True
    progress_every_s: float = 30.0  # 0: a line per finished item
    jsonl: bool = True


@dataclass(frozen=True)
class RuntimeConfig:
    """Process-wide settings applied before JAX starts (utils/xla_flags.py)."""

    # Pins XLA:CPU's summation order so CPU numbers are bit-identical across
    # x86-64 hosts (no YNNPACK kernels picked by the host's instruction set,
    # XLA code for AVX2 at most, a one-thread intra-op pool). Read by
    # `rstar-jax evolve` before JAX starts; the demo sets it (issue 26: its
    # base model differed between hosts). Off by default: on an accelerator
    # it changes nothing. Proof, cost and the limits of what it can pin
    # (Eigen's cache-sized blocks): benchmarks/RESULTS.md, determinism.
    xla_cpu_deterministic: bool = False
    # The pinned intra-op pool's size (read only with xla_cpu_deterministic):
    # XLA:CPU splits long sums over the pool's threads, so the numbers are
    # the same on every host whose process may use at least this many cores
    # (a host with fewer gets a smaller pool and a warning). 2: the speed of
    # a 2-core host (1 thread: 1.55x slower pretraining there, measured).
    intra_op_threads: int = 2


@dataclass(frozen=True)
class Config:
    """The whole configuration of one command."""

    seed: int = 0
    run_name: str = "rstar"
    model: ModelConfig = field(default_factory=ModelConfig)
    ppm: PPMConfig = field(default_factory=PPMConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evolve: EvolveConfig = field(default_factory=EvolveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    inference_eval: InferenceEvalConfig = field(default_factory=InferenceEvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# Values restricted to a closed set, checked after type validation.
CHOICES: Dict[str, tuple] = {
    "model.family": ("qwen2", "llama"),
    "model.param_dtype": ("float32", "bfloat16"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots_saveable"),
    "ppm.score_transform": ("none", "tanh", "tanh_scaled"),
    "mesh.distributed.enabled": ("auto", "on", "off"),
    "engine.truncation": ("error", "left", "right"),
    "engine.kv_layout": ("dense", "paged"),
    "mcts.mode": ("mcts", "greedy", "best_of_n", "beam"),
    "mcts.terminal_value": ("gold", "ppm"),
    "mcts.answer_expansion": ("first_answer", "first_answer_and_steps", "all"),
    "mcts.answer_selection": ("top_score", "majority", "weighted", "top_k_majority"),
    "mcts.greedy_mode": ("whole_solution", "step"),
    "data.source": ("jsonl", "tfds", "arith"),
    "train.ppm_loss": ("bt", "pqm"),
    "train.ppm_loss_norm": ("pairs", "weights"),
    "train.overlong": ("truncate", "skip"),
    "mcts.extract_sft_order": ("top_k_first", "filter_first"),
    "train.sft_init": ("base", "previous"),
    "train.batching": ("bucket", "pack"),
    "train.sft.schedule": ("linear", "constant", "cosine"),
    "train.ppm.schedule": ("linear", "constant", "cosine"),
    "evolve.ppm_init": ("policy", "base", "previous"),
    "evolve.sft_data": ("round", "cumulative"),
    "evolve.pretrain.schedule": ("linear", "constant", "cosine"),
    "eval.method": ("greedy", "majority", "best_of_n", "beam", "mcts_ppm"),
    "eval.round_methods": ("greedy", "best_of_n", "mcts_ppm"),  # each item of the list
    "inference_eval.mode": ("runs", "single_tree"),
    "eval.mcts_selection": ("top_score", "top_k_majority", "weighted", "majority"),
    "eval.processbench_tune_subset": ("gsm8k", "math", "olympiadbench", "omnimath"),
    "logging.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
}


def replace(cfg, **changes):
    """`dataclasses.replace` re-exported for frozen sections."""
    return dataclasses.replace(cfg, **changes)

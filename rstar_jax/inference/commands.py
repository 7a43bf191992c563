"""CLI: `rstar-jax sample --config FILE --prompt TEXT [--n N] [overrides]`."""

from __future__ import annotations

import argparse
import sys

from rstar_jax.config.commands import (
    add_config_arguments,
    check_model_paths,
    config_from_args,
    ranged,
)
from rstar_jax.config.ranges import NONNEG, ONE_UP


def _sample(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    check_model_paths(cfg)
    from rstar_jax.data.prompts import STEP_STOPS, make_prompt_fn
    from rstar_jax.inference import load_policy_engine
    from rstar_jax.inference.types import GenerationRequest, SamplingParams

    # The search's own prompt: with `mcts.few_shot` the two demonstrations
    # show an untuned model the step format.
    prompt = args.prompt if args.raw else make_prompt_fn(cfg)(args.prompt)
    params = SamplingParams(
        n=args.n, max_new_tokens=args.max_new_tokens or cfg.engine.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        stop=tuple(args.stop) if args.stop else (() if args.no_stop else STEP_STOPS), seed=args.seed)
    try:
        engine = load_policy_engine(cfg)
        (completions,) = engine.generate([GenerationRequest(prompt, params)])
    except ValueError as e:  # bad sampling values, an over-long prompt, a bad model config
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, c in enumerate(completions):
        print(f"--- candidate {i} ({c.stop_reason}, {len(c.token_ids)} tokens, "
              f"logprob {c.logprob:.2f})")
        print(c.text)
    return 0


def register(sub) -> None:
    """Adds this subpackage's subcommands to the `rstar-jax` parser."""
    p = sub.add_parser("sample", help="sample completions from the policy (try a model by hand)")
    add_config_arguments(p)
    p.add_argument("--prompt", required=True, help="a question (wrapped in the search's prompt: few-shot when mcts.few_shot)")
    p.add_argument("--raw", action="store_true", help="send --prompt as is, without the template")
    p.add_argument("--n", type=ranged(int, ONE_UP), default=1, help="completions to sample")
    p.add_argument("--max-new-tokens", type=ranged(int, ONE_UP), default=None,
                   help="default: engine.max_new_tokens")
    p.add_argument("--temperature", type=ranged(float, "mcts.temperature"), default=0.7,
                   help="0 is greedy")
    p.add_argument("--top-p", type=ranged(float, "mcts.top_p"), default=1.0)
    p.add_argument("--top-k", type=ranged(int, NONNEG), default=0, help="0: off")
    p.add_argument("--seed", type=ranged(int, "seed"), default=0)
    p.add_argument("--stop", action="append", help="stop string (repeatable; default: step tags)")
    p.add_argument("--no-stop", action="store_true", help="no stop strings (run to length/eos)")
    p.set_defaults(handler=_sample)

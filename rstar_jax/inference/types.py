"""Frozen contracts between the search driver and the engine / PPM scorer.

The driver only ever sees these types, so it can be tested with a mock
engine whose output is arithmetic on its input (tests/search).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    """How to sample the completions of one prompt.

    `temperature == 0` (or `top_k == 1`) is greedy. `seed` makes a request
    reproducible whatever else is in the batch.
    """

    n: int = 1
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: Tuple[str, ...] = ()
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. `text` includes the stop string when one
    ended it (`stop_reason == "stop"`, `stop_string` set); otherwise
    `stop_reason` is "length" or "eos"."""

    text: str
    token_ids: Tuple[int, ...]
    stop_reason: str
    stop_string: Optional[str] = None
    logprob: float = 0.0
    num_prompt_tokens: int = 0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)


class GenerationEngine(Protocol):
    """What the search needs from a policy: n completions per prompt."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Returns, per request, `params.n` completions in a fixed order."""
        ...


class StepScorer(Protocol):
    """What the search needs from a PPM: one score per text (the policy
    prompt plus a partial solution), with the configured transform applied."""

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """float32 `[len(texts)]`."""
        ...

"""Subprocess body for the SIGKILL resume test: searches the add problems
into a directory with a slow mock engine (so the parent can kill it mid-way).

Usage: python killrun.py OUT_DIR COUNT LATENCY_S
"""

import sys

from search.search_helpers import add_problems, make_cfg

from rstar_jax.search.run import search_to_dir
from rstar_jax.testing.mock import MOCK_HOOKS, FakeExecutor, MockEngine


def main(out_dir: str, count: int, latency: float) -> None:
    cfg = make_cfg(candidates=3, rollouts=4, trees_in_flight=2)
    search_to_dir(cfg, add_problems(count), out_dir,
                  MockEngine(steps=2, seeded=True, call_latency_s=latency),
                  FakeExecutor(), None, MOCK_HOOKS, process_index=0, process_count=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))

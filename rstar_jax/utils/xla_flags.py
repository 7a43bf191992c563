"""XLA:CPU settings that make a CPU run round the same on every x86-64 host.

Why: the demo pretrained different base models on two hosts from the same
code and config (greedy 10.0 on one, 6.2 on another; issue 26). XLA:CPU
adds the same numbers in an order that depends on the host in two ways,
both measured on this host (benchmarks/RESULTS.md, determinism):
- the instruction set: YNNPACK (which XLA hands most dots and reductions)
  picks AVX-512 or AVX2 kernels at run time, and XLA's own code is
  generated for the host's widest vectors (a sum over 16 lanes or 8);
- the core count: the intra-op thread pool has one thread per core the
  process may use when JAX starts, and Eigen's contractions with a long
  summed axis (every weight gradient: the sum over a batch's tokens) split
  that axis over the pool's threads.
The last bits differ, and 550 steps of training grow them into another
model.

The pin (`runtime.xla_cpu_deterministic`; the demo sets it): XLA flags
that turn YNNPACK's fusions off and cap XLA's code at AVX2, set in
`XLA_FLAGS` before JAX starts (XLA reads them once), and an intra-op pool
of a fixed size (`runtime.intra_op_threads`, 2): JAX's CPU client is
created while the process may use exactly that many cores, then the
process gets all its cores back (the pool keeps its size; other threads
and the executor's worker processes use the rest). A host with fewer
usable cores gets a smaller pool, a warning, and possibly other numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
from typing import Dict, Iterator, List, Tuple

log = logging.getLogger(__name__)
_POOL_THREADS = 0  # the intra-op pool size this process's JAX CPU client was made with (0: not pinned)

# (flag, value, why). The order is the order they are written.
CPU_DETERMINISTIC_FLAGS: Tuple[Tuple[str, str, str], ...] = (
    # Dots and reductions by XLA's own compiled code and Eigen instead of
    # YNNPACK's kernels, which are picked per host instruction set.
    ("xla_cpu_experimental_ynn_fusion_type", "", "no YNNPACK fusions"),
    # XLA's generated code for the same vector width on every x86-64 host
    # (AVX2: what nearly every x86-64 server of the last decade has).
    ("xla_cpu_max_isa", "AVX2", "code for AVX2 at most"),
)


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def deterministic_flags() -> List[str]:
    """The `--flag=value` strings the pin adds on this host (the ISA cap
    only on x86-64, where the value names an x86 instruction set)."""
    return [f"--{name}={value}" for name, value, _ in CPU_DETERMINISTIC_FLAGS
            if name != "xla_cpu_max_isa" or _x86()]


def _flag_name(arg: str) -> str:
    return arg.lstrip("-").split("=", 1)[0]


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the helper: assume it started
        return True


def pin_cpu_numerics(enabled: bool) -> bool:
    """Writes the deterministic XLA:CPU flags into `XLA_FLAGS` when `enabled`.

    A flag the user already set to another value is replaced (and said so:
    it would undo the pin). Returns whether the pin is in effect. Raises
    RuntimeError when JAX's backend already started without the flags,
    since XLA reads them only at start-up.
    """
    if not enabled:
        return pinned()
    wanted = deterministic_flags()
    if _backend_started():
        if pinned():
            return True
        raise RuntimeError("runtime.xla_cpu_deterministic needs its XLA flags set before JAX "
                           "starts its backend, and this process already started it; run the "
                           f"command in a fresh process or export XLA_FLAGS='{' '.join(wanted)}'")
    names = {_flag_name(f) for f in wanted}
    kept, replaced = [], []
    for arg in os.environ.get("XLA_FLAGS", "").split():
        (replaced if _flag_name(arg) in names and arg not in wanted else kept).append(arg)
    if replaced:
        log.warning("runtime.xla_cpu_deterministic: replacing %s in XLA_FLAGS", " ".join(replaced))
    kept += [f for f in wanted if f not in kept]
    os.environ["XLA_FLAGS"] = " ".join(kept)
    return True


@contextlib.contextmanager
def fixed_intra_op_pool(threads: int) -> Iterator[None]:
    """Within it, the process may use `threads` cores (its lowest-numbered
    usable ones); JAX's CPU client created inside sizes its intra-op pool
    to that many threads whatever the host has. Restores the process's
    cores on exit. With fewer usable cores the pool is smaller, said in a
    WARNING (its sums split differently: the numbers may differ)."""
    if threads < 1:
        raise ValueError(f"runtime.intra_op_threads must be >= 1, got {threads}")
    if not hasattr(os, "sched_setaffinity"):  # not Linux: the pool follows the cores
        log.warning("runtime.xla_cpu_deterministic: cannot size the intra-op pool here")
        yield
        return
    global _POOL_THREADS
    allowed = os.sched_getaffinity(0)
    use = set(sorted(allowed)[:threads])
    if len(use) < threads:
        log.warning("runtime.xla_cpu_deterministic: this process may use %d core(s), fewer than "
                    "runtime.intra_op_threads=%d; the intra-op pool gets %d thread(s) and its "
                    "numbers may differ from a host that gives it %d", len(use), threads,
                    len(use), threads)
    os.sched_setaffinity(0, use)
    try:
        yield
        _POOL_THREADS = len(use)
    finally:
        os.sched_setaffinity(0, allowed)


def pool_threads() -> int:
    """The pinned intra-op pool's size (0: this process did not pin it)."""
    return _POOL_THREADS


def pinned() -> bool:
    """Whether `XLA_FLAGS` holds every flag of the pin (as this process sees it)."""
    current = os.environ.get("XLA_FLAGS", "").split()
    return all(f in current for f in deterministic_flags())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_isa() -> List[str]:
    """The vector instruction sets the host offers (Linux x86: from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [isa for isa in ("sse4_2", "avx", "avx2", "fma", "avx512f",
                                            "avx512_bf16", "amx_tile") if isa in have]
    except OSError:
        pass
    return []


def runtime_settings() -> Dict[str, object]:
    """What decides this process's CPU rounding, for a run's report: the
    pin, XLA_FLAGS, JAX's version, the CPU, its instruction sets and the
    cores the process may use."""
    try:
        import jax
        import jaxlib
        versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    except ImportError:
        versions = {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"xla_cpu_deterministic": pinned() and _POOL_THREADS > 0,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "intra_op_threads": _POOL_THREADS or f"one per core ({cores})",
            **versions, "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_isa": _cpu_isa(), "cores": cores}


def runtime_markdown(settings: Dict[str, object]) -> str:
    """One report paragraph saying under which CPU settings its numbers came."""
    pin = ("pinned (runtime.xla_cpu_deterministic: no YNNPACK, AVX2 code, an intra-op pool "
           f"of {settings.get('intra_op_threads')} thread(s); the same numbers on x86-64 hosts "
           "that give the pool as many cores and whose caches block Eigen's sums alike)"
           if settings.get("xla_cpu_deterministic") else
           "not pinned (numbers may differ in the last bits on another host, and grow from there)")
    return (f"\nRuntime: XLA:CPU rounding {pin}; XLA_FLAGS `{settings.get('xla_flags') or ''}`; "
            f"jax {settings.get('jax', '?')}; intra-op threads {settings.get('intra_op_threads')}; "
            f"{settings.get('cpu')} "
            f"({', '.join(settings.get('cpu_isa') or [])}), {settings.get('cores')} cores.\n")

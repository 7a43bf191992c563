"""CLI: `rstar-jax evolve --config FILE --out RUN_DIR [--only ...] [--from ...] [overrides]`."""

from __future__ import annotations

import argparse
import sys

from rstar_jax.config.commands import add_config_arguments, check_out_dir


def _evolve(args: argparse.Namespace) -> int:
    from rstar_jax.config.loader import load_config
    from rstar_jax.utils.logging import setup_logging

    check_out_dir(args.out)
    cfg = load_config(args.config, args.overrides)  # refuses bad values
    setup_logging(cfg.logging.level)
    if cfg.runtime.xla_cpu_deterministic:
        # Before anything starts JAX's backend: XLA reads its flags once, and
        # the intra-op pool takes its size from the cores usable at that moment.
        import jax

        from rstar_jax.models.mesh import maybe_initialize_distributed
        from rstar_jax.utils.xla_flags import fixed_intra_op_pool, pin_cpu_numerics

        pin_cpu_numerics(True)
        with fixed_intra_op_pool(cfg.runtime.intra_op_threads):
            maybe_initialize_distributed(cfg.mesh.distributed)  # must precede the backend
            jax.devices()
    from rstar_jax.evolve.context import MissingInput
    from rstar_jax.evolve.runner import run_evolve

    try:
        run_evolve(args.config, args.out, args.overrides, only=args.only, start=args.start)
    except MissingInput as e:
        print(f"rstar-jax evolve: {e}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """Adds `evolve`."""
    p = sub.add_parser(
        "evolve",
        help="run (or resume) self-evolution rounds as stages",
        description="Runs the rounds of an evolve config (evolve.rounds) or one round's config "
        "as stages: problems -> search -> extract -> sft -> ppm -> eval, each under "
        "RUN_DIR/round_N/<stage>/ with a manifest. Finished stages are skipped, so rerunning "
        "the same command resumes. Writes RUN_DIR/report.{md,json} and PNG plots.",
    )
    add_config_arguments(p)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--only", metavar="STAGES",
                   help="run only these stages: comma-separated roundN or roundN.stage "
                   "(e.g. round3.search)")
    p.add_argument("--from", dest="start", metavar="STAGE",
                   help="start at this stage (roundN or roundN.stage); earlier ones must be done")
    p.set_defaults(handler=_evolve)

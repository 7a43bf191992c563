"""CLI: `rstar-jax convert hf-to-ckpt | ckpt-to-hf` (registered by `rstar_jax.cli`)."""

from __future__ import annotations

import argparse
import sys

DTYPES = ("bfloat16", "float32")


def _hf_to_ckpt(args: argparse.Namespace) -> int:
    from rstar_jax.models.transfer import convert_hf_to_ckpt

    try:
        out = convert_hf_to_ckpt(args.hf_dir, args.out, ppm=args.ppm, dtype=args.dtype)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"rstar-jax convert: {e}", file=sys.stderr)
        return 2
    print(f"wrote {'PPM' if args.ppm else 'policy'} checkpoint {out}")
    return 0


def _ckpt_to_hf(args: argparse.Namespace) -> int:
    from rstar_jax.models.transfer import convert_ckpt_to_hf

    try:
        out = convert_ckpt_to_hf(args.ckpt, args.out, dtype=args.dtype)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"rstar-jax convert: {e}", file=sys.stderr)
        return 2
    print(f"wrote HF model {out}")
    return 0


def register(sub) -> None:
    """Adds `convert` with its two directions to the `rstar-jax` parser."""
    convert = sub.add_parser("convert", help="convert weights between HF and our checkpoints")
    csub = convert.add_subparsers(dest="convert_command", metavar="<direction>")
    csub.required = True
    h2c = csub.add_parser("hf-to-ckpt", help="HF Qwen2/Llama directory -> our checkpoint")
    h2c.add_argument("--hf-dir", required=True, help="HF model dir (config.json + safetensors)")
    h2c.add_argument("--out", required=True, help="output checkpoint directory")
    h2c.add_argument("--ppm", action="store_true",
                     help="make a PPM (converts a v_head.summary.* head, else a fresh head)")
    h2c.add_argument("--dtype", choices=DTYPES, default=None,
                     help="stored dtype (default: the source weights' dtype)")
    h2c.set_defaults(handler=_hf_to_ckpt)
    c2h = csub.add_parser("ckpt-to-hf", help="our checkpoint -> HF directory (transformers, vLLM)")
    c2h.add_argument("--ckpt", required=True,
                     help="export dir, checkpoint dir (latest step) or one step dir")
    c2h.add_argument("--out", required=True, help="output HF directory")
    c2h.add_argument("--dtype", choices=DTYPES, default=None,
                     help="safetensors dtype (default: the checkpoint's)")
    c2h.set_defaults(handler=_ckpt_to_hf)

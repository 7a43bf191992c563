"""CLI commands of this subpackage (registered by `rstar_jax.cli`)."""


def register(sub) -> None:
    """Adds this subpackage's subcommands to the `rstar-jax` parser."""

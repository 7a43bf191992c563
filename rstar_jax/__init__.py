"""rstar_jax: rStar-Math (arXiv 2501.04519) in JAX/Flax.

Subpackages, data flowing one way: `config` -> `models` -> `inference`,
`execution` -> `search` -> `data` / `training` -> `evolve`.
"""

__version__ = "0.1.0"

import sys

from rstar_jax.cli import main

sys.exit(main())

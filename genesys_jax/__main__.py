from genesys_jax.launch import run

run()

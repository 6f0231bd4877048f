"""LLM designers on Gemini, or on a local model behind the same API: agents that propose, review,
plan, implement unit by unit and observe, over the GP tree (README "LLM designers on Gemini").

  config.py    `c.designer`: kind gp | llm | direct | mixed, models, pricing, budgets, endpoint
  client.py    google-genai with a pinned API version, retries and timeouts -> `Reply`
  record.py    every call recorded as an `llm_call` artifact; replay from a recorded run
  session.py   one proposal's calls: replay keys, budgets, tokens and dollars
  cost.py      usage -> dollars from the config's pricing table
  schemas.py   pydantic response schemas per role (re-validated: `.parsed` is None on bad JSON)
  prompts.py   system instructions and renderings (trees, kinds, code, checker reports)
  contract.py  what a coder must know: unit contract, lint rules, helpers, worked example, checks
  context.py   what a designer sees: parents, their code, proposals, siblings, similar proposals
  agents.py    proposer (+ search), reviewer, planner, observer
  coder.py     the coder: its prompt (the unit's place, neighbours' code, skeleton) and answer
  pipeline.py  the top-down unit-by-unit implementation loop with the sandboxed checker
  direct.py    the direct-prompting baseline
  gemini_wire.py  the Gemini REST wire format and the 127.0.0.1 server of the two below
  endpoint.py  a local Gemini-API endpoint: a GGUF model (llama-cpp-python) or an OpenAI-compatible URL
  local_models.py  model files: a path, or a model shipped inside PyPI packages
  fake_gemini.py  the test double of the Gemini API (a local HTTP server)

The loop's side (one proposal by a designer, as a record for the loop to store) is
genesys_jax/designers.py; the valid-implementation rate (Table 4) is genesys_jax/cli/table4.py.
"""

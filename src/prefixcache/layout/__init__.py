"""Prompt layout strategies and the cache model they aim at.

- ``cache_model``: what vLLM's prefix cache can reuse of a prompt (shared tokens, full
  blocks, chained block hashes per salt, never the last token's block);
- ``alignment``: pad each static layer to a KV block boundary of the serving engine;
- ``warming``: prefill static prefixes before traffic, and prefetch the next step's
  prefix while the current one runs (the workflow's plan).

Nothing is imported here: ``cache_model`` is plain Python, the strategies need the
``llm`` extra.
"""

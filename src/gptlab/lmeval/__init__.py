"""gptlab as an lm-evaluation-harness backend (``pip install 'gptlab[eval]'``).

Importing ``gptlab.lmeval.backend`` registers ``--model gptlab`` with lm-eval. lm-eval 0.4 has no
plugin discovery for models, so its own CLI is run through ``python -m gptlab.lmeval`` (lm-eval's
``lm_eval`` command line, unchanged, with the backend registered); ``gptlab-eval`` evaluates a
checkpoint and also writes the scores into ``results.jsonl`` for ``gptlab-report``.
"""

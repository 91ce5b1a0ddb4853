"""Titans models in Hugging Face Transformers (``pip install "titans-serve[hf]"``).

Importing this module registers the ``titans`` model type with ``AutoConfig``,
``AutoModelForCausalLM`` and ``AutoTokenizer``, so a model directory of this project (``default``,
a trainer checkpoint, a ``save_pretrained`` output) loads with the Auto classes as it is.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from titans_core.hf.cache import TitansCache
from titans_core.hf.configuration import TitansHFConfig
from titans_core.hf.modeling import TitansForCausalLM
from titans_core.hf.tokenization import CHAT_TEMPLATE, TitansTokenizerFast

AutoConfig.register(TitansHFConfig.model_type, TitansHFConfig, exist_ok=True)
AutoModelForCausalLM.register(TitansHFConfig, TitansForCausalLM, exist_ok=True)
AutoTokenizer.register(TitansHFConfig, fast_tokenizer_class=TitansTokenizerFast, exist_ok=True)

__all__ = ["CHAT_TEMPLATE", "TitansCache", "TitansForCausalLM", "TitansHFConfig", "TitansTokenizerFast"]

"""``TitansForCausalLM``: a :class:`titans_core.TitansLM` as a Transformers causal LM.

There is one implementation of the model: this class registers the very modules of a ``TitansLM``
(``embed``, ``layers``, ``norm``) as its own, so its weights have the same names as the project's
checkpoints and ``save_pretrained`` writes a directory both libraries load, and its forward is the
``TitansLM``'s. A session's memory travels in a :class:`TitansCache`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from titans_core.hf.cache import TitansCache
from titans_core.hf.configuration import TitansHFConfig
from titans_core.model import TitansLM


class TitansForCausalLM(PreTrainedModel, GenerationMixin):
    """Loads, generates (the memory as the cache), saves and trains like any causal LM."""

    config_class = TitansHFConfig
    base_model_prefix = "titans"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False

    def __init__(self, config: TitansHFConfig, titans: TitansLM | None = None):
        super().__init__(config)
        if titans is None:
            with torch.device("cpu"):  # not Transformers' meta device: TitansLM's init reads values
                titans = TitansLM(config.to_titans())
        # Not a submodule (its parameters would be listed twice): the modules below are its own.
        self.__dict__["titans"] = titans
        self.embed, self.layers, self.norm = titans.embed, titans.layers, titans.norm
        self.post_init()

    @classmethod
    def from_titans(cls, titans: TitansLM | str) -> TitansForCausalLM:
        """The Transformers view of a project model, sharing its weights (or of a name that
        :meth:`TitansLM.from_pretrained` knows: ``tiny-random``, ``default``, a directory)."""
        if not isinstance(titans, TitansLM):
            titans = TitansLM.from_pretrained(titans)
        return cls(TitansHFConfig.from_titans(titans.config), titans).to(titans.embed.weight.dtype)

    def _init_weights(self, module: nn.Module) -> None:
        """Nothing: ``TitansLM`` initialises its own parameters (Transformers' defaults would not)."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed = self.titans.embed = value

    def get_output_embeddings(self) -> None:
        return None  # the output layer is the input embedding (tied, no separate head)

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cache: TitansCache | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        inputs_embeds: Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Feed the tokens of ``input_ids`` that ``cache`` has not consumed (all of them without a
        cache) after its state. With ``labels``, ``loss`` is the plain next-token cross-entropy
        (labels are the inputs, shifted inside; -100 is ignored)."""
        if inputs_embeds is not None or input_ids is None:
            raise ValueError("a Titans model reads token ids (input_ids), not embeddings")
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "padding is not supported: a memory learns from every token it reads, pad tokens too; "
                "give sequences of one length (or one at a time)"
            )
        cache = cache if cache is not None else kwargs.get("past_key_values")  # the name before 5.x
        use_cache = self.config.use_cache and not self.training if use_cache is None else use_cache
        if cache is None and use_cache:
            cache = TitansCache()
        tokens = input_ids if cache is None else cache.unconsumed(input_ids)
        if tokens.shape[1] == 0:
            raise ValueError("every token given is already in the cache: give at least one new token")
        state = None if cache is None else cache.state
        keep = "last" if logits_to_keep == 1 and labels is None else "all"
        logits, state = self.titans(tokens, state, logits=keep)
        if cache is not None:
            cache.consumed(input_ids, tokens, state)
        if isinstance(logits_to_keep, int) and logits_to_keep > 1 and labels is None:
            logits = logits[:, -logits_to_keep:]
        loss = None
        if labels is not None:
            labels = labels[:, -tokens.shape[1] :]
            counted = (
                {"num_items_in_batch": kwargs["num_items_in_batch"]} if "num_items_in_batch" in kwargs else {}
            )
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **counted)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, cache: TitansCache | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """The whole sequence every step: the cache knows which of its tokens are new."""
        inputs = {"input_ids": input_ids, "cache": cache, "use_cache": kwargs.get("use_cache", True)}
        if kwargs.get("attention_mask") is not None:
            inputs["attention_mask"] = kwargs["attention_mask"]
        if "logits_to_keep" in kwargs:
            inputs["logits_to_keep"] = kwargs["logits_to_keep"]
        return inputs

    def _prepare_cache_for_generation(
        self, generation_config, model_kwargs, *args: Any, **kwargs: Any
    ) -> None:
        """A fresh memory unless the caller passed one (Transformers would make a key/value cache)."""
        given = model_kwargs.get("cache")
        if given is not None and not isinstance(given, TitansCache):
            raise ValueError(f"a Titans model's cache is a TitansCache, got {type(given).__name__}")
        if given is None and generation_config.use_cache is not False:
            model_kwargs["cache"] = TitansCache()

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Transformers' ``generate``; a cache the caller passed then also holds the last token
        generated (``generate`` itself never feeds it), so the state matches the whole output, as
        the server's does, and the next call continues from the text returned."""
        output = super().generate(*args, **kwargs)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        sequences = output if isinstance(output, Tensor) else output.sequences
        # (after beam search the cache holds a row per beam, not per sequence: it is left as it is)
        if isinstance(cache, TitansCache) and cache.batch_size == sequences.shape[0]:
            tail = cache.unconsumed(sequences)
            if tail.shape[1]:
                cache.consumed(sequences, tail, self.titans(tail, cache.state, logits="none")[1])
        return output

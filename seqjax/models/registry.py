"""Build any seqjax model from its name and config.

``build_model(cfg)`` returns an unbound Flax module for ``cfg.model`` and ``cfg.head``;
``init_params`` initialises it from example inputs of the right kind, so callers (the
trainer, the demo, the benchmarks) never branch on the family.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax.models.classifier import SequenceClassifier
from seqjax.models.config import ModelConfig
from seqjax.models.lm import CausalLM
from seqjax.models.seq2seq import EncoderDecoder

_HEADS = {'classifier': SequenceClassifier, 'lm': CausalLM, 'seq2seq': EncoderDecoder}


def as_config(cfg: ModelConfig | Mapping[str, Any]) -> ModelConfig:
  return cfg if isinstance(cfg, ModelConfig) else ModelConfig.from_mapping(cfg)


def build_model(cfg: ModelConfig | Mapping[str, Any]) -> nn.Module:
  """The model for ``cfg`` (a ``ModelConfig`` or a mapping of its fields)."""
  cfg = as_config(cfg)
  return _HEADS[cfg.head](cfg)


def example_inputs(cfg: ModelConfig, batch: int = 2, time: int = 8) -> tuple[Any, ...]:
  """Positional arguments of ``model(...)`` with the right dtypes (all real tokens)."""
  if cfg.vocab_size:
    inputs = jnp.ones((batch, time), jnp.int32)
  else:
    inputs = jnp.zeros((batch, time, cfg.input_features), jnp.float32)
  if cfg.head == 'seq2seq':
    return inputs, jnp.ones((batch, time), jnp.int32)
  return (inputs,)


def init_params(cfg: ModelConfig, rng: jax.Array, batch: int = 2, time: int = 8):
  """Freshly initialised ``params`` for ``cfg``."""
  return build_model(cfg).init(rng, *example_inputs(cfg, batch, time))['params']

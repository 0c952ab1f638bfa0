"""The train state: ``step``, ``params``, ``opt_state`` and the base ``rng`` — everything
a resumed run needs, besides the data iterator, to continue bit-for-bit.

Dropout keys are ``fold_in(rng, step)``, so the key stream depends only on the seed and the
step number, not on how many times the run was interrupted.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from seqjax.models.config import ModelConfig
from seqjax.models.registry import build_model, example_inputs


@flax.struct.dataclass
class TrainState:
  step: jax.Array      # int32 [] — optimizer steps taken
  params: Any
  opt_state: Any
  rng: jax.Array       # uint32 [2] — base key; per-step keys are fold_in(rng, step)


def init_state(model_cfg: ModelConfig, optimizer: optax.GradientTransformation,
               seed: int) -> TrainState:
  """A fresh state (call under ``jax.jit`` with ``out_shardings`` to place it)."""
  init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
  params = build_model(model_cfg).init(init_rng, *example_inputs(model_cfg))['params']
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params), rng=rng)


def param_count(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))

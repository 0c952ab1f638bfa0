"""The jitted train and eval steps, one pair for every task kind and model family.

Gradient accumulation splits the global batch ``[B, ...]`` into ``k`` micro-batches
``[k, B/k, ...]`` and sums their gradients in a ``lax.scan``. Each micro-batch contributes
the gradient of its *summed* loss divided by the *whole* batch's weight, so ``k``
micro-batches give exactly the gradient of one batch of ``B`` (also for token losses whose
micro-batches score different numbers of positions), with the activation memory of
``B/k``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from seqjax.training import losses
from seqjax.training.state import TrainState

Batch = dict[str, jax.Array]


def forward(model, params, batch: Batch, *, train: bool, rng: jax.Array | None = None):
  """Model outputs for a batch: logits ``[B, C]`` / ``[B, T, V]`` / ``[B, Tt, V]``."""
  rngs = {'dropout': rng} if train and rng is not None else None
  variables = {'params': params}
  if 'decoder_inputs' in batch:
    return model.apply(variables, batch['inputs'], batch['decoder_inputs'], batch['mask'],
                       deterministic=not train, rngs=rngs)
  return model.apply(variables, batch['inputs'], batch['mask'], deterministic=not train,
                     rngs=rngs)


def make_train_step(model, kind: str, num_classes: int,
                    optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    grad_accum_steps: int = 1,
                    nan_at_step: int = -1) -> Callable[[TrainState, Batch], tuple]:
  """``step(state, batch) -> (state, metrics)``; metrics hold ``losses.loss_sums`` plus
  ``grad_norm`` and ``lr`` (the rate used for this update).

  ``nan_at_step > 0`` poisons the loss of update number ``nan_at_step`` (1-based, as
  logged; a test hook for the NaN guard).
  """
  k = int(grad_accum_steps)

  def micro_grad(params, micro, rng, total_weight):
    def objective(p):
      sums = losses.loss_sums(kind, forward(model, p, micro, train=True, rng=rng), micro,
                              num_classes)
      return sums['loss_sum'] / total_weight, sums
    return jax.grad(objective, has_aux=True)(params)

  def step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.step)
    ew = batch['example_weight'].astype(jnp.float32)
    if kind in ('token', 'seq2seq'):
      total = jnp.sum(batch['weights'].astype(jnp.float32) * ew[:, None])
    else:
      total = jnp.sum(ew)
    total = jnp.maximum(total, 1e-9)
    if k == 1:
      grads, sums = micro_grad(state.params, batch, rng, total)
    else:
      micro = jax.tree.map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), batch)

      def body(acc, xs):
        i, mb = xs
        g, s = micro_grad(state.params, mb, jax.random.fold_in(rng, i), total)
        return jax.tree.map(jnp.add, acc, (g, s)), None

      # The first micro-batch seeds the accumulator, so the scan needs no zero pytree.
      first = jax.tree.map(lambda x: x[0], micro)
      acc0 = micro_grad(state.params, first, jax.random.fold_in(rng, 0), total)
      rest = jax.tree.map(lambda x: x[1:], micro)
      (grads, sums), _ = jax.lax.scan(body, acc0, (jnp.arange(1, k), rest))
    if nan_at_step > 0:
      poison = jnp.where(state.step + 1 == nan_at_step, jnp.nan, 0.0)
      sums = dict(sums, loss_sum=sums['loss_sum'] + poison)
      grads = jax.tree.map(lambda g: g + poison, grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(sums, grad_norm=optax.global_norm(grads), lr=schedule(state.step))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return step


def make_eval_step(model, kind: str, num_classes: int) -> Callable[[Any, Batch], dict]:
  """``eval_step(params, batch) -> losses.loss_sums`` (deterministic forward)."""

  def eval_step(params, batch: Batch):
    # Evaluation keeps regression predictions for rank metrics (Spearman).
    return losses.loss_sums(kind, forward(model, params, batch, train=False), batch,
                            num_classes, per_example=True)

  return eval_step

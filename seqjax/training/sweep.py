"""Seeds x learning rates of one experiment config, each trained to a criterion.

``train_sweep(config, seeds, learning_rates, criterion)`` trains one *member* per (seed,
learning rate) pair with the same train step as ``loop.train``: same data stream, same
initialisation, same optimizer and schedule for that seed and rate. What it adds is what a
comparison needs and a single run does not:

* **One compile for the whole sweep.** The peak learning rate lives in the optimizer state
  (``optimizer.make_tunable_optimizer``) and the seed is a traced argument of the jitted
  initialiser, so every member reuses the same compiled init, train and eval steps.
* **A stopping rule.** Every ``eval_every`` steps the member is evaluated on the
  validation split; it stops as soon as ``criterion`` holds there, or when the step budget
  (``config.num_steps``) runs out, or when its loss stops being finite (a diverged member
  is an outcome of its learning rate, recorded, not an error).
* **A record per member**: the validation curve, steps and examples to the criterion (or
  ``None``: not reached within the budget), and the test metrics of its best parameters
  by the task's ``eval_metric`` on validation, as ``loop.train`` reports them (for a
  member stopped by its criterion, the parameters it stopped with).

Each seed opens the task with that seed, exactly as ``loop.train`` does (for synthetic
tasks a seed draws its own sample of the data), so member ``(s, lr)`` reproduces the
single run ``train`` with ``seed=s, learning_rate=lr`` (tested). Nothing is checkpointed:
sweeps are short and their results are the numbers returned.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from seqjax.data.pipeline import make_iterator
from seqjax.models.registry import build_model
from seqjax.training import configuration, losses, mesh as mesh_lib, optimizer as opt_lib
from seqjax.training.errors import UserError
from seqjax.training.tasks import evaluate_params, open_task
from seqjax.training.state import init_state
from seqjax.training.steps import make_eval_step, make_train_step
from seqjax.utils.xla import compiled_quickly


@dataclasses.dataclass(frozen=True)
class Criterion:
  """``metric`` on the validation split reaches ``threshold`` (``>=`` when
  ``larger_is_better``, else ``<=``), e.g. ``Criterion('token_accuracy', 0.99)``."""

  metric: str
  threshold: float
  larger_is_better: bool = True

  def met(self, metrics: dict[str, float]) -> bool:
    value = metrics.get(self.metric, math.nan)
    if not math.isfinite(value):
      return False
    return value >= self.threshold if self.larger_is_better else value <= self.threshold

  def describe(self) -> str:
    return f'validation {self.metric} {">=" if self.larger_is_better else "<="} {self.threshold:g}'


@dataclasses.dataclass
class Member:
  """One trained (seed, learning rate) pair of a sweep.

  Attributes:
    seed: model initialisation, data order and (synthetic tasks) data sample.
    learning_rate: peak learning rate of the schedule.
    steps: updates taken (<= the budget).
    curve: ``[(step, validation metrics)]`` at every evaluation, in order.
    train_loss: ``[(step, mean training loss since the previous evaluation)]``.
    steps_to_criterion: the first evaluated step at which the criterion held, else None.
    examples_to_criterion: ``steps_to_criterion * batch_size``, else None.
    diverged_at: the step whose loss was not finite, else None.
    validation: metrics of the last evaluation.
    best_step: the evaluated step with the best validation ``spec.eval_metric``.
    test: test-split metrics of the parameters of ``best_step`` ({} if no test split).
    extra_tests: ``{name: test metrics}`` of the same parameters on each extra setting
      (e.g. longer sequences, for length generalisation); ``None`` for a setting whose
      evaluation raised an error the sweep was told to skip (``skip_extra_error``).
    params: the parameters of ``best_step`` on the host, when the sweep was asked to
      keep them (``keep_params``), else None.
    seconds: wall time of this member's training and evaluation.
  """

  seed: int
  learning_rate: float
  steps: int = 0
  curve: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
  train_loss: list[tuple[int, float]] = dataclasses.field(default_factory=list)
  steps_to_criterion: int | None = None
  examples_to_criterion: int | None = None
  diverged_at: int | None = None
  validation: dict[str, float] = dataclasses.field(default_factory=dict)
  best_step: int | None = None
  test: dict[str, float] = dataclasses.field(default_factory=dict)
  extra_tests: dict[str, dict[str, float] | None] = dataclasses.field(default_factory=dict)
  params: Any = None
  seconds: float = 0.0

  @property
  def reached(self) -> bool:
    return self.steps_to_criterion is not None


@dataclasses.dataclass
class Sweep:
  """Every member of a sweep, plus what they share."""

  members: list[Member]
  model_cfg: Any                 # seqjax.models.config.ModelConfig
  spec: Any                      # seqjax.data.spec.TaskSpec (of the first seed's task)
  params: int
  budget: int                    # step budget per member
  batch_size: int
  criterion: Criterion | None
  compile_seconds: float         # first call of the init/train/eval steps
  test_examples: int = 0         # size of the (first seed's) test split
  chosen_learning_rate: float | None = None  # two-phase sweeps: the rate ``select`` chose


def _check(config, seeds: Sequence[int], learning_rates: Sequence[float]) -> None:
  configuration.check_config(config)
  if not seeds or not learning_rates:
    raise UserError('a sweep needs at least one seed and one learning rate')
  if any(lr <= 0 for lr in learning_rates):
    raise UserError(f'learning rates must be positive, got {list(learning_rates)}')
  if config.eval_every <= 0:
    raise UserError(f'config.eval_every={config.eval_every}: a sweep needs evaluations '
                    'to test its criterion; set it > 0')


def train_sweep(config, seeds: Sequence[int], learning_rates: Sequence[float],
                criterion: Criterion | None = None,
                extra_tests: Mapping[str, Mapping[str, Any]] | None = None,
                keep_params: bool = False,
                select: Callable[[list[Member]], float] | None = None,
                on_member: Callable[[Member], None] | None = None,
                skip_extra_error: Callable[[BaseException], bool] | None = None) -> Sweep:
  """Trains every (seed, learning rate) member of ``config`` (see the module docstring).

  ``config`` is an experiment config as for ``loop.train``; its ``seed`` and
  ``learning_rate`` are replaced per member, ``num_steps`` is the budget and
  ``eval_every`` (> 0) the evaluation interval. ``extra_tests`` maps a name to task
  options that override ``config.task_options`` (e.g. ``{'seq_len': 256}``): each member's
  best parameters are also scored on that setting's test split. ``keep_params`` returns
  each member's best parameters (``Member.params``). ``select`` makes the sweep two-phase:
  the first seed trains with every rate, ``select(those members)`` picks one, and the
  other seeds train with that rate only (``Sweep.chosen_learning_rate``); without it every
  seed trains with every rate. ``on_member`` is called after each member (e.g. to log
  progress). ``skip_extra_error(error)``: an extra test whose evaluation raises an error
  for which it is true is recorded as ``None`` (e.g. a longer test length that does not
  fit in memory) instead of ending the sweep; any other error propagates.
  """
  _check(config, seeds, learning_rates)
  seeds = list(seeds)
  tasks = {seed: open_task(_with(config, seed=seed)) for seed in dict.fromkeys(seeds)}
  spec = tasks[seeds[0]].spec
  if 'validation' not in spec.splits:
    raise UserError(f'task {spec.name!r} has no validation split to stop on')
  model_cfg = configuration.model_config(config, spec)
  extra = {}
  for name, options in (extra_tests or {}).items():
    for seed in tasks:
      other = _with(config, seed=seed)
      other.task_options.update(dict(options))
      extra[name, seed] = open_task(other)
      if extra[name, seed].spec.max_len > model_cfg.max_len:
        raise UserError(f'extra test {name!r}: sequences of {extra[name, seed].spec.max_len} '
                        f'tokens exceed config.model_cfg.max_len={model_cfg.max_len}')
  mesh = mesh_lib.make_mesh(config.num_devices)
  configuration.check_devices(config, mesh.size, jax.process_count())
  model = build_model(model_cfg)
  optimizer, unit_schedule = opt_lib.make_tunable_optimizer(config)

  def init(seed, learning_rate):
    state = init_state(model_cfg, optimizer, seed)
    opt_state = state.opt_state
    hyper = dict(opt_state.hyperparams, learning_rate=learning_rate.astype(
        opt_state.hyperparams['learning_rate'].dtype))
    return state.replace(opt_state=opt_state._replace(hyperparams=hyper))

  abstract = jax.eval_shape(init, 0, jnp.float32(1.0))
  shardings = mesh_lib.state_shardings(abstract, mesh, config.fsdp, config.fsdp_min_size)
  batch_sh, repl = mesh_lib.batch_sharding(mesh), mesh_lib.replicated(mesh)
  # Runs once per member: compiled without LLVM's optimisations (seqjax.utils.xla).
  init_fn = compiled_quickly(jax.jit(init, out_shardings=shardings), 0, jnp.float32(1.0))
  train_step = jax.jit(
      make_train_step(model, spec.kind, model_cfg.num_classes, optimizer, unit_schedule,
                      config.grad_accum_steps),
      in_shardings=(shardings, batch_sh), out_shardings=(shardings, repl),
      donate_argnums=0)
  eval_step = jax.jit(make_eval_step(model, spec.kind, model_cfg.num_classes),
                      in_shardings=(shardings.params, batch_sh), out_shardings=repl)
  eval_bs = config.eval_batch_size or config.batch_size
  compile_seconds = _warm_up(init_fn, train_step, eval_step, tasks[seeds[0]], spec,
                             config, batch_sh)

  members, chosen = [], None

  def plan():
    nonlocal chosen
    yield from ((seeds[0], lr) for lr in learning_rates)
    if select is not None:
      chosen = float(select(list(members)))
    for seed in seeds[1:]:
      yield from ((seed, lr) for lr in ((chosen,) if select else learning_rates))

  for seed, lr in plan():
    member = _train_member(config, tasks[seed], seed, float(lr), criterion, init_fn,
                           train_step, eval_step, eval_bs, batch_sh,
                           {name: t for (name, s), t in extra.items() if s == seed},
                           keep_params, skip_extra_error)
    members.append(member)
    logging.info('sweep %s/%s seed %d lr %.2g: %d steps, criterion %s, %.1f s',
                 spec.name, model_cfg.model, seed, lr, member.steps,
                 member.steps_to_criterion, member.seconds)
    if on_member is not None:
      on_member(member)
  return Sweep(members=members, model_cfg=model_cfg, spec=spec,
               chosen_learning_rate=chosen,
               params=int(sum(x.size for x in jax.tree.leaves(abstract.params))),
               budget=int(config.num_steps), batch_size=int(config.batch_size),
               criterion=criterion, compile_seconds=compile_seconds,
               test_examples=(len(tasks[seeds[0]].dataset('test'))
                              if 'test' in spec.splits else 0))


def _with(config, **fields):
  out = config.copy_and_resolve_references()
  out.update(fields)
  return out


def _warm_up(init_fn, train_step, eval_step, task, spec, config, batch_sh) -> float:
  """Compiles the three jitted functions once, before any member is timed."""
  start = time.perf_counter()
  state = init_fn(0, jnp.float32(config.learning_rate))
  batch = next(make_iterator(task.dataset('train'), spec, batch_size=config.batch_size,
                             seed=0))
  batch = mesh_lib.global_batch(batch, batch_sh)
  jax.block_until_ready(eval_step(state.params, batch))
  jax.block_until_ready(train_step(state, batch))
  return time.perf_counter() - start


def _train_member(config, task, seed: int, lr: float, criterion: Criterion | None,
                  init_fn, train_step, eval_step, eval_bs: int, batch_sh,
                  extra_tasks, keep_params: bool,
                  skip_extra_error: Callable[[BaseException], bool] | None = None) -> Member:
  start = time.perf_counter()
  spec = task.spec
  member = Member(seed=seed, learning_rate=lr)
  state = init_fn(int(seed), jnp.float32(lr))
  train_iter = make_iterator(task.dataset('train'), spec, batch_size=config.batch_size,
                             seed=seed)
  window: list[Any] = []
  budget = int(config.num_steps)
  sign = 1.0 if spec.eval_metric_larger_is_better else -1.0
  best_value, best_params = -math.inf, None
  for step in range(1, budget + 1):
    state, metrics = train_step(state, mesh_lib.global_batch(next(train_iter), batch_sh))
    # Kept on the device until the next evaluation: dividing here would dispatch two
    # small ops and wait for the step, every step.
    window.append((metrics['loss_sum'], metrics['weight']))
    if step % config.eval_every and step != budget:
      continue
    member.steps = step
    sums = np.asarray(jax.device_get(window), np.float32)  # [steps, 2]
    train_losses = (sums[:, 0] / np.maximum(sums[:, 1], np.float32(1e-9))).astype(np.float64)
    window.clear()
    member.train_loss.append((step, float(train_losses.mean())))
    if not np.all(np.isfinite(train_losses)):
      member.diverged_at = step - len(train_losses) + int(np.argmin(np.isfinite(train_losses)))
      break
    val = evaluate_params(eval_step, state.params, task, 'validation', eval_bs, batch_sh,
                          config.eval_steps)
    member.curve.append((step, val))
    member.validation = val
    if sign * val[spec.eval_metric] > best_value:  # NaN never wins
      # A copy: the train step donates (overwrites) the state's buffers.
      best_value, member.best_step = sign * val[spec.eval_metric], step
      best_params = jax.tree.map(jnp.copy, state.params)
    if criterion is not None and criterion.met(val):
      member.steps_to_criterion = step
      member.examples_to_criterion = step * int(config.batch_size)
      break
  if best_params is not None:
    if 'test' in spec.splits:
      member.test = evaluate_params(eval_step, best_params, task, 'test', eval_bs, batch_sh)
    for name, other in extra_tasks.items():
      member.extra_tests[name] = _extra_test(eval_step, best_params, other, eval_bs,
                                             batch_sh, name, skip_extra_error)
    if keep_params:
      member.params = jax.device_get(best_params)
  member.seconds = time.perf_counter() - start
  return member


def _extra_test(eval_step, params, task, eval_bs: int, batch_sh, name: str,
                skip_error: Callable[[BaseException], bool] | None
                ) -> dict[str, float] | None:
  """Test metrics of ``params`` on an extra setting, or None when its evaluation raised
  an error ``skip_error`` accepts (the other settings are still measured)."""
  try:
    return evaluate_params(eval_step, params, task, 'test', eval_bs, batch_sh)
  except Exception as error:  # pylint: disable=broad-except
    if skip_error is None or not skip_error(error):
      raise
    logging.warning('extra test %s not measured: %s', name, str(error).splitlines()[0])
    return None


def select_learning_rate(members: Sequence[Member], score: Callable[[dict], float],
                         criterion: Criterion | None, budget: int) -> float:
  """The learning rate whose seeds did best *on validation*, never on test.

  Key, larger first: the mean over seeds of ``score(last validation metrics)`` with each
  score capped at the criterion's (so rates that all reach the criterion tie on it), then
  fewer mean steps to the criterion (members that never reached it count the whole
  budget). A diverged member scores ``-inf``.
  """
  cap = score({criterion.metric: criterion.threshold}) if criterion else math.inf

  def key(lr):
    group = [m for m in members if m.learning_rate == lr]
    scores = [min(score(m.validation), cap) if m.diverged_at is None and m.validation
              else -math.inf for m in group]
    steps = [m.steps_to_criterion or budget for m in group]
    return (float(np.mean(scores)), -float(np.mean(steps)))

  return max(dict.fromkeys(m.learning_rate for m in members), key=key)

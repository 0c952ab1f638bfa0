r"""Generate from a trained run (parameters only are restored).

Language models (``head=lm``): streaming sampling with temperature and top-k, the prompt
encoded with the run's saved tokenizer / vocabulary::

    python -m experiments.generate --workdir=/tmp/lm --prompt='ROMEO:' --num_steps=200 \
        --temperature=0.8 --top_k=20

Encoder-decoder (``head=seq2seq``): greedy translation of ``--prompt`` (default: the first
test example), saving the attention matrix (Bahdanau et al. 2015, fig. 3) as a PNG::

    python -m experiments.generate --workdir=/tmp/mt --prompt='march 3, 1999' \
        --attention_png=/tmp/attention.png

Exit codes as for evaluate.py: 0 done; 1 a user mistake; 3 an environment failure (no
usable checkpoint); 4 an internal error (3 and 4 name <workdir>/errors.log).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory written by train.py.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', 'best, latest or a step number.')
_PROMPT = flags.DEFINE_string('prompt', None, 'Prompt text (LM) or source text (seq2seq).')
_NUM_STEPS = flags.DEFINE_integer('num_steps', 64, 'Tokens to sample (LM).')
_TEMPERATURE = flags.DEFINE_float('temperature', 1.0, 'Sampling temperature; 0 = greedy.')
_TOP_K = flags.DEFINE_integer('top_k', 0, 'Keep the k most likely tokens (0 = all).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Samples to draw (LM).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_PNG = flags.DEFINE_string('attention_png', None,
                           'Where to save the attention image (seq2seq); default '
                           '<workdir>/attention.png.')


class SymbolCodec:
  """Text <-> ids for a vocabulary list (id -> symbol). Single-character symbols are read
  character by character, longer ones as whitespace-separated words."""

  def __init__(self, vocab: list[str]):
    self.vocab = list(vocab)
    self.ids = {s: i for i, s in enumerate(self.vocab)}
    self.chars = all(len(s) == 1 for s in self.vocab[4:])

  def encode(self, text: str):
    import numpy as np  # pylint: disable=g-import-not-at-top
    pieces = list(text) if self.chars else text.split()
    unknown = [p for p in pieces if p not in self.ids]
    if unknown:
      raise ValueError(f'--prompt has symbols {sorted(set(unknown))} outside the '
                       f'vocabulary {self.vocab[4:]}')
    return np.asarray([self.ids[p] for p in pieces], np.int32)

  def decode(self, ids) -> str:
    out = [self.vocab[int(i)] if 0 <= int(i) < len(self.vocab) else '<?>' for i in ids]
    return ('' if self.chars else ' ').join(out)


def _codec(metadata: dict, key: str):
  from seqjax.data.tokenizers import tokenizer_from_dict  # pylint: disable=g-import-not-at-top
  if 'tokenizer' in metadata:
    return tokenizer_from_dict(metadata['tokenizer'])
  if key in metadata:
    return SymbolCodec(metadata[key])
  raise ValueError(f'the run in --workdir saved no tokenizer or {key!r} to read a prompt')


def _cut_at_eos(ids):
  from seqjax.data.spec import EOS_ID  # pylint: disable=g-import-not-at-top
  ids = [int(i) for i in ids]
  return ids[:ids.index(EOS_ID)] if EOS_ID in ids else ids


def sample_lm(model, model_cfg, params, metadata) -> list[str]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from seqjax.data.spec import BOS_ID  # pylint: disable=g-import-not-at-top
  from seqjax.models.generate import generate  # pylint: disable=g-import-not-at-top
  codec = _codec(metadata, 'vocab')
  prompt = codec.encode(_PROMPT.value) if _PROMPT.value else jnp.asarray([BOS_ID])
  if len(prompt) == 0:
    prompt = jnp.asarray([BOS_ID])
  prompt = jnp.tile(jnp.asarray(prompt, jnp.int32)[None], (_NUM_SAMPLES.value, 1))
  if _NUM_STEPS.value < 1:
    raise ValueError(f'--num_steps={_NUM_STEPS.value} must be >= 1')
  out = generate(model, params, prompt, _NUM_STEPS.value, jax.random.PRNGKey(_SEED.value),
                 temperature=_TEMPERATURE.value, top_k=_TOP_K.value)
  return [codec.decode(row) for row in jax.device_get(out)]


def translate(model, model_cfg, params, meta, png: str) -> dict:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments.comparison import plots  # pylint: disable=g-import-not-at-top
  from seqjax.data.spec import BOS_ID  # pylint: disable=g-import-not-at-top
  from seqjax.training import tasks  # pylint: disable=g-import-not-at-top
  metadata = meta['task']['metadata']
  src_codec, tgt_codec = _codec(metadata, 'source_vocab'), _codec(metadata, 'target_vocab')
  if _PROMPT.value:
    src = src_codec.encode(_PROMPT.value)
  else:
    task = tasks.open_task(ml_collections.ConfigDict(meta['config']), metadata)
    src = np.asarray(tasks.open_split(task, 'test')[0]['inputs'])
    src = src[src != 0]
  max_len = meta['task']['spec']['max_target_len'] or model_cfg.max_len
  tokens, weights = model.apply({'params': params}, jnp.asarray(src, jnp.int32)[None],
                                max_len, BOS_ID, method='greedy_decode')
  out = _cut_at_eos(np.asarray(tokens[0]))
  labels = [tgt_codec.decode([i]) for i in out]
  if len(out) < tokens.shape[1]:
    labels.append('<eos>')  # the step that emitted EOS attends too
  attention = np.asarray(weights[0])[:len(labels), :len(src)]
  plots.heatmap(attention, path=png, xlabel='source', ylabel='output',
                title='Bahdanau attention (rows: output tokens)',
                xticklabels=[src_codec.decode([i]) for i in src], yticklabels=labels)
  return {'source': src_codec.decode(src), 'translation': tgt_codec.decode(out),
          'attention_png': png}


def run(workdir: str) -> dict:
  from seqjax.training import loop  # pylint: disable=g-import-not-at-top
  model, model_cfg, params, meta, step = loop.load_for_inference(workdir, _CHECKPOINT.value)
  if model_cfg.head == 'lm':
    return {'step': step, 'samples': sample_lm(model, model_cfg, params,
                                               meta['task']['metadata'])}
  if model_cfg.head == 'seq2seq':
    png = _PNG.value or os.path.join(workdir, 'attention.png')
    return {'step': step, **translate(model, model_cfg, params, meta, png)}
  raise ValueError(f'the run in {workdir} is a {model_cfg.head!r} model; generate.py needs '
                   'a language model (head=lm) or the encoder-decoder (head=seq2seq)')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  print(json.dumps(cli.run_user_errors(run, _WORKDIR.value)))


if __name__ == '__main__':
  cli.run(main, workdir_flag='workdir')

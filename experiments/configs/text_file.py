r"""Your own text file as a character language model (``task='text_file'``).

    python -m experiments.train --config=experiments/configs/text_file.py \
        --config.task_options.path=my.txt --workdir=runs/mytext
    python -m experiments.generate --workdir=runs/mytext --prompt='ROMEO:'

Defaults after Karpathy's char-rnn (2015): a 2-layer LSTM trained on windows of
characters with learning rate 2e-3; here 256 wide, windows of 128 characters, batch 32,
2,000 steps (minutes on a CPU for a file of a few hundred KB to a few MB). Reported: loss
in nats per character, ``bits_per_char``, perplexity, token accuracy. Options of the task:
``tokenizer`` ('char' | 'byte'), ``seq_len``, ``split_level`` ('window' | 'line'),
``validation_fraction``, ``test_fraction`` (seqjax.data.files).
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'text_file', seq_len=128)  # path: required, your file
  c.model = 'lstm'
  c.model_cfg.update(num_layers=2, d_model=256, max_len=128)
  c.update(batch_size=32, learning_rate=2e-3, num_steps=2000, warmup_steps=100,
           eval_every=250, checkpoint_every=250, log_every=50)
  return c

"""Sequential MNIST (Le, Jaitly & Hinton 2015): the 784 pixels one at a time, 10 classes,
read off the last step, as their pixel-by-pixel LSTM baseline (one layer; 128 units here,
Adam 1e-3 instead of their RMSProp). Needs ``python -m scripts.prepare_data
--datasets=mnist`` once. psmnist.py is the permuted variant."""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'smnist')
  c.model = 'lstm'
  c.model_cfg.update(num_layers=1, d_model=128, pooling='last', max_len=784)
  c.update(batch_size=64, learning_rate=1e-3, num_steps=10000, warmup_steps=200,
           eval_every=1000, checkpoint_every=1000, eval_steps=20)
  return c

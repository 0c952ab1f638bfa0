"""tiny_shakespeare (Karpathy 2015) as a character LM, sized as nanoGPT's shakespeare_char
(Karpathy 2023): a 6-layer, 384-wide, 6-head Transformer on 256-character windows,
dropout 0.2, batch 64, AdamW lr 1e-3 (beta2 0.99, weight decay 0.1) for 5,000 steps,
cosine to 1e-4. About 10M parameters: an accelerator run; on a CPU shrink it, e.g.
``--config.model_cfg.num_layers=2 --config.model_cfg.d_model=128 --config.num_steps=500``.
Needs ``python -m scripts.prepare_data --datasets=tiny_shakespeare`` once.
"""

from experiments.configs import base


def get_config():
  c = base.get_config()
  base.set_task(c, 'tiny_shakespeare')  # windows of 256 characters
  c.model = 'transformer'
  c.model_cfg.update(num_layers=6, d_model=384, num_heads=6, dropout=0.2, max_len=256)
  c.update(batch_size=64, learning_rate=1e-3, num_steps=5000, warmup_steps=100,
           min_lr_ratio=0.1, weight_decay=0.1, b2=0.99, eval_every=250,
           checkpoint_every=250, eval_steps=20)
  return c

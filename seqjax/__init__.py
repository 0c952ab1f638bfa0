"""seqjax: LSTMs, GRUs, Transformers and state-space models behind one interface.

Layers: ``seqjax.ops`` (pure functions) -> ``seqjax.layers`` (Flax mixers) ->
``seqjax.models`` (heads, registry) -> ``seqjax.data`` / ``seqjax.training``.
"""

__version__ = '0.1.0'

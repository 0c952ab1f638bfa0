"""Synthetic long-range diagnostics as TFDS builders: ``TASKS = {name: factory}``.

``TASKS[name](data_dir=None, seed=0, **options) -> seqjax.data.registry.Task``; each
factory's docstring lists its options and defaults. Every task also accepts
``num_train`` / ``num_validation`` / ``num_test`` (examples per split). Data is generated
on the first ``Task.open`` into ``data_dir`` (else ``$SEQJAX_DATA_DIR``, else
``~/.cache/seqjax/tensorflow_datasets``) as array_record files and reused afterwards.

===================  =============  ===================================================
name                 kind           paper
===================  =============  ===================================================
copying              token          Arjovsky et al. 2016
selective_copying    token          Gu & Dao 2023 (Mamba, sec. 3.1)
adding               regression     Hochreiter & Schmidhuber 1997
associative_recall   token          Ba et al. 2016; Fu et al. 2023 (H3)
mqar                 token          Arora et al. 2023 (Zoology)
induction_heads      token          Olsson et al. 2022
listops              classification Nangia & Bowman 2018; Tay et al. 2021 (LRA)
marker_order         classification seqjax: order is the only signal (positions probe)
toy_translation      seq2seq        date normalisation / reversal
pathfinder           classification Linsley et al. 2018; LRA Pathfinder / Path-X (128)
===================  =============  ===================================================
"""

from __future__ import annotations

from seqjax.data.synthetic.adding import SeqjaxAdding
from seqjax.data.synthetic.base import default_data_dir, make_factory
from seqjax.data.synthetic.copying import SeqjaxCopying, SeqjaxSelectiveCopying
from seqjax.data.synthetic.listops import SeqjaxListops
from seqjax.data.synthetic.marker_order import SeqjaxMarkerOrder
from seqjax.data.synthetic.pathfinder import SeqjaxPathfinder
from seqjax.data.synthetic.recall import (SeqjaxAssociativeRecall, SeqjaxInductionHeads,
                                          SeqjaxMqar)
from seqjax.data.synthetic.translation import SeqjaxToyTranslation

BUILDERS = (SeqjaxCopying, SeqjaxSelectiveCopying, SeqjaxAdding, SeqjaxAssociativeRecall,
            SeqjaxMqar, SeqjaxInductionHeads, SeqjaxListops, SeqjaxToyTranslation,
            SeqjaxMarkerOrder, SeqjaxPathfinder)
TASKS = {builder.TASK: make_factory(builder) for builder in BUILDERS}

__all__ = ['BUILDERS', 'TASKS', 'default_data_dir']

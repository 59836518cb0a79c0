"""Triplet-loss fine-tuning of FaceNet that never ships a worse model.

One concern per module, importing only downward: :mod:`.errors`, :mod:`.options` (every knob
of a run), :mod:`.data` (the crops), :mod:`.split` (the fixed held-out split),
:mod:`.augment`, :mod:`.network` (cutting the model into a frozen front and a trainable
head), :mod:`.features` (the frozen-feature cache), :mod:`.sampler` (P×K batches),
:mod:`.trainer` (:class:`~model.training.trainer.FineTuner`), :mod:`.decision` (the
never-worse rule) and :mod:`.run` (:func:`~model.training.run.run_training`, the whole run).
Import names from those modules; this package re-exports nothing, so importing one of them
stays cheap.
"""

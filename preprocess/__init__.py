"""Face detection (detectors by name), 5-point alignment and the incremental ``call_preprocess``.

``images/<Name>/*`` (photos) -> ``pre_images/<Name>/*.png`` (160x160 RGB face crops).
Submodules: :mod:`preprocess.detect`, :mod:`preprocess.detectors`, :mod:`preprocess.align`,
:mod:`preprocess.pipeline`, :mod:`preprocess.cli`. Nothing heavy is imported here.
"""

"""Face detection (MTCNN), 5-point alignment and the incremental ``call_preprocess`` command.

``images/<Name>/*`` (photos) -> ``pre_images/<Name>/*.png`` (160x160 RGB face crops).
Submodules: :mod:`common.image_io`, :mod:`preprocess.detect`, :mod:`preprocess.align`,
:mod:`preprocess.pipeline`, :mod:`preprocess.cli`. Nothing heavy is imported here.
"""

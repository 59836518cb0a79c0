"""Enrolment: capture 30-35 good, pose-diverse face shots of a person and make them
recognisable at once.

- :mod:`scanner.quality` — pure frame/face quality checks and the one hint to show;
- :mod:`scanner.pose` — yaw/pitch from MTCNN's 5 landmarks, pose-diverse selection, the
  pose guide (centre, left, right, up, down, ...);
- :mod:`scanner.session` — the capture state machine (frames + keys in, numbered shots out);
- :mod:`scanner.enrol` — incremental preprocessing + gallery update for one person, duplicate
  checks, undo;
- :mod:`scanner.display` — the window's overlay and key loop (on :mod:`common.window`, the
  only place calling ``cv2.imshow``/``waitKey``);
- :mod:`scanner.cli` (``scanner``, ``attendance scan``), :mod:`scanner.remove_cli`
  (``attendance remove``).
"""

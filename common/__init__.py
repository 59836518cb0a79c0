"""The ground layer: configuration, errors, names, files, image decoding, vector maths, frame
sources, sdist acquisition, the console-script runner and the OpenCV window.

It imports no other package of the project; every other package may import it."""

import os as _os

# TensorFlow's C++ start-up chatter is noise for users; real errors still surface.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

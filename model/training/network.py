"""Cutting the FaceNet network for fine-tuning.

:func:`split_model` cuts a Keras model where a named block starts (``trainable_from``) into a
frozen front and a trainable head, two sub-models built from the same layer objects, so
training the head trains the model and its weights save by name; :func:`trainable_points`
and :func:`describe_points` list the blocks a cut may start at.
:func:`freeze_batchnorm` keeps BatchNorm layers in inference mode and :func:`reseed_layers`
restarts the random streams of Dropout, so a run is reproducible within one process.
"""

from __future__ import annotations

import numpy as np

from model.training.errors import TrainError


def _block_prefix(name: str) -> str:
    """The block a layer belongs to: "Block8_1_Branch_0_..." -> "Block8_1"."""
    parts = name.split("_")
    if parts[0] in ("Block35", "Block17", "Block8") and len(parts) > 1:
        return "_".join(parts[:2])
    if parts[0] in ("Mixed", "Conv2d", "MaxPool") and len(parts) > 1:
        return "_".join(parts[:3]) if parts[0] != "Mixed" else "_".join(parts[:2])
    if name.startswith("Bottleneck"):
        return "Bottleneck"
    return name


def trainable_points(model) -> list[str]:  # type: ignore[no-untyped-def]
    """Names ``trainable_from`` accepts, in network order (first layer of each block)."""
    seen: list[str] = []
    for layer in model.layers[1:]:
        prefix = _block_prefix(layer.name)
        if prefix not in seen:
            seen.append(prefix)
    return seen


def describe_points(points: list[str]) -> str:
    """``Conv2d_1a_3x3, ..., Block35_1..5, Mixed_6a, ...``: runs of blocks collapsed."""
    parts: list[str] = []
    runs: dict[str, list[str]] = {}
    for point in points:
        family, _, index = point.rpartition("_")
        if family in ("Block35", "Block17", "Block8") and index.isdigit():
            if family not in runs:
                runs[family] = []
                parts.append(family)
            runs[family].append(index)
        else:
            parts.append(point)
    return ", ".join(
        f"{p}_{runs[p][0]}..{runs[p][-1]}"
        if p in runs and len(runs[p]) > 1
        else (f"{p}_{runs[p][0]}" if p in runs else p)
        for p in parts
    )


def _tensor_ids(tensors) -> set[int]:  # type: ignore[no-untyped-def]
    import keras

    return {id(t) for t in keras.tree.flatten(tensors)}


def split_model(model, trainable_from: str):  # type: ignore[no-untyped-def]
    """``(frozen, head)``: two sub-models sharing ``model``'s layers, cut where the block
    ``trainable_from`` starts. ``frozen`` is None when everything is trainable.

    The head is built from the same layer objects (names kept), so training it trains
    ``model`` and the weights save by name.
    """
    import keras

    members = [
        layer
        for layer in model.layers[1:]
        if layer.name == trainable_from or layer.name.startswith(trainable_from + "_")
    ]
    if not members:
        raise TrainError(
            f"trainable_from={trainable_from!r} names no block of the network; choose one of "
            f"{describe_points(trainable_points(model))}"
        )
    produced = set().union(*(_tensor_ids(layer.output) for layer in members))
    external = {}
    for layer in members:
        for tensor in keras.tree.flatten(layer.input):
            if id(tensor) not in produced:
                external[id(tensor)] = tensor
    if len(external) != 1:
        raise TrainError(
            f"trainable_from={trainable_from!r} does not start a block with one input; "
            f"choose one of {describe_points(trainable_points(model))}"
        )
    boundary = next(iter(external.values()))
    if id(boundary) in _tensor_ids(model.inputs):
        return None, model
    try:
        frozen = keras.Model(model.inputs[0], boundary, name="frozen_front")
        head = keras.Model(boundary, model.outputs[0], name="trainable_head")
    except ValueError as exc:
        raise TrainError(f"cannot cut the network at {trainable_from!r}: {exc}") from None
    return frozen, head


def freeze_batchnorm(model) -> None:  # type: ignore[no-untyped-def]
    """Put every BatchNormalization layer of ``model`` in inference mode, untrainable."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def reseed_layers(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Restart the random streams of stochastic layers (Dropout) from ``seed``.

    Keras layers keep their generator state across calls, so without this a second run in
    the same process would draw different dropout masks.
    """
    for layer in model.layers:
        generator = getattr(layer, "seed_generator", None)
        if generator is not None:
            state = generator.state
            state.assign(np.asarray([seed + 1, 0], dtype=state.dtype))

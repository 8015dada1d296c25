"""Every private Keras and TFLite attribute tltoolkit relies on, in one place: when an upgrade renames
one, this module (and tests/test_keras_internals.py, its canary) is the one to fix. Each is used
because no public API gives the same thing; the comments say what for.
"""

from __future__ import annotations

import collections

NAME_COUNTERS = "object_name_uids"  # Keras' global_state key of the auto-name counters (`dense_3`)


def history(tensor) -> tuple:
    """(operation, node index, tensor index) of the call that computed a symbolic tensor: Keras has no
    public edge list."""
    return tuple(tensor._keras_history)


def producer(tensor):
    """The operation (layer) that computed a symbolic tensor."""
    return history(tensor)[0]


def inbound_nodes(layer) -> list:
    """The calls of a layer (one node each), in call order."""
    return layer._inbound_nodes


def nodes_by_depth(model) -> dict:
    """A Functional model's call nodes by depth: the graph's edges, which Keras keeps private."""
    return model._nodes_by_depth


def swap_name_counters(counters):
    """Installs `counters` as Keras' auto-naming counters and returns the ones it replaced (to build a
    model with the layer names of a fresh session)."""
    from keras.src.backend.common import global_state

    previous = global_state.get_global_attribute(NAME_COUNTERS, collections.defaultdict(int), set_to_default=True)
    global_state.set_global_attribute(NAME_COUNTERS, counters)
    return previous


def variable_index(optimizer, variable) -> int:
    """The position of `variable` in the optimizer's built variable list (per-variable learning rates)."""
    return optimizer._get_variable_index(variable)


def tflite_ops(interpreter) -> list[dict]:
    """The ops of a TFLite model (op_name, inputs, outputs): the interpreter's only listing of them."""
    return interpreter._get_ops_details()

"""Canary for the private Keras/TFLite attributes tltoolkit uses (tltoolkit/_keras_internals.py): a
Keras or TensorFlow upgrade that renames one fails here, naming it, instead of deep inside a feature."""

import collections

import keras
import numpy as np
import pytest

from tltoolkit import _keras_internals as internals


@pytest.fixture(scope="module")
def model():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))


def test_graph_edges_name_each_tensor_producer(model):
    out = model.get_layer("out")
    assert internals.history(model.output) == (out, 0, 0), "KerasTensor._keras_history changed"
    assert internals.producer(model.output) is out
    assert len(internals.inbound_nodes(out)) == 1, "Layer._inbound_nodes changed"
    nodes = internals.nodes_by_depth(model)
    called = {node.operation.name for depth in nodes.values() for node in depth}
    assert {"hidden", "out"} <= called, "Functional._nodes_by_depth changed"


def test_name_counters_can_be_swapped_and_restored():
    fresh = collections.defaultdict(int)
    previous = internals.swap_name_counters(fresh)
    try:
        first = keras.layers.Dense(1).name
        assert first == "dense" and fresh["dense"] == 1, "keras.src.backend.common.global_state name counters changed"
    finally:
        assert internals.swap_name_counters(previous) is fresh


def test_an_optimizer_indexes_its_variables(model):
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    indexes = [internals.variable_index(optimizer, v) for v in model.trainable_variables]
    assert indexes == list(range(len(model.trainable_variables))), "Optimizer._get_variable_index changed"


def test_a_tflite_interpreter_lists_its_ops(model):
    import tensorflow as tf

    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    interpreter = tf.lite.Interpreter(model_content=flat)
    ops = internals.tflite_ops(interpreter)
    assert ops and {"op_name", "inputs", "outputs"} <= set(ops[0]), "tf.lite.Interpreter._get_ops_details changed"
    assert "FULLY_CONNECTED" in {op["op_name"] for op in ops}
    assert np.all([isinstance(i, (int, np.integer)) for op in ops for i in op["inputs"]])

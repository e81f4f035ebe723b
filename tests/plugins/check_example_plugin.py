"""Run inside a subprocess whose PYTHONPATH holds the installed example plugin; prints JSON."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
from onnx import TensorProto, helper

import ronn


def build_model() -> bytes:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="toy_relu"),
        helper.make_node("Add", ["r", "x"], ["a"], name="toy_add"),
        helper.make_node("ScaledTanh", ["a"], ["t"], name="custom", domain="com.example", alpha=2.0, beta=0.5),
        helper.make_node("Sigmoid", ["t"], ["s"], name="cpu_sigmoid"),
        helper.make_node("Relu", ["s"], ["y"], name="toy_relu2"),
    ]
    graph = helper.make_graph(
        nodes, "plugin_demo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    return model.SerializeToString()


def main() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logging.getLogger("ronn").addHandler(Collect())
    import ronn_example_plugin as plugin

    x = np.array([[-1.0, 0.5, 2.0], [3.0, -4.0, 0.0]], dtype=np.float32)
    session = ronn.InferenceSession(build_model(), providers=["ExampleToyExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    toy = plugin.ToyExecutionProvider
    print(json.dumps({
        "y": y.tolist(),
        "providers": session.get_providers(),
        "available": ronn.get_available_providers(),
        "placement": session.node_providers(),
        "copies_to_device": toy.copies_to_device,
        "copies_to_host": toy.copies_to_host,
        "kernel_calls": toy.kernel_calls,
        "warnings": records,
        "plugins": [(p.name, p.distribution, p.version) for p in ronn.get_plugin_host().plugins()],
    }))


if __name__ == "__main__":
    sys.exit(main())

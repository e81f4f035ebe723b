"""The embedded demo model: a small convolutional digit classifier that ships in the package.

``ronn run`` with no model runs it on a drawn "7", offline. The weights are random (seeded):
the model shows the whole path from file to result, not a trained classifier.
Rebuild the file with ``python -m ronn_api.demo`` (needs ``onnx``).
"""

from __future__ import annotations

import os

import numpy as np

DEMO_MODEL_PATH = os.path.join(os.path.dirname(__file__), "models", "demo_cnn.onnx")


def demo_inputs() -> dict[str, np.ndarray]:
    """A 1x1x28x28 image of a hand-drawn-like digit 7, scaled to [0, 1]."""
    image = np.zeros((28, 28), dtype=np.float32)
    image[5:8, 6:22] = 1.0  # the bar
    for row in range(8, 24):  # the stroke down to the left
        col = 21 - (row - 8) * 10 // 16
        image[row, col - 1 : col + 2] = 1.0
    return {"image": image.reshape(1, 1, 28, 28)}


def build_demo_model():  # noqa: ANN201 - returns onnx.ModelProto; onnx is imported lazily
    """Build the demo model deterministically."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        data = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return numpy_helper.from_array(data, name)

    inits = [
        weight("conv1.w", 8, 1, 3, 3),
        numpy_helper.from_array(np.zeros(8, np.float32), "conv1.b"),
        weight("conv2.w", 16, 8, 3, 3),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv2.b"),
        weight("fc.w", 10, 16),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w", "conv2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="ronn")
    model.ir_version = 8
    model.doc_string = "ronn's embedded demo: a small CNN digit classifier with random weights."
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":  # pragma: no cover
    import onnx

    os.makedirs(os.path.dirname(DEMO_MODEL_PATH), exist_ok=True)
    onnx.save(build_demo_model(), DEMO_MODEL_PATH)
    print(f"wrote {DEMO_MODEL_PATH}")

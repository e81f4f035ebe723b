"""Export the full-size benchmark models of docs/PERFORMANCE.md with torch (random weights).

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0
    /tmp/export-venv/bin/pip install "transformers<5" onnx onnxruntime onnxscript numpy
    /tmp/export-venv/bin/python benchmarks/make_models.py [mobilenetv3_small minilm_l6 gpt2_4layer]

Writes into benchmarks/models/ (not committed; a few hundred MB):

- mobilenetv3_small.onnx  torchvision's MobileNetV3-small layout at width 1.0, 1000 classes, input 1x3x224x224
- minilm_l6.onnx          a BERT encoder shaped like all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads,
                          intermediate 1536, vocabulary 30,522), inputs batch x tokens
- gpt2_4layer.onnx        GPT-2 with 4 layers (hidden 768, 12 heads, vocabulary 50,257), logits out

Exported the way users usually do: the TorchScript exporter, opset 17, constant folding on
(BatchNormalization folded into convolutions by the exporter), dynamic batch and sequence axes.
ResNet-50 and DenseNet-121 come from the onnx wheel's light models (full compute).
"""

from __future__ import annotations

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "models"))

import torch  # noqa: E402

import make_models as tiny  # noqa: E402  (tests/models/make_models.py: the architectures)

OUT = os.path.join(HERE, "models")


def mobilenetv3_small() -> torch.nn.Module:
    torch.manual_seed(11)
    model = tiny.MobileNetV3Small(width_mult=1.0, last_channel=1024, num_classes=1000)
    return tiny.calibrate(model, (3, 224, 224))


def minilm_l6() -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(12)
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, attn_implementation="eager",
    )  # fmt: skip
    return tiny.BertWrapper(BertModel(config)).eval()


def gpt2_4layer() -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(13)
    config = GPT2Config(n_layer=4, use_cache=False, attn_implementation="eager")
    return tiny.GPT2Wrapper(GPT2LMHeadModel(config)).eval()


def _text(names: list[str], outputs: list[str]) -> dict[str, dict[int, str]]:
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    for name in outputs:
        axes[name] = {0: "batch", 1: "sequence"} if name != "pooler_output" else {0: "batch"}
    return axes


# name: builder, example inputs, input names, output names, dynamic axes
MODELS = {
    "mobilenetv3_small": (
        mobilenetv3_small, lambda: (torch.randn(1, 3, 224, 224),), ["input"], ["output"],
        {"input": {0: "batch"}, "output": {0: "batch"}},
    ),
    "minilm_l6": (
        minilm_l6, lambda: tuple(torch.from_numpy(v) for v in tiny.text_inputs(2, 14, 0, True).values()),
        ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "pooler_output"],
        _text(["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "pooler_output"]),
    ),
    "gpt2_4layer": (
        gpt2_4layer, lambda: tuple(torch.from_numpy(v) for v in tiny.text_inputs(2, 32, 0, False).values()),
        ["input_ids", "attention_mask"], ["logits"], _text(["input_ids", "attention_mask"], ["logits"]),
    ),
}  # fmt: skip


def export(name: str) -> str:
    build, example, inputs, outputs, axes = MODELS[name]
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name + ".onnx")
    patch = tiny.mask_without_vmap() if name == "gpt2_4layer" else tiny.contextlib.nullcontext()
    with warnings.catch_warnings(), patch:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            build(), example(), path, dynamo=False, opset_version=17, input_names=inputs,
            output_names=outputs, dynamic_axes=axes, training=torch.onnx.TrainingMode.EVAL,
        )  # fmt: skip
    return path


def main() -> int:
    for name in sys.argv[1:] or list(MODELS):
        path = export(name)
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the small exported models that ronn's end-to-end tests run.

Four architectures, with random weights drawn from fixed seeds and reduced
widths so the files stay small enough to commit:

- resnet_tiny.onnx       ResNet (BasicBlock + Bottleneck, BatchNorm kept), input N x 3 x 64 x 64
- mobilenetv3_tiny.onnx  MobileNetV3-small (depthwise, SE + HardSigmoid, HardSwish), input N x 3 x 64 x 64
- bert_tiny.onnx         transformers.BertModel, inputs input_ids/attention_mask/token_type_ids
- gpt2_tiny.onnx         transformers.GPT2LMHeadModel (use_cache=False), inputs input_ids/attention_mask

All are exported with the classic TorchScript exporter (``dynamo=False``), opset 17,
dynamic batch (and sequence) axes.  The script then prints every model's operator
histogram and checks that onnxruntime reproduces torch's own output.

This needs torch and transformers, which ronn's own environment does not have.
Run it with the separate export environment (see tests/models/README.md):

    python3 -m venv /tmp/export-venv
    /tmp/export-venv/bin/pip install torch==2.13.0
    /tmp/export-venv/bin/pip install "transformers<5" onnx onnxruntime onnxscript numpy
    /tmp/export-venv/bin/python tests/models/make_models.py

Pass model names (resnet, mobilenetv3, bert, gpt2) to build only some of them;
``--check-only`` re-runs the histogram and the onnxruntime-vs-torch check
without rewriting the files (the torch models are rebuilt from the same seeds).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
RTOL = 1e-4
ATOL = 1e-5


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet layout; each stage names its own block type."""

    def __init__(self, stages: list[tuple[type, int, int, int]], stem: int = 16, num_classes: int = 100) -> None:
        super().__init__()
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(*[self._make_layer(b, p, n, s) for b, p, n, s in stages])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(self.flatten(self.avgpool(x)))


def build_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = ResNet(
        [
            (BasicBlock, 16, 2, 1),  # identity shortcuts
            (BasicBlock, 32, 1, 2),  # projection shortcut
            (Bottleneck, 16, 2, 2),  # 64 channels out, then an identity bottleneck
            (Bottleneck, 32, 1, 2),  # 128 channels out
        ],
        stem=16,
        num_classes=100,
    )
    return calibrate(model, (3, 64, 64))


# --------------------------------------------------------------------------- MobileNetV3


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = None) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=0.001, momentum=0.01),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_act(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return s * x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, k: int, cexp: int, cout: int, se: bool, act: type, stride: int) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if cexp != cin:
            layers.append(ConvBNAct(cin, cexp, 1, act=act))
        layers.append(ConvBNAct(cexp, cexp, k, stride, groups=cexp, act=act))  # depthwise
        if se:
            layers.append(SqueezeExcitation(cexp, make_divisible(cexp // 4)))
        layers.append(ConvBNAct(cexp, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res else out


# torchvision's mobilenet_v3_small: in, kernel, expanded, out, SE, activation, stride
_SMALL = [
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
]


class MobileNetV3Small(nn.Module):
    def __init__(self, width_mult: float = 0.25, last_channel: int = 1024, num_classes: int = 100) -> None:
        super().__init__()
        ch = lambda c: make_divisible(c * width_mult)  # noqa: E731
        acts = {"RE": nn.ReLU, "HS": nn.Hardswish}
        layers: list[nn.Module] = [ConvBNAct(3, ch(16), 3, 2, act=nn.Hardswish)]
        for cin, k, cexp, cout, se, act, stride in _SMALL:
            layers.append(InvertedResidual(ch(cin), k, ch(cexp), ch(cout), se, acts[act], stride))
        last_conv = 6 * ch(_SMALL[-1][3])
        layers.append(ConvBNAct(ch(_SMALL[-1][3]), last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = ch(last_channel)
        self.classifier = nn.Sequential(
            nn.Linear(last_conv, hidden),
            nn.Hardswish(inplace=True),
            nn.Dropout(0.2, inplace=True),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.normal_(m.bias, 0.0, 0.1)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.05)
                nn.init.normal_(m.bias, 0.0, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def build_mobilenetv3() -> nn.Module:
    torch.manual_seed(1)
    model = MobileNetV3Small(width_mult=0.35, last_channel=256, num_classes=100)
    return calibrate(model, (3, 64, 64))


def calibrate(model: nn.Module, chw: tuple[int, int, int]) -> nn.Module:
    """Give every BatchNorm real statistics and a non-trivial affine, then go to eval mode.

    Running statistics come from a few training-mode passes over random images
    (cumulative average), so activations keep a sane scale; gamma and beta are
    random so no BatchNorm is an identity.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for _ in range(4):
            model(torch.randn(8, *chw))
        for bn in bns:
            bn.momentum = 0.1
    return model.eval()


# --------------------------------------------------------------------------- transformers


class BertWrapper(nn.Module):
    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        return out.last_hidden_state, out.pooler_output


class GPT2Wrapper(nn.Module):
    def __init__(self, gpt2: nn.Module) -> None:
        super().__init__()
        self.gpt2 = gpt2

    def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
        return self.gpt2(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True).logits


@contextlib.contextmanager
def mask_without_vmap():  # type: ignore[no-untyped-def]
    """Build transformers' 4D attention masks by broadcasting instead of torch.vmap.

    transformers >= 4.53 makes GPT-2's causal+padding mask with nested torch.vmap
    (masking_utils.sdpa_mask), which the TorchScript tracer cannot record
    ("RuntimeError: unordered_map::at").  During the export only, this swaps in
    an equivalent that calls the same mask functions on broadcast index tensors
    (the approach of optimum's exporter); the onnxruntime check afterwards
    compares against the unpatched torch model.
    """
    from transformers import masking_utils as mu

    def sdpa_mask(batch_size, cache_position, kv_length, kv_offset=0, mask_function=mu.causal_mask_function,  # type: ignore[no-untyped-def]
                  attention_mask=None, local_size=None, allow_is_causal_skip=True, **kwargs):
        q_length = cache_position.shape[0]
        padding_mask = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset, _slice=False)
        if allow_is_causal_skip and mu._ignore_causal_mask_sdpa(padding_mask, q_length, kv_length, kv_offset, local_size):
            return None
        kv_arange = torch.arange(kv_length, device=cache_position.device) + kv_offset
        if padding_mask is not None:
            mask_function = mu.and_masks(mask_function, mu.padding_mask_function(padding_mask))
        b = torch.arange(batch_size, device=cache_position.device)[:, None, None, None]
        h = torch.arange(1, device=cache_position.device)[None, :, None, None]
        mask = mask_function(b, h, cache_position[None, None, :, None], kv_arange[None, None, None, :])
        return mask.expand(batch_size, 1, q_length, kv_length)

    saved = mu.sdpa_mask
    mu.sdpa_mask = sdpa_mask
    try:
        yield
    finally:
        mu.sdpa_mask = saved


def build_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(2)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        type_vocab_size=2,
        attn_implementation="eager",
    )
    return BertWrapper(BertModel(config)).eval()


def build_gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(3)
    config = GPT2Config(
        vocab_size=1000,
        n_embd=64,
        n_layer=2,
        n_head=2,
        n_positions=128,
        use_cache=False,
        attn_implementation="eager",
    )
    return GPT2Wrapper(GPT2LMHeadModel(config)).eval()


# --------------------------------------------------------------------------- inputs


def image_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)}


def text_inputs(batch: int, seq: int, seed: int, token_types: bool) -> dict[str, np.ndarray]:
    """Valid ids; right padding in every row but the first (lengths seq, seq-3, ...)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 1000, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for b in range(1, batch):
        mask[b, max(1, seq - 3 * b):] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        tt = np.zeros((batch, seq), dtype=np.int64)
        tt[:, seq // 2:] = 1
        feeds["token_type_ids"] = tt
    return feeds


# name, builder, input names, output names, dynamic axes, inputs(batch, seq, seed)
MODELS = {
    "resnet": (
        "resnet_tiny.onnx", build_resnet, ["input"], ["output"],
        {"input": {0: "batch"}, "output": {0: "batch"}},
        lambda b, s, seed: image_inputs(b, seed),
    ),
    "mobilenetv3": (
        "mobilenetv3_tiny.onnx", build_mobilenetv3, ["input"], ["output"],
        {"input": {0: "batch"}, "output": {0: "batch"}},
        lambda b, s, seed: image_inputs(b, seed),
    ),
    "bert": (
        "bert_tiny.onnx", build_bert, ["input_ids", "attention_mask", "token_type_ids"],
        ["last_hidden_state", "pooler_output"],
        {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
            "pooler_output": {0: "batch"},
        },
        lambda b, s, seed: text_inputs(b, s, seed, token_types=True),
    ),
    "gpt2": (
        "gpt2_tiny.onnx", build_gpt2, ["input_ids", "attention_mask"], ["logits"],
        {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch", 1: "sequence"},
        },
        lambda b, s, seed: text_inputs(b, s, seed, token_types=False),
    ),
}

# The export traces one shape; the check runs others, so a shape baked into the
# graph would show up as an onnxruntime failure or mismatch.
EXPORT_SHAPE = (3, 11)
CHECK_SHAPES = [(1, 5), (2, 7), (4, 16)]


def export(name: str) -> str:
    fname, build, in_names, out_names, axes, make = MODELS[name]
    path = os.path.join(HERE, fname)
    model = build()
    feeds = make(*EXPORT_SHAPE, 100)
    args = tuple(torch.from_numpy(feeds[n]) for n in in_names)
    is_cnn = name in ("resnet", "mobilenetv3")
    patch = mask_without_vmap() if name == "gpt2" else contextlib.nullcontext()
    with warnings.catch_warnings(), patch:
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            path,
            dynamo=False,
            opset_version=OPSET,
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            training=torch.onnx.TrainingMode.EVAL,
            # In EVAL mode the TorchScript exporter's constant folding also fuses
            # BatchNormalization into the preceding Conv; the CNNs must keep their
            # BatchNormalization nodes, so they are exported without folding.
            do_constant_folding=not is_cnn,
        )
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    return path


def histogram(path: str) -> list[tuple[str, str, int, int]]:
    m = onnx.load(path)
    opsets = {o.domain: o.version for o in m.opset_import}
    counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[(node.domain, node.op_type)] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(m.graph)
    return sorted(
        ((dom, op, n, opsets.get(dom, -1)) for (dom, op), n in counts.items()),
        key=lambda t: (-t[2], t[1]),
    )


def check(name: str) -> list[tuple[tuple[int, int], float, float]]:
    fname, build, in_names, out_names, _, make = MODELS[name]
    path = os.path.join(HERE, fname)
    model = build()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == in_names
    assert [o.name for o in sess.get_outputs()] == out_names
    results = []
    for shape in CHECK_SHAPES:
        feeds = make(*shape, 7)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(feeds[n]) for n in in_names))
        ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = sess.run(None, feeds)
        max_abs = max_rel = 0.0
        for r, g in zip(ref, got):
            r = r.numpy()
            assert r.shape == g.shape and r.dtype == g.dtype, (name, shape, r.shape, g.shape)
            np.testing.assert_allclose(g, r, rtol=RTOL, atol=ATOL, err_msg=f"{name} {shape}")
            diff = np.abs(g.astype(np.float64) - r)
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float((diff / np.maximum(np.abs(r), 1e-3)).max()))
        results.append((shape, max_abs, max_rel))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--check-only", action="store_true", help="do not re-export, only histogram and check")
    ns = parser.parse_args()
    unknown = [m for m in ns.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}")
    total = 0
    for name in ns.models or list(MODELS):
        path = os.path.join(HERE, MODELS[name][0]) if ns.check_only else export(name)
        size = os.path.getsize(path)
        total += size
        n_params = sum(p.numel() for p in MODELS[name][1]().parameters())
        print(f"\n== {os.path.basename(path)}: {size} bytes ({size / 1024:.1f} KiB), {n_params} torch parameters")
        for dom, op, n, ver in histogram(path):
            print(f"  {(dom + '::' if dom else '') + op:24s} {n:4d}  opset {ver}")
        for shape, max_abs, max_rel in check(name):
            print(f"  onnxruntime vs torch, batch/seq {shape}: OK (max abs {max_abs:.2e}, max rel {max_rel:.2e})")
    print(f"\ntotal {total} bytes ({total / 1024 / 1024:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

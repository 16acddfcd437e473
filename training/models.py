"""Backbones (Conv4, Edge-TPU-friendly depthwise-separable) and the head, built with tf_keras.

``build_backbone(cfg)`` returns a keras Model image (H, W, 1) float -> embedding (D,);
``build_head(cfg, embedding_dim)`` returns the hidden Dense layers as a keras Sequential. The
per-task classifier is not a layer: it is built from prototypes (``metalite.runtime.head``).
"""

from __future__ import annotations

from metalite.export.tfcompat import keras

from .settings import BACKBONES, DEFAULT_BACKBONE, DEFAULT_HEAD, POOLS

# PyTorch-style BN momentum (0.1 there = 0.9 here): moving statistics catch up within ~50 steps,
# so short meta-training runs evaluate (inference-mode BN, as on the device) on the right statistics.
BN_MOMENTUM = 0.9


def _conv_block(x, filters, name, pool="valid"):
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.layers.MaxPool2D(2, padding=pool, name=f"{name}_pool")(x)


def conv_widths(cfg: dict) -> list:
    """Output channels of every Conv2D of the backbone, in order (4 for conv4, 5 for dsconv).

    ``cfg["widths"]`` (written by structured pruning) overrides the uniform ``filters`` plan; the last
    width is always the embedding size."""
    cfg = {**DEFAULT_BACKBONE, **(cfg or {})}
    f, d = int(cfg["filters"]), int(cfg["embedding_dim"])
    plan = [f, f, f, d] if cfg["kind"] == "conv4" else [f // 2, f, f, f, d]
    widths = cfg.get("widths")
    if widths is None:
        return plan
    widths = [int(w) for w in widths]
    if len(widths) != len(plan) or min(widths) < 1 or widths[-1] != d:
        raise ValueError(
            f"backbone widths {widths} do not fit a {cfg['kind']} with embedding_dim {d} "
            f"(expected {len(plan)} positive widths ending in {d})"
        )
    return widths


def _conv4(inp, widths, pool="valid"):
    """4 x [conv 3x3, BN, ReLU, max-pool 2x2]: the standard few-shot baseline (Vinyals et al. 2016).

    ``pool="valid"`` is the classic network: at 28 px the pools drop the last row and column of odd-sized
    maps (7 -> 3 -> 1), so the embedding sees only the top-left 2 x 2 of the last 3 x 3 map and moves
    with one-pixel shifts. ``"same"`` keeps every row (28 -> 14 -> 7 -> 4 -> 2) and the last map is
    averaged."""
    x = inp
    for i, w in enumerate(widths):
        x = _conv_block(x, w, f"block{i + 1}", pool)
    return x


def _dsconv(inp, widths):
    """Stem conv stride 2, then depthwise-separable blocks: every op (CONV_2D, DEPTHWISE_CONV_2D, ReLU6 folded,
    AVERAGE_POOL_2D, RESHAPE) maps onto the Edge TPU when quantized to int8 with static shapes."""
    x = keras.layers.Conv2D(
        widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv"
    )(inp)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    plan = list(zip(widths[1:], (1, 2, 1, 2)))
    for i, (f, s) in enumerate(plan):
        n = f"ds{i + 1}"
        x = keras.layers.DepthwiseConv2D(
            3, strides=s, padding="same", use_bias=False, name=f"{n}_dw"
        )(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{n}_dwbn")(x)
        x = keras.layers.ReLU(6.0, name=f"{n}_dwrelu")(x)
        x = keras.layers.Conv2D(f, 1, use_bias=False, name=f"{n}_pw")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{n}_pwbn")(x)
        x = keras.layers.ReLU(6.0, name=f"{n}_pwrelu")(x)
    return x


def build_backbone(cfg: dict, input_shape=(28, 28, 1)) -> keras.Model:
    """Backbone from ``cfg`` ({"kind", "filters", "embedding_dim"}, optional "widths", conv4's "pool");
    output is a flat embedding."""
    cfg = {**DEFAULT_BACKBONE, **(cfg or {})}
    if cfg["kind"] not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg['kind']!r}; choose one of {', '.join(BACKBONES)}")
    inp = keras.Input(shape=tuple(input_shape), name="image")
    if cfg.get("pool", "valid") not in POOLS:
        raise ValueError(f"unknown pool padding {cfg['pool']!r}; choose one of {', '.join(POOLS)}")
    if cfg["kind"] == "conv4":
        x = _conv4(inp, conv_widths(cfg), cfg.get("pool", "valid"))
    else:
        x = _dsconv(inp, conv_widths(cfg))
    h, w = x.shape[1], x.shape[2]
    if (h, w) != (1, 1):
        # AVERAGE_POOL_2D with a static window keeps the embedding size fixed for any input size.
        x = keras.layers.AveragePooling2D((h, w), name="global_pool")(x)
    x = keras.layers.Flatten(name="embedding")(x)
    return keras.Model(inp, x, name=f"backbone_{cfg['kind']}")


def build_head(cfg: dict, embedding_dim: int) -> keras.Sequential:
    """The meta-learned hidden Dense layers of the head (may be empty)."""
    cfg = {**DEFAULT_HEAD, **(cfg or {})}
    layers = [
        keras.layers.Dense(int(u), activation=cfg["activation"], name=f"head_dense{i}")
        for i, u in enumerate(cfg["hidden"])
    ]
    head = keras.Sequential(layers, name="head")
    head.build((None, int(embedding_dim)))
    return head


def freeze_batchnorm(model) -> list:
    """Run every BatchNormalization layer of ``model`` (also one inside a quantization or pruning wrapper) in
    inference mode, its statistics fixed, and keep its scale and offset (except inside a quantization wrapper,
    which hands them to the optimizer itself); returns the layers. Fine-tuning on a few classes would otherwise
    replace statistics learnt from many within ~30 steps (``BN_MOMENTUM``), which costs classes no one
    fine-tuned on more than the weights' drift (docs/fleet.md)."""
    frozen = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            # a non-trainable BatchNormalization runs in inference mode (tf.keras 2)
            inner.trainable = False
            frozen.append(inner)
    return frozen


def thaw(layers) -> None:
    """Make ``layers`` trainable again before their model is saved: a quantization wrapper lists a frozen
    layer's weights in another order, which a model rebuilt from its config could not load."""
    for layer in layers:
        layer.trainable = True

"""Structured pruning (training/structured.py): channel groups, filter selection, exact thinning, Edge TPU ops."""

import numpy as np
import pytest

from metalite.training import structured as S

SHAPE = (28, 28, 1)


def _random_bn(model, seed=0):
    """Non-trivial BatchNorm parameters and statistics, so thinning mistakes show in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, n),
                    rng.normal(0, 0.3, n),
                    rng.normal(0, 0.1, n),
                    rng.uniform(0.5, 2, n),
                ]
            )


def _silence(model, groups, keep):
    """Zero gamma and beta of every filter not in ``keep`` (and of the depthwise channels reading it): the
    full model then computes exactly what the thinned one does, since those channels carry zeros."""
    for g, k in zip(groups, keep):
        drop = np.setdiff1d(np.arange(g.width), k)
        for name in [g.bn] + [n for n, kind in g.consumers if kind == "dwbn"]:
            bn = model.get_layer(name)
            gm, bt, mu, var = [w.numpy() for w in bn.weights]
            gm[drop], bt[drop] = 0, 0
            bn.set_weights([gm, bt, mu, var])


@pytest.mark.parametrize("kind,n_groups", [("conv4", 4), ("dsconv", 5)])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_thinned_backbone_computes_what_the_kept_filters_computed(kind, n_groups, scope):
    from metalite.training.models import build_backbone

    cfg = {"kind": kind, "filters": 16, "embedding_dim": 12}
    full = build_backbone(cfg, SHAPE)
    _random_bn(full)
    groups = S.channel_groups(full)
    assert len(groups) == n_groups and groups[-1].width == 12
    keep = S.select_filters(S.filter_scores(full, groups, "l1"), 0.5, scope)
    _silence(full, groups, keep)
    thin, tcfg, summary = S.thin_backbone(full, cfg, SHAPE, 0.5, "l1", scope)
    assert tcfg["widths"] == [len(k) for k in keep] + [12] == summary["widths"]
    assert sum(tcfg["widths"][:-1]) < sum(g.width for g in groups[:-1])
    x = np.random.default_rng(1).random((3, *SHAPE)).astype(np.float32)
    np.testing.assert_allclose(
        thin(x, training=False).numpy(), full(x, training=False).numpy(), atol=1e-5
    )
    # the config alone rebuilds the thinner shape (what load_model_dir / export do)
    rebuilt = build_backbone(tcfg, SHAPE)
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in thin.weights]
    assert thin.count_params() < full.count_params()


def test_scores_pick_the_weakest_filters_and_scopes_differ():
    from metalite.training.models import build_backbone

    m = build_backbone({"kind": "conv4", "filters": 8, "embedding_dim": 8}, SHAPE)
    groups = S.channel_groups(m)
    gammas = [
        np.arange(1, 9, dtype=np.float32),
        np.full(8, 5.0, np.float32),
        np.full(8, 0.5, np.float32),
    ]
    gammas[1][[2, 6]] = 0.01
    for g, gm in zip(groups, gammas):
        bn = m.get_layer(g.bn)
        w = [v.numpy() for v in bn.weights]
        bn.set_weights([gm] + w[1:])
    scores = S.filter_scores(m, groups, "bn")
    per_layer = S.select_filters(scores, 0.25, "layer")
    assert [len(k) for k in per_layer] == [6, 6, 6]
    assert (
        list(per_layer[0]) == [2, 3, 4, 5, 6, 7] and 2 not in per_layer[1] and 6 not in per_layer[1]
    )
    glob = S.select_filters(scores, 0.25, "global")
    assert sum(len(k) for k in glob) == 18 and min(len(k) for k in glob) >= 1
    assert [len(k) for k in glob] == [
        4,
        6,
        8,
    ]  # the flat third layer ranks above the first layer's weak half
    assert (
        2 not in glob[1] and 6 not in glob[1]
    )  # relative to their layer these two are by far the weakest
    per = S.select_filters(scores, [0.5, 0.25, 0.0], "layer")  # one fraction per layer
    assert [len(k) for k in per] == [4, 6, 8]
    assert S.parse_fractions("0.5,0.25,0") == [0.5, 0.25, 0.0] and S.parse_fractions("0.5") == 0.5
    for bad in ("1.0", "0.5,x", "-0.1,0.2"):
        with pytest.raises(S.StructuredError):
            S.parse_fractions(bad)
    with pytest.raises(S.StructuredError):
        S.select_filters(scores, [0.5, 0.5], "layer")  # three prunable layers
    with pytest.raises(S.StructuredError):
        S.select_filters(scores, [0.5, 0.5, 0.5], "global")
    with pytest.raises(S.StructuredError):
        S.select_filters(scores, 0.5, "sideways")
    with pytest.raises(S.StructuredError):
        S.filter_scores(m, groups, "magic")
    with pytest.raises(S.StructuredError):
        S.thin_backbone(m, {"kind": "conv4", "filters": 8, "embedding_dim": 8}, SHAPE, 1.0)


def test_per_layer_fractions_thin_only_the_layers_asked():
    from metalite.training.models import build_backbone

    cfg = {"kind": "conv4", "filters": 8, "embedding_dim": 8}
    full = build_backbone(cfg, SHAPE)
    thin, tcfg, summary = S.thin_backbone(full, cfg, SHAPE, "0.5,0.5,0", "l1", "layer")
    assert tcfg["widths"] == [4, 4, 8, 8] and summary["filters_removed"] == 8
    assert summary["fraction"] == pytest.approx(8 / 24) and summary["requested"] == [0.5, 0.5, 0.0]


def test_kept_counts_round_to_the_channel_block():
    assert [S.round_width(n, 64, 16) for n in (38, 40, 41, 24, 3, 64)] == [32, 48, 48, 32, 16, 64]
    assert (
        S.round_width(5, 16, 16) == 5 and S.round_width(38, 64, 1) == 38
    )  # narrow layer / no rounding
    scores = [np.arange(64, dtype=float)] * 3
    assert [len(k) for k in S.select_filters(scores, 0.4, "layer", multiple=16)] == [32, 32, 32]


def test_widths_in_the_config_are_checked():
    from metalite.training.models import build_backbone, conv_widths

    assert conv_widths({"kind": "dsconv", "filters": 32, "embedding_dim": 16}) == [
        16,
        32,
        32,
        32,
        16,
    ]
    assert conv_widths(
        {"kind": "conv4", "filters": 8, "embedding_dim": 8, "widths": [3, 4, 5, 8]}
    ) == [3, 4, 5, 8]
    for bad in ([3, 4, 8], [3, 4, 5, 6], [0, 4, 5, 8]):
        with pytest.raises(ValueError):
            build_backbone(
                {"kind": "conv4", "filters": 8, "embedding_dim": 8, "widths": bad}, SHAPE
            )


def test_thinned_dsconv_int8_is_all_edgetpu_mappable_and_cheaper():
    from metalite.bench.cost import keras_macs, tflite_macs
    from metalite.export.edgetpu import check_model
    from metalite.export.tflite import convert_int8
    from metalite.training.models import build_backbone

    cfg = {"kind": "dsconv", "filters": 32, "embedding_dim": 16}
    full = build_backbone(cfg, SHAPE)
    _random_bn(full)
    thin, _, _ = S.thin_backbone(full, cfg, SHAPE, 0.5, "bn", "layer")
    rep = np.random.default_rng(0).random((16, *SHAPE)).astype(np.float32)
    data = convert_int8(thin, rep, batch=1)
    report = check_model(data, "thin", static_batch=True)
    assert report["ready"], report
    assert tflite_macs(data) == keras_macs(thin) < keras_macs(full)

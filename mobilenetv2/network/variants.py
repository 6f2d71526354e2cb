"""The 22 published MobileNetV2 variants: their cost computed from the graph, and the figures
published with the ImageNet checkpoints (TF-slim's table, repeated in Keras's docs).

Published "Parameters (M)" count the convolution and classifier weights (batch-norm parameters
and statistics excluded); ``count_params`` is Keras's full count.
"""
from mobilenetv2.network import arch
from mobilenetv2.network import layers as L
from mobilenetv2.errors import ArgumentError

# (alpha, rows): (MACs M, params M, top-1 %, top-5 %) as published.
PUBLISHED = {
    (1.4, 224): (582, 6.06, 75.0, 92.5),
    (1.3, 224): (509, 5.34, 74.4, 92.1),
    (1.0, 224): (300, 3.47, 71.8, 91.0),
    (1.0, 192): (221, 3.47, 70.7, 90.1),
    (1.0, 160): (154, 3.47, 68.8, 89.0),
    (1.0, 128): (99, 3.47, 65.3, 86.9),
    (1.0, 96): (56, 3.47, 60.3, 83.2),
    (0.75, 224): (209, 2.61, 69.8, 89.6),
    (0.75, 192): (153, 2.61, 68.7, 88.9),
    (0.75, 160): (107, 2.61, 66.4, 87.3),
    (0.75, 128): (69, 2.61, 63.2, 85.3),
    (0.75, 96): (39, 2.61, 58.8, 81.6),
    (0.5, 224): (97, 1.95, 65.4, 86.4),
    (0.5, 192): (71, 1.95, 63.9, 85.4),
    (0.5, 160): (50, 1.95, 61.0, 83.2),
    (0.5, 128): (32, 1.95, 57.7, 80.8),
    (0.5, 96): (18, 1.95, 51.2, 75.8),
    (0.35, 224): (59, 1.66, 60.3, 82.9),
    (0.35, 192): (43, 1.66, 58.2, 81.2),
    (0.35, 160): (30, 1.66, 55.7, 79.1),
    (0.35, 128): (20, 1.66, 50.8, 75.0),
    (0.35, 96): (11, 1.66, 45.5, 70.4),
}
VARIANTS = tuple(sorted(PUBLISHED, key=lambda v: (-v[0], -v[1])))


def variant_name(alpha, rows):
    return f"{alpha:g}_{rows}" if alpha != 1.0 else f"1.0_{rows}"


def parse_variant(name):
    """'1.0_224' -> (1.0, 224); ValueError naming the valid variants otherwise."""
    try:
        alpha, rows = name.split("_")
        key = (float(alpha), int(rows))
    except (AttributeError, TypeError, ValueError):  # not a string, or not two numbers
        key = None
    if key not in PUBLISHED:
        raise ArgumentError(f"unknown variant {name!r}; the 22 are: "
                            + ", ".join(variant_name(*v) for v in VARIANTS))
    return key


def variant_stats(alpha, rows, classes=1000):
    """Computed cost of one variant with its classifier: MACs, Keras params, published-style params."""
    layers = arch.build_layers(alpha, include_top=True, classes=classes)
    macs = sum(arch.layer_macs(layers, (rows, rows, 3)).values())
    weights = sum(layer.count_params() for layer in layers
                  if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)))
    return {"macs": macs, "keras_params": sum(layer.count_params() for layer in layers),
            "slim_params": weights}


def variant_table():
    """One row per published variant: computed MACs and params beside the published figures."""
    rows = []
    for alpha, res in VARIANTS:
        macs_m, params_m, top1, top5 = PUBLISHED[alpha, res]
        stats = variant_stats(alpha, res)
        rows.append({"variant": variant_name(alpha, res), "alpha": alpha, "rows": res,
                     "macs_m": stats["macs"] // 10 ** 6, "params_m": round(stats["slim_params"] / 1e6, 2),
                     "keras_params": stats["keras_params"], "macs": stats["macs"],
                     "published_macs_m": macs_m, "published_params_m": params_m,
                     "top1": top1, "top5": top5})
    return rows

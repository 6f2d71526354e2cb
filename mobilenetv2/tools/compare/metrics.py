"""Per-layer agreement: max abs, relative L2, cosine, and the error against a measured noise floor.

The noise floor of a layer is our own float32 NumPy engine's relative L2 error against the float64
reference at that layer, on the same input and weights: what rounding alone costs there.  A
layer agrees when OTHER's relative L2 error is within ``factor`` times its floor.
"""
import numpy as np

DEFAULT_FACTOR = 30.0
TINY = 2.0 ** -30  # a floor of exactly 0 (a layer float32 computes exactly) still divides


def rel_l2(a, b):
    with np.errstate(over="ignore", invalid="ignore"):  # OTHER's inf or NaN: an inf or NaN error, no warning
        d = np.linalg.norm((np.asarray(a, np.float64) - b).ravel())
        n = np.linalg.norm(np.asarray(b, np.float64).ravel())
        return float(d / n) if n > 0 else float(d)


def metrics(other, ref):
    """max abs, relative L2 and cosine of OTHER's array against the reference's (same shape)."""
    a = np.asarray(other, np.float64).ravel()
    b = np.asarray(ref, np.float64).ravel()
    with np.errstate(over="ignore", invalid="ignore"):  # (as rel_l2: the row says so, not NumPy on stderr)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
        max_abs = float(np.max(np.abs(a - b))) if a.size else 0.0
    return {"max_abs": max_abs, "rel_l2": rel_l2(a, b), "cosine": cos}


def noise_floor(ref32, ref):
    """(relative L2, max abs) of our float32 engine against float64 at one layer."""
    d = np.abs(np.asarray(ref32, np.float64) - ref)
    return max(rel_l2(ref32, ref), TINY), float(d.max()) if d.size else 0.0


def layer_row(name, other, ref, floor, factor, how=""):
    """The report row of one layer: metrics, its floor ((rel L2, max abs), measured on the
    unpatched reference), the ratio and whether it agrees."""
    row = {"layer": name, "how": how, "shape": list(np.shape(ref)[1:])}
    row["floor_rel_l2"], row["floor_max_abs"] = floor
    if np.shape(other) != np.shape(ref):
        row.update(max_abs=None, rel_l2=None, cosine=None, ratio=None, agrees=False,
                   note=f"shape {list(np.shape(other))} where the reference has {list(np.shape(ref))}")
        return row
    row.update(metrics(other, ref))
    row["ratio"] = row["rel_l2"] / row["floor_rel_l2"]
    row["agrees"] = bool(row["ratio"] <= factor and np.isfinite(row["floor_rel_l2"]))  # NaN: no
    if not np.isfinite(row["floor_rel_l2"]):  # an error over an infinite floor is no agreement
        row["note"] = "no noise floor: our float32 engine overflows here (an input far outside [-1, 1]?)"
    return row

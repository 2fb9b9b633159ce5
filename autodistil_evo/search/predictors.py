"""Cheap predictors of a measured objective (proxy loss, latency, fidelity) from an arch, for LINAS.

Features are the arch's own values, not genome indices: depth, hidden width, each layer's heads
and FFN ratio (zero past the arch's depth, so per-layer genes count as they act) and the log of
its exact FLOPs and params. Each objective gets the model that cross-validates best on all
measurements so far among ridge regression and an RBF support-vector regressor (as DyNAS-T's
LINAS does), each over standardised features and targets (so one grid of regularisation and SVR's
epsilon fit losses of 1e-3 and latencies of 10 ms alike). Fitting is
deterministic (unshuffled folds), so a resumed search refits the predictors it had.
"""

import math

import numpy as np
from scipy.stats import kendalltau
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

# (label, estimator factory) tried on every fit; the best mean cross-validated absolute error wins.
CANDIDATES = (
    *((f"ridge(alpha={a:g})", lambda a=a: Ridge(alpha=a)) for a in (0.1, 1.0, 10.0)),
    *((f"svr-rbf(C={c:g})", lambda c=c: SVR(kernel="rbf", C=c, epsilon=0.01)) for c in (1.0, 10.0, 100.0)),
)

FALLBACK = "ridge(alpha=10)"
MIN_TO_CROSS_VALIDATE = 4


def arch_features(subspace, archs, exact: list) -> np.ndarray:
    """One row per arch: depth, hidden, per-layer heads and FFN ratios (zero past depth), log FLOPs, log params
    (`exact`: each arch's {"flops", "params"}, counted once by the caller, which needs them too); where students
    choose their layers, a keep-bit per SuperLM layer too."""
    depth = max(subspace.layers)
    rows = []
    for arch, counted in zip(archs, exact):
        heads, ratios = list(arch.layer_heads), list(arch.layer_ratios)
        pad = [0.0] * (depth - arch.layers)
        keep = subspace.encode(arch)[: subspace.depth] if subspace.subsets else []
        rows.append([arch.layers, arch.hidden, *heads, *pad, *ratios, *pad, *keep,
                     math.log(counted["flops"]), math.log(counted["params"])])
    return np.array(rows, dtype=float)


def _model(factory):
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), factory()), transformer=StandardScaler())


class Predictor:
    """One objective's regressor, chosen by k-fold cross-validation among `CANDIDATES`."""

    def __init__(self, features: np.ndarray, values: np.ndarray):
        values = np.asarray(values, dtype=float)
        self.label = FALLBACK  # too few measurements to cross-validate: the most regularised ridge
        if len(values) >= MIN_TO_CROSS_VALIDATE:
            folds = KFold(n_splits=min(5, len(values)), shuffle=False)
            scores = {label: cross_val_score(_model(factory), features, values, cv=folds,
                                             scoring="neg_mean_absolute_error").mean() for label, factory in CANDIDATES}
            self.label = max(scores, key=scores.get)  # the first best in CANDIDATES order
        self.model = _model(dict(CANDIDATES)[self.label]).fit(features, values)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict(features)


def prediction_quality(predicted, measured) -> dict:
    """How well predictions made before measuring rank and match the measured values."""
    predicted, measured = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    tau = kendalltau(predicted, measured).statistic if len(measured) > 1 else float("nan")
    mape = float(np.mean(np.abs(predicted - measured) / np.maximum(np.abs(measured), 1e-12)))
    return {"kendall_tau": None if np.isnan(tau) else float(tau), "mape": mape, "n": len(measured)}

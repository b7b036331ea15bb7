"""Every metric of the paper and beyond: one file each, registering itself in `fastforget.metrics.registry`.

Each file holds the metric's arithmetic as plain functions over model outputs (probabilities or logits [N, K],
labels [N]) returning a small dataclass whose `as_dict()` is JSON-ready, and one registered compute function that
`fastforget.evaluate` calls. Percentages: accuracy, MIA, U-LIRA. Fractions: MIA-NN (as in the paper's Table 1),
UTV, RMIA's AUC. The PNG writers live in `fastforget.metrics.plots`, kept out of this namespace so that importing
the metrics does not import matplotlib.
"""

from fastforget.metrics.accuracy import AccuracyResult, accuracy, per_class_accuracy
from fastforget.metrics.mia import FEATURES, MIAResult, membership_feature, mia
from fastforget.metrics.mia_nn import PROTOCOLS, MIANNResult, mia_nn, nearest_class
from fastforget.metrics.reassignment import ReassignmentResult, confusion_matrix, reassignment
from fastforget.metrics.registry import (
    METRICS,
    Column,
    EvalContext,
    EvalOptions,
    Metric,
    Outputs,
    ReferenceOutputs,
    ShadowOutputs,
    Skip,
    default_metrics,
    discover,
    get_metric,
    register,
)
from fastforget.metrics.rmia import RMIAResult, rmia, tune_a
from fastforget.metrics.ulira import ULiRAResult, logit_confidence, ulira
from fastforget.metrics.utv import UTVResult, target_utv, utv

discover()  # metric files beyond those imported above register themselves too

__all__ = [
    "FEATURES",
    "METRICS",
    "PROTOCOLS",
    "AccuracyResult",
    "Column",
    "EvalContext",
    "EvalOptions",
    "MIANNResult",
    "MIAResult",
    "Metric",
    "Outputs",
    "RMIAResult",
    "ReassignmentResult",
    "ReferenceOutputs",
    "ShadowOutputs",
    "Skip",
    "ULiRAResult",
    "UTVResult",
    "accuracy",
    "confusion_matrix",
    "default_metrics",
    "discover",
    "get_metric",
    "logit_confidence",
    "membership_feature",
    "mia",
    "mia_nn",
    "nearest_class",
    "per_class_accuracy",
    "reassignment",
    "register",
    "rmia",
    "target_utv",
    "tune_a",
    "ulira",
    "utv",
]

"""Every metric of the paper and beyond, as plain functions over model outputs (probabilities [N, K], labels [N]).

Each returns a small dataclass whose `as_dict()` is JSON-ready. Percentages: accuracy, MIA, U-LIRA. Fractions:
MIA-NN (as in the paper's Table 1), UTV, RMIA's AUC. The PNG writers live in `fastforget.metrics.plots`, kept
out of this namespace so that importing the metrics does not import matplotlib.
"""

from fastforget.metrics.accuracy import AccuracyResult, accuracy, per_class_accuracy
from fastforget.metrics.mia import FEATURES, MIAResult, membership_feature, mia
from fastforget.metrics.mia_nn import PROTOCOLS, MIANNResult, mia_nn, nearest_class
from fastforget.metrics.reassignment import ReassignmentResult, confusion_matrix, reassignment
from fastforget.metrics.rmia import RMIAResult, rmia, rmia_scores
from fastforget.metrics.ulira import ULiRAResult, logit_confidence, ulira
from fastforget.metrics.utv import UTVResult, target_utv, utv

__all__ = [
    "FEATURES",
    "PROTOCOLS",
    "AccuracyResult",
    "MIANNResult",
    "MIAResult",
    "RMIAResult",
    "ReassignmentResult",
    "ULiRAResult",
    "UTVResult",
    "accuracy",
    "confusion_matrix",
    "logit_confidence",
    "membership_feature",
    "mia",
    "mia_nn",
    "nearest_class",
    "per_class_accuracy",
    "reassignment",
    "rmia",
    "rmia_scores",
    "target_utv",
    "ulira",
    "utv",
]

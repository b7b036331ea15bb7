"""`fastforget audit`: one answer to "is class f gone?", with its evidence against the retraining floor.

Every registered metric runs on the audited model and, where its yardstick is the retrained models' own value, on
the retrained models evaluated the same way; each value becomes a test with its threshold (`verdicts`: the rule
follows from the registry's metadata, so a new metric is audited without editing this package). The white-box
checks (`whitebox`) look at the weights and the penultimate features. Reference models that are not given are
trained, cached and resumable (`references`); the report is written as audit.json, audit.md and audit.html
(`report`).
"""

from fastforget.audit.references import ReferencePlan, plan_references, reference_seeds
from fastforget.audit.report import FILES, write_reports
from fastforget.audit.run import Model, run_audit
from fastforget.audit.verdicts import INDISTINGUISHABLE, LEAKS, NOT_INFORMATIVE, RULES, SHORTFALL, Verdict, judge
from fastforget.audit.whitebox import classifier_layer, linear_probe, penultimate_features, weight_change

__all__ = [
    "FILES",
    "INDISTINGUISHABLE",
    "LEAKS",
    "NOT_INFORMATIVE",
    "RULES",
    "SHORTFALL",
    "Model",
    "ReferencePlan",
    "Verdict",
    "classifier_layer",
    "judge",
    "linear_probe",
    "penultimate_features",
    "plan_references",
    "reference_seeds",
    "run_audit",
    "weight_change",
    "write_reports",
]

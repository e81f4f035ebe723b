"""Kernels of the ``ai.onnx.ml`` domain, the operators scikit-learn converters emit.

- linear models, normalizers and encoders: ``_ml_linear``, ``_ml_preprocess``
- tree ensembles (TreeEnsembleClassifier/Regressor, TreeEnsemble): ``_ml_trees``
- support vector machines (SVMClassifier/Regressor): ``_ml_svm``
- maps and label encodings (ZipMap, LabelEncoder, CategoryMapper, DictVectorizer): ``_ml_maps``

Where the ONNX specification is vague (binary classifiers with one score column, the
transform of single-target regressors) the kernels follow onnxruntime, so converted models
give the scores and labels onnxruntime gives.

These kernels run on the host with numpy (string labels, dicts and per-model tables).
The private modules register into :data:`KERNELS`, defined before they are imported.
"""

from __future__ import annotations

from ronn.kernel import KernelTable

KERNELS = KernelTable(domain="ai.onnx.ml")

# imported after KERNELS exists: each module registers its kernels into it
from . import _ml_linear, _ml_maps, _ml_preprocess, _ml_svm, _ml_trees  # noqa: E402, F401

__all__ = ["KERNELS"]

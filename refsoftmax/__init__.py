"""refsoftmax: reference softmax-family losses with hand-derived gradients.

Every loss is written once against the Python array API standard and runs on
NumPy, PyTorch, CuPy, JAX or array-api-strict arrays.  Each is a
:class:`~refsoftmax._protocol.Function`: call it for the value, or use
``forward``/``backward``/``value_and_grad`` for the gradients.
"""

from refsoftmax._config import BackendSpec, get_backend, set_backend, use_backend
from refsoftmax._protocol import Function, Residuals
from refsoftmax.accumulation import AccumulationSchedule, accumulation_steps, delta_schedule
from refsoftmax.am_softmax import am_softmax_loss
from refsoftmax.as_softmax import ZeroLossStats, as_softmax_cross_entropy
from refsoftmax.fenchel_young import (
    FenchelYoungLoss,
    FenchelYoungProjection,
    Regulariser,
    entmax15,
    entmax15_loss,
    sparsemax,
    sparsemax_loss,
)
from refsoftmax.gradcheck import GradcheckError, GradcheckReport, gradcheck
from refsoftmax.linear_softmax_cross_entropy import linear_softmax_cross_entropy
from refsoftmax.multilabel import multilabel_as_softmax_loss, multilabel_categorical_cross_entropy
from refsoftmax.nce import nce_loss
from refsoftmax.negative_sampling import negative_sampling_loss
from refsoftmax.row_sparse import RowSparse
from refsoftmax.sampled_softmax import sampled_softmax_loss
from refsoftmax.softmax import log_softmax, logsumexp, softmax
from refsoftmax.softmax_cross_entropy import softmax_cross_entropy
from refsoftmax.sparse_softmax_cross_entropy import sparse_softmax_cross_entropy
from refsoftmax.temperature_softmax import temperature_softmax_cross_entropy
from refsoftmax.topk_softmax import topk_softmax_cross_entropy

__version__ = "0.1.0"

__all__ = [
    "AccumulationSchedule",
    "BackendSpec",
    "FenchelYoungLoss",
    "FenchelYoungProjection",
    "Function",
    "GradcheckError",
    "GradcheckReport",
    "Regulariser",
    "Residuals",
    "RowSparse",
    "ZeroLossStats",
    "__version__",
    "accumulation_steps",
    "am_softmax_loss",
    "as_softmax_cross_entropy",
    "delta_schedule",
    "entmax15",
    "entmax15_loss",
    "get_backend",
    "gradcheck",
    "linear_softmax_cross_entropy",
    "log_softmax",
    "logsumexp",
    "multilabel_as_softmax_loss",
    "multilabel_categorical_cross_entropy",
    "nce_loss",
    "negative_sampling_loss",
    "sampled_softmax_loss",
    "set_backend",
    "softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "sparsemax",
    "sparsemax_loss",
    "temperature_softmax_cross_entropy",
    "topk_softmax_cross_entropy",
    "use_backend",
]

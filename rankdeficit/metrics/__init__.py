"""Pure, jittable metrics of representation collapse (paper Sections 2-4, App. I).

``from rankdeficit import metrics``; every public function of the submodules is
re-exported here:

* ``spectral``: singular values, numerical/effective/stable rank, logits norm,
  post-softmax rank, representation rank on a fixed random subset of coordinates.
* ``alignment``: weight/input singular-vector alignment, conv patches, gradient rank.
* ``collapse``: streaming class statistics, NC1-NC4, OrthoDev.
* ``ood``: NECO, AUROC, AUPR-In/Out, FPR@95 (NECO and OpenOOD conventions).
* ``attention``: rank, effective rank, entropy and logits norm of attention maps.
* ``placement``: sharded / multi-process inputs (``replicated``, ``global_batch``,
  ``gather_from_processes``).
* ``tsqr``: singular values, numerical and effective rank of a row-sharded matrix by
  TSQR (no row gathered; ``streamed_spectrum``, ...).
* ``streamed``: class statistics, NECO fit, logits norms of row-sharded features as sums
  over the devices (``streamed_class_stats``, ``streamed_neco_fit``, ...).

The package needs only jax and numpy (``pip install rankdeficit``). Every metric
accepts arrays sharded over Explicit or Auto meshes, eagerly and under ``jit``; invalid
input gives an error (eagerly) or NaN / rank -1 (under ``jit``), never a plausible
number. Formulas, conventions and costs: docs/metrics.md.
"""

from rankdeficit.metrics import alignment
from rankdeficit.metrics import attention
from rankdeficit.metrics import collapse
from rankdeficit.metrics import ood
from rankdeficit.metrics import placement
from rankdeficit.metrics import spectral
from rankdeficit.metrics import streamed
from rankdeficit.metrics import tsqr
from rankdeficit.metrics.alignment import conv_patches
from rankdeficit.metrics.alignment import gradient_rank
from rankdeficit.metrics.alignment import kernel_as_matrix
from rankdeficit.metrics.alignment import layer_input_matrix
from rankdeficit.metrics.alignment import max_alignment
from rankdeficit.metrics.alignment import mean_max_alignment
from rankdeficit.metrics.alignment import singular_vector_alignment
from rankdeficit.metrics.alignment import subsample_rows
from rankdeficit.metrics.alignment import top_right_singular_vectors
from rankdeficit.metrics.attention import attention_effective_rank
from rankdeficit.metrics.attention import attention_entropy
from rankdeficit.metrics.attention import attention_logits_norm
from rankdeficit.metrics.attention import attention_probabilities
from rankdeficit.metrics.attention import attention_rank
from rankdeficit.metrics.attention import attention_statistics
from rankdeficit.metrics.collapse import ClassStats
from rankdeficit.metrics.collapse import NccStats
from rankdeficit.metrics.collapse import centred_class_means
from rankdeficit.metrics.collapse import class_stats_from_features
from rankdeficit.metrics.collapse import class_stats_init
from rankdeficit.metrics.collapse import class_stats_update
from rankdeficit.metrics.collapse import global_mean
from rankdeficit.metrics.collapse import nc1
from rankdeficit.metrics.collapse import nc2
from rankdeficit.metrics.collapse import nc3
from rankdeficit.metrics.collapse import nc4
from rankdeficit.metrics.collapse import ncc_init
from rankdeficit.metrics.collapse import ncc_update
from rankdeficit.metrics.collapse import neural_collapse
from rankdeficit.metrics.collapse import neural_collapse_from_features
from rankdeficit.metrics.collapse import orthodev
from rankdeficit.metrics.collapse import within_class_covariance
from rankdeficit.metrics.ood import NecoParams
from rankdeficit.metrics.ood import aupr_in
from rankdeficit.metrics.ood import aupr_out
from rankdeficit.metrics.ood import auroc
from rankdeficit.metrics.ood import fpr_at_95_tpr
from rankdeficit.metrics.ood import neco_fit
from rankdeficit.metrics.ood import neco_score
from rankdeficit.metrics.ood import ood_metrics
from rankdeficit.metrics.placement import gather_from_processes
from rankdeficit.metrics.placement import global_batch
from rankdeficit.metrics.placement import replicated
from rankdeficit.metrics.spectral import INVALID_RANK
from rankdeficit.metrics.spectral import effective_rank
from rankdeficit.metrics.spectral import feature_subset_indices
from rankdeficit.metrics.spectral import flatten_features
from rankdeficit.metrics.spectral import logits_norm
from rankdeficit.metrics.spectral import mean_per_sample_norm
from rankdeficit.metrics.spectral import numerical_rank
from rankdeficit.metrics.spectral import rank_tolerance
from rankdeficit.metrics.spectral import representation_matrix
from rankdeficit.metrics.spectral import representation_rank
from rankdeficit.metrics.spectral import seeded_subset_indices
from rankdeficit.metrics.spectral import singular_values
from rankdeficit.metrics.spectral import softmax_rank
from rankdeficit.metrics.spectral import stable_rank
from rankdeficit.metrics.spectral import top_k_singular_values
from rankdeficit.metrics.streamed import streamed_class_means
from rankdeficit.metrics.streamed import streamed_class_stats
from rankdeficit.metrics.streamed import streamed_logits_norm
from rankdeficit.metrics.streamed import streamed_mean
from rankdeficit.metrics.streamed import streamed_mean_per_sample_norm
from rankdeficit.metrics.streamed import streamed_ncc
from rankdeficit.metrics.streamed import streamed_neco_fit
from rankdeficit.metrics.streamed import streamed_neco_score
from rankdeficit.metrics.tsqr import streamed_effective_rank
from rankdeficit.metrics.tsqr import streamed_numerical_rank
from rankdeficit.metrics.tsqr import streamed_singular_values
from rankdeficit.metrics.tsqr import streamed_spectrum

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

The package needs only jax and numpy (``pip install rankdeficit``). Every metric
accepts arrays sharded over Explicit or Auto meshes, eagerly and under ``jit``; invalid
input gives an error (eagerly) or NaN / rank -1 (under ``jit``), never a plausible
number. Formulas, conventions and costs: docs/metrics.md.
"""

from rankdeficit.metrics import alignment, attention, collapse, ood, placement, spectral
from rankdeficit.metrics.attention import (
    attention_effective_rank,
    attention_entropy,
    attention_logits_norm,
    attention_probabilities,
    attention_rank,
    attention_statistics,
)
from rankdeficit.metrics.alignment import (
    conv_patches,
    gradient_rank,
    kernel_as_matrix,
    layer_input_matrix,
    max_alignment,
    mean_max_alignment,
    singular_vector_alignment,
    subsample_rows,
    top_right_singular_vectors,
)
from rankdeficit.metrics.collapse import (
    ClassStats,
    NccStats,
    centred_class_means,
    class_stats_from_features,
    class_stats_init,
    class_stats_update,
    global_mean,
    nc1,
    nc2,
    nc3,
    nc4,
    ncc_init,
    ncc_update,
    neural_collapse,
    neural_collapse_from_features,
    orthodev,
    within_class_covariance,
)
from rankdeficit.metrics.ood import (
    NecoParams,
    aupr_in,
    aupr_out,
    auroc,
    fpr_at_95_tpr,
    neco_fit,
    neco_score,
    ood_metrics,
)
from rankdeficit.metrics.placement import gather_from_processes, global_batch, replicated
from rankdeficit.metrics.spectral import (
    INVALID_RANK,
    effective_rank,
    feature_subset_indices,
    flatten_features,
    logits_norm,
    mean_per_sample_norm,
    numerical_rank,
    rank_tolerance,
    representation_matrix,
    representation_rank,
    seeded_subset_indices,
    singular_values,
    softmax_rank,
    stable_rank,
    top_k_singular_values,
)

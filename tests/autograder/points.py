"""The points table: every graded question of the TP, the tests that grade it and their points.

One test is worth its points when it passes and 0 otherwise. A test listed here that did not run
(deselected, crashed collection, grading stopped) still appears in the results with 0, so the
maximum is always ``TOTAL_POINTS``. Test names are the function names in ``tests/graded/<module>``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One graded question: where its tests live, which submission files they read, and the points."""

    key: str  # "Ex2 Q2": the label students see, also in NotImplementedError stubs
    title: str
    test_module: str  # file name under tests/graded/
    files: tuple[str, ...]  # submission files (relative to its root) the question grades
    tests: dict[str, int]  # test function name -> points

    @property
    def points(self) -> int:
        return sum(self.tests.values())


QUESTIONS: tuple[Question, ...] = (
    Question(
        "Ex1 Q1", "NumPy MLP: forward, loss, gradients, SGD step", "test_ex1_q1_numpy_mlp.py",
        ("exercise1/q1_numpy_mlp.py",),
        {
            "test_init_params_shapes": 1,
            "test_forward_matches_reference": 2,
            "test_cross_entropy_matches_reference": 2,
            "test_backward_matches_autograd": 3,
            "test_sgd_momentum_step_matches_torch": 2,
        },
    ),
    Question(
        "Ex1 Q2", "Net: the MLP as an nn.Module", "test_ex1_q2_module_mlp.py",
        ("exercise1/q2_module_mlp.py",),
        {
            "test_net_has_the_tp_layers": 2,
            "test_net_forward_matches_reference": 3,
        },
    ),
    Question(
        "Ex1 Q3", "TensorBoard summaries", "test_ex1_q3_summaries.py",
        ("exercise1/q3_summaries.py",),
        {
            "test_dry_run_writes_the_four_summaries": 4,
            "test_dry_run_writes_metrics_json": 1,
        },
    ),
    Question(
        "Ex1 Q4", "ResNet18", "test_ex1_q4_resnet.py",
        ("exercise1/q4_resnet.py",),
        {
            "test_parameter_count_imagenet_stem": 2,
            "test_parameter_count_cifar_stem": 2,
            "test_layer_shapes_match_torchvision": 1,
            "test_output_shape": 2,
            "test_training_steps_reduce_the_loss": 1,
        },
    ),
    Question(
        "Ex1 Q5", "Grid search fills Tables 1 and 2", "test_ex1_q5_grid_search.py",
        ("exercise1/q5_grid_search.py",),
        {
            "test_tiny_grid_fills_every_cell_once": 5,
            "test_rerun_trains_nothing_new": 2,
        },
    ),
    Question(
        "Ex2 Q2", "TripletLoss and its mining modes", "test_ex2_q2_triplet_loss.py",
        ("utils/TripletLoss.py",),
        {
            "test_triplet_loss_on_explicit_triplets": 2,
            "test_batch_hard_matches_brute_force": 3,
            "test_batch_all_matches_brute_force": 3,
            "test_semi_hard_matches_brute_force": 3,
            "test_batch_hard_soft_margin": 1,
            "test_gradients_are_finite_and_flow": 2,
        },
    ),
    Question(
        "Ex2 Q3", "RandomIdentitySampler (P x K batches)", "test_ex2_q3_sampler.py",
        ("utils/RandomSampler.py",),
        {
            "test_batches_hold_p_identities_of_k_images": 3,
            "test_epoch_covers_every_identity": 2,
            "test_len_is_exact": 1,
            "test_deterministic_per_seed_and_set_epoch_reshuffles": 2,
            "test_small_identities_sampled_with_replacement": 1,
        },
    ),
    Question(
        "Ex2 Q4", "Market1501 dataset", "test_ex2_q4_market.py",
        ("data.py",),
        {
            "test_get_id_and_get_camera": 3,
            "test_imgs_sorted_without_junk": 2,
            "test_unique_ids_ids_cameras_aligned": 2,
            "test_getitem_returns_image_and_label_index": 2,
        },
    ),
    Question(
        "Ex2 Q5", "ReIDNet and ReIDLoss", "test_ex2_q5_network_loss.py",
        ("network.py", "loss.py"),
        {
            "test_reidnet_outputs_in_tp_order": 3,
            "test_reidnet_backbone_and_heads": 2,
            "test_reidloss_combines_triplet_and_smoothed_ce": 3,
            "test_reidloss_weights_and_gradients": 2,
        },
    ),
    Question(
        "Ex2 Q6", "train, compute_cmc_map, evaluate", "test_ex2_q6_train_evaluate.py",
        ("main.py", "utils/metrics.py"),
        {
            "test_compute_cmc_map_matches_per_query_loop": 5,
            "test_compute_cmc_map_hand_made_case": 2,
            "test_evaluate_matches_reference": 4,
            "test_train_one_tiny_epoch": 5,
        },
    ),
    Question(
        "Ex2 Q7", "evaluation_tp.py reloads a checkpoint", "test_ex2_q7_evaluation.py",
        ("evaluation_tp.py",),
        {
            "test_reload_reproduces_the_trained_numbers": 5,
            "test_foreign_checkpoint_is_a_one_line_error": 2,
        },
    ),
)

TOTAL_POINTS = 100
QUESTION_BY_MODULE = {question.test_module: question for question in QUESTIONS}
QUESTION_BY_FILE = {path: question for question in QUESTIONS for path in question.files}

if sum(question.points for question in QUESTIONS) != TOTAL_POINTS:  # a broken table must not grade anyone
    raise ValueError(f"points table sums to {sum(q.points for q in QUESTIONS)}, expected {TOTAL_POINTS}")


def markdown_table() -> str:
    """The points table as Markdown (for summaries and the README)."""
    lines = ["| Question | Graded item | Files | Points |", "|---|---|---|---:|"]
    for question in QUESTIONS:
        files = ", ".join(f"`{path}`" for path in question.files)
        lines.append(f"| {question.key} | {question.title} | {files} | {question.points} |")
    lines.append(f"| **Total** | | | **{TOTAL_POINTS}** |")
    return "\n".join(lines)

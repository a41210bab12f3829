"""The points table: every graded question of the TP, how it is graded, and its points (total 100).

- **Code questions** (what the TP asks students to write): each test in ``tests/graded/<module>`` is worth
  its points when it passes, 0 otherwise. 60 points.
- **Written questions** (what the TP asks students to explain, and the analyses): a rubric per question,
  scored by the instructor on the marking sheet and merged back with ``--manual``. 40 points: the TP asks
  to focus on the report.

What the TP *gives* (the NumPy script of Ex1 Q1, the sampler, ``loss.py``, ``evaluate`` and the metric) is
not graded as code: it is explained in the written answers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """One code question: its tests' module, the submission files it grades, the points per test."""

    key: str  # "Ex2 Q2": the label students see, also in the starter's NotImplementedError stubs
    slug: str  # "ex2_q2": the engine's name for it
    title: str
    test_module: str  # file name under tests/graded/
    files: tuple[str, ...]
    tests: dict[str, int]

    @property
    def points(self) -> int:
        return sum(self.tests.values())


@dataclass(frozen=True)
class WrittenQuestion:
    """One written question: the answer file students fill, what it asks, and the rubric (points, criterion)."""

    key: str
    slug: str
    title: str
    answer_file: str
    prompt: str
    rubric: tuple[tuple[int, str], ...]

    @property
    def points(self) -> int:
        return sum(points for points, _ in self.rubric)


QUESTIONS: tuple[Question, ...] = (
    Question("Ex1 Q2", "ex1_q2", "Net, train and test as PyTorch code", "test_ex1_q2_module_mlp.py",
             ("exercise1/q2_module_mlp.py",),
             {"test_net_has_fc1_and_fc2": 1, "test_net_forward": 2, "test_train_runs_one_epoch_of_sgd": 3,
              "test_test_evaluates_without_training": 1}),
    Question("Ex1 Q3", "ex1_q3", "TensorBoard summaries", "test_ex1_q3_summaries.py",
             ("exercise1/q3_summaries.py",),
             {"test_training_summaries_per_epoch": 2, "test_test_summaries_on_the_test_split": 2,
              "test_event_file_in_the_run_folder": 1}),
    Question("Ex1 Q4", "ex1_q4", "A hand-written ResNet-18", "test_ex1_q4_resnet.py",
             ("exercise1/q4_resnet.py",),
             {"test_parameter_count_matches_torchvision": 2, "test_parameter_shapes_match_torchvision": 1,
              "test_stage_output_sizes": 2, "test_basic_block_adds_the_shortcut": 1, "test_forward_gives_logits": 1,
              "test_training_steps_reduce_the_loss": 1}),
    Question("Ex1 Q5", "ex1_q5", "Grid search: Tables 1 and 2", "test_ex1_q5_grid_search.py",
             ("exercise1/q5_grid_search.py",),
             {"test_table1_cells": 2, "test_table2_cells": 2, "test_diverged_cell_is_marked": 1,
              "test_each_cell_trained_once": 1}),
    Question("Ex2 Q2", "ex2_q2", "TripletLoss and its mining modes", "test_ex2_q2_triplet_loss.py",
             ("utils/TripletLoss.py",),
             {"test_hand_made_triplets": 1, "test_batch_hard": 2, "test_batch_all": 2, "test_semi_hard": 2,
              "test_soft_margin": 1, "test_gradients_are_finite": 1}),
    Question("Ex2 Q4", "ex2_q4", "The Market1501 dataset class", "test_ex2_q4_market.py",
             ("data.py",),
             {"test_get_id": 2, "test_imgs_sorted_without_junk": 2, "test_unique_ids_sorted": 1,
              "test_getitem_gives_image_and_label": 2}),
    Question("Ex2 Q5", "ex2_q5", "ResNet-50 + FC1/FC2 with three outputs", "test_ex2_q5_network.py",
             ("network.py",),
             {"test_outputs_in_tp_order": 2, "test_resnet50_backbone_and_heads": 2, "test_every_parameter_used": 1,
              "test_features_are_fc1_output": 1}),
    Question("Ex2 Q6", "ex2_q6", "The train() function", "test_ex2_q6_train.py",
             ("main.py",),
             {"test_train_updates_the_weights": 3, "test_train_returns_the_mean_loss": 2,
              "test_train_returns_the_accuracy": 1}),
    Question("Ex2 Q7", "ex2_q7", "Checkpoint and evaluation_tp.py", "test_ex2_q7_evaluation.py",
             ("main.py", "evaluation_tp.py"),
             {"test_checkpoint_holds_model_epoch_config": 2, "test_reload_rebuilds_the_model": 1,
              "test_evaluation_reproduces_the_reference": 2, "test_bad_checkpoint_is_one_line": 1}),
)

WRITTEN: tuple[WrittenQuestion, ...] = (
    WrittenQuestion("Ex1 Q1", "ex1_q1", "Explain the NumPy MLP", "report/answers/ex1_q1.md",
                    "Understand and explain the given NumPy script of the 784-128-10 network.",
                    ((1, "Architecture: flattened 784 inputs, 128 sigmoid hidden units, 10 softmax outputs"),
                     (1, "Forward pass and the cross-entropy loss stated correctly"),
                     (2, "Backward pass: softmax + cross-entropy gradient (p - y), chain rule through the linear "
                         "layers and the sigmoid (h(1 - h))"),
                     (1, "The update: minibatch SGD with momentum and weight decay; what an epoch is"))),
    WrittenQuestion("Ex1 Q3", "ex1_q3", "Which other summaries, and why", "report/answers/ex1_q3.md",
                    "Besides the training loss and accuracy, which two quantities should be summarised, and why?",
                    ((2, "Test (held-out) loss and test accuracy"),
                     (2, "Why: the train/test gap shows over-fitting; epochs or checkpoints are chosen on "
                         "validation, never on the test set"))),
    WrittenQuestion("Ex1 Q5", "ex1_q5", "Tables 1 and 2, commented", "report/answers/ex1_q5.md",
                    "Fill Tables 1 and 2 with your grid search and comment on them.",
                    ((2, "Both tables filled from the student's own runs, with the training budget stated"),
                     (2, "Effect of the learning rate, supported by the tables (divergence, slow learning)"),
                     (1, "Effect of the weight decay (Table 1)"),
                     (1, "Effect of the batch size together with the learning rate (Table 2)"))),
    WrittenQuestion("Ex1 Q6", "ex1_q6", "Regularisation in the network", "report/answers/ex1_q6.md",
                    "Which regularisations does the network use, and how does each one limit over-fitting?",
                    ((2, "Names the regularisations actually used (weight decay as an L2 penalty, and batch norm "
                         "or augmentation where used); does not call the learning rate a regulariser"),
                     (2, "Explains how each one limits over-fitting"))),
    WrittenQuestion("Ex2 Q1", "ex2_q1", "Looking at Market-1501", "report/answers/ex2_q1.md",
                    "Look at the dataset: what do you observe, and what does it imply for the task?",
                    ((2, "Identities across cameras (pose, light, background, occlusion, resolution); the splits "
                         "train / query / gallery, distractors and junk"),
                     (1, "Consequence: identity must be learned across cameras, test identities are unseen"))),
    WrittenQuestion("Ex2 Q3", "ex2_q3", "Describe the sampler", "report/answers/ex2_q3.md",
                    "Describe the given RandomIdentitySampler and why training needs it.",
                    ((2, "P identities x K images per batch; how identities and images are drawn (with replacement "
                         "for identities with fewer than K images)"),
                     (2, "Why: every anchor has positives and negatives in its batch (batch-hard mining)"),
                     (1, "What an epoch is for this sampler and how long it is"))),
    WrittenQuestion("Ex2 Q5", "ex2_q5", "Network outputs and loss.py", "report/answers/ex2_q5.md",
                    "Explain the network's two FC layers and three outputs, and the given loss.py.",
                    ((2, "FC1 gives the embedding (features), FC2 the identity logits; the three outputs and their "
                         "use"),
                     (2, "loss.py: triplet loss on the features plus label-smoothed cross-entropy on the logits, "
                         "weighted"),
                     (1, "Why combining the two losses helps"))),
    WrittenQuestion("Ex2 Q6", "ex2_q6", "Explain evaluate()", "report/answers/ex2_q6.md",
                    "Explain the given evaluate function and the numbers it reports.",
                    ((2, "Query and gallery embeddings, L2 normalisation, distance matrix, ranking"),
                     (2, "Protocol: same identity and camera removed, junk ignored; CMC rank-k and mAP defined"),
                     (1, "What the reported numbers say about the trained model"))),
    WrittenQuestion("Ex2 Q7", "ex2_q7", "Reloaded model: analysis", "report/answers/ex2_q7.md",
                    "Reload the checkpoint with evaluation_tp.py and analyse what the evaluation shows.",
                    ((1, "The reloaded model reproduces the figures of the training run"),
                     (2, "Analysis of the CMC curve and of ranked lists: what succeeds, what fails, why"))),
)

CODE_POINTS = sum(question.points for question in QUESTIONS)
WRITTEN_POINTS = sum(question.points for question in WRITTEN)
TOTAL_POINTS = CODE_POINTS + WRITTEN_POINTS
QUESTION_BY_MODULE = {question.test_module: question for question in QUESTIONS}
QUESTION_BY_FILE: dict[str, Question] = {}  # a file graded by two questions belongs to the first (main.py: Q6)
for _question in QUESTIONS:
    for _path in _question.files:
        QUESTION_BY_FILE.setdefault(_path, _question)
WRITTEN_BY_SLUG = {question.slug: question for question in WRITTEN}

if TOTAL_POINTS != 100 or 3 * WRITTEN_POINTS < TOTAL_POINTS:  # a broken table must not grade anyone
    raise ValueError(f"points table: {CODE_POINTS} code + {WRITTEN_POINTS} written, expected 100 with written "
                     "answers at least a third")


def markdown_table() -> str:
    """The points table as Markdown (for summaries and the README)."""
    lines = ["| Question | Graded item | How | Points |", "|---|---|---|---:|"]
    for question in QUESTIONS:
        files = ", ".join(f"`{path}`" for path in question.files)
        lines.append(f"| {question.key} | {question.title} | code: {files} | {question.points} |")
    for written in WRITTEN:
        lines.append(f"| {written.key} | {written.title} | written: `{written.answer_file}` | {written.points} |")
    lines.append(f"| **Total** | | {CODE_POINTS} code + {WRITTEN_POINTS} written | **{TOTAL_POINTS}** |")
    return "\n".join(lines)

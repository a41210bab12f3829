"""Wrong-but-plausible answers lose points, each in its own question only.

Every mutant is the solution with one change a student could make (a forgotten ``zero_grad``, a curve
computed on the wrong split, an unsorted ``unique_ids``, ...). Each is graded on the questions that read the
changed file: the mutated question must lose points, every other question reading that file must not.
Two worker processes grade the mutants, each running the grading sessions in-process one after another.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from autograder import handout, points
from autograder.benchmark import copy_solution

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(1800)


@dataclass(frozen=True)
class Mutant:
    question: str  # "Ex1 Q2"
    file: str
    old: str
    new: str
    why: str


M = Mutant
MUTANTS: tuple[Mutant, ...] = (
    # Ex1 Q2: Net, train, test
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "return self.FC2(torch.sigmoid(self.FC1(x)))",
      "return self.FC2(torch.relu(self.FC1(x)))", "ReLU instead of the TP's sigmoid"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "self.FC2 = nn.Linear(128, 10)", "self.FC2 = nn.Linear(128, 10, bias=False)",
      "FC2 without its bias"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "        optimizer.zero_grad()\n        output = model(images)\n",
      "        output = model(images)\n", "gradients accumulate: no zero_grad"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "        optimizer.step()\n        if scheduler",
      "        if scheduler", "train() never steps the optimizer"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "    model.train()\n    total_loss, correct, seen = 0.0, 0, 0\n    for",
      "    total_loss, correct, seen = 0.0, 0, 0\n    for", "train() leaves the model in evaluation mode"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "loss = F.cross_entropy(output, labels)", "loss = F.nll_loss(output, labels)",
      "NLL on logits (no log-softmax)"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py", "    model.eval()\n    total_loss, correct, seen = 0.0, 0, 0\n    with",
      "    total_loss, correct, seen = 0.0, 0, 0\n    with", "test() in training mode (batch statistics change)"),
    M("Ex1 Q2", "exercise1/q2_module_mlp.py",
      'total_loss += F.cross_entropy(output, labels, reduction="sum").item()',
      "total_loss += F.cross_entropy(output, labels).item()", "test() sums batch means instead of averaging samples"),
    # Ex1 Q3: the summaries
    M("Ex1 Q3", "exercise1/q3_summaries.py", "test_loss, test_accuracy = test(model, device, loaders.test)",
      "test_loss, test_accuracy = test(model, device, loaders.train)", "test curves computed on the training set"),
    M("Ex1 Q3", "exercise1/q3_summaries.py", "test_loss, test_accuracy = test(model, device, loaders.test)",
      "test_loss, test_accuracy = test(model, device, loaders.val)", "test curves computed on the validation split"),
    M("Ex1 Q3", "exercise1/q3_summaries.py", 'writer.add_scalar("Loss/train", train_loss, epoch)',
      'writer.add_scalar("Loss/train", train_loss, epoch - 1)', "training loss logged one step early"),
    M("Ex1 Q3", "exercise1/q3_summaries.py", 'writer.add_scalar("Accuracy/test", test_accuracy, epoch)',
      'writer.add_scalar("Accuracy/test", test_loss, epoch)', "the test loss logged as the test accuracy"),
    M("Ex1 Q3", "exercise1/q3_summaries.py", "writer = SummaryWriter(log_dir=str(run.directory))",
      "writer = SummaryWriter()", "summaries written to the default folder, not the run's"),
    # Ex1 Q4: ResNet-18
    M("Ex1 Q4", "exercise1/q4_resnet.py", "self.layer4 = self._make_layer(512, num_blocks[3], stride=2)",
      "self.layer4 = self._make_layer(512, num_blocks[3], stride=1)", "the 4th stage keeps stride 1"),
    M("Ex1 Q4", "exercise1/q4_resnet.py", "return F.relu(out + self.shortcut(x))", "return F.relu(out)",
      "no residual addition"),
    M("Ex1 Q4", "exercise1/q4_resnet.py", "return F.relu(out + self.shortcut(x))",
      "return F.relu(out) + self.shortcut(x)", "ReLU before the addition"),
    M("Ex1 Q4", "exercise1/q4_resnet.py", "num_blocks: tuple[int, ...] = (2, 2, 2, 2)",
      "num_blocks: tuple[int, ...] = (2, 2, 3, 2)", "three blocks in the third stage"),
    M("Ex1 Q4", "exercise1/q4_resnet.py", "self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)",
      "self.maxpool = nn.Identity()", "ImageNet stem without its max-pool"),
    M("Ex1 Q4", "exercise1/q4_resnet.py",
      "                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),\n                nn.BatchNorm2d(planes),",
      "                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),", "shortcut without batch norm"),
    # Ex1 Q5: the grid
    M("Ex1 Q5", "exercise1/q5_grid_search.py", "cells[(row, lr)] = TableCell(result.status, result.test_accuracy)",
      "cells[(row, lr)] = TableCell(result.status, result.val_accuracy)", "the tables show validation accuracy"),
    M("Ex1 Q5", "exercise1/q5_grid_search.py", 'weight_decay=cell["weight_decay"])', "weight_decay=0.0)",
      "the cell's weight decay never reaches the optimizer"),
    M("Ex1 Q5", "exercise1/q5_grid_search.py", 'lr=cell["lr"], momentum=MOMENTUM', "lr=0.1, momentum=MOMENTUM",
      "every cell trained at the same learning rate"),
    M("Ex1 Q5", "exercise1/q5_grid_search.py",
      'loader = tensor_loader(data.train_images, data.train_labels, cell["batch_size"], train=True',
      "loader = tensor_loader(data.train_images, data.train_labels, 64, train=True", "the batch size ignored"),
    M("Ex1 Q5", "exercise1/q5_grid_search.py", "        if not math.isfinite(train_loss):\n",
      "        if False:\n", "a NaN training loss not counted as diverged"),
    # Ex2 Q2: TripletLoss
    M("Ex2 Q2", "utils/TripletLoss.py",
      'hardest_positive = distances.masked_fill(~positive[anchors], float("-inf")).argmax(1)',
      'hardest_positive = distances.masked_fill(~positive[anchors], float("inf")).argmin(1)',
      "batch-hard takes the easiest positive"),
    M("Ex2 Q2", "utils/TripletLoss.py",
      'hardest_negative = distances.masked_fill(~negative[anchors], float("inf")).argmin(1)',
      'hardest_negative = distances.masked_fill(~negative[anchors], float("-inf")).argmax(1)',
      "batch-hard takes the farthest negative"),
    M("Ex2 Q2", "utils/TripletLoss.py", "return F.relu(margin + d_ap - d_an)", "return margin + d_ap - d_an",
      "no hinge at 0"),
    M("Ex2 Q2", "utils/TripletLoss.py", "            terms = terms[terms > 0]", "            terms = terms",
      "batch-all averages over every triplet"),
    M("Ex2 Q2", "utils/TripletLoss.py", "(d_an < d_ap + margin)", "(d_an < d_ap + 10 * margin)",
      "semi-hard band without its upper bound"),
    M("Ex2 Q2", "utils/TripletLoss.py", "distances = pairwise_euclidean(features)",
      "distances = pairwise_euclidean(features) ** 2", "squared distances"),
    M("Ex2 Q2", "utils/TripletLoss.py", "    if soft_margin:\n        return F.softplus(d_ap - d_an)",
      "    if False:\n        return F.softplus(d_ap - d_an)", "soft margin ignored"),
    # Ex2 Q4: Market1501
    M("Ex2 Q4", "data.py", "        self.unique_ids = sorted({self.get_id(path) for name in labelled_splits",
      "        self.unique_ids = list({self.get_id(path) for name in labelled_splits", "unique_ids = list(set(ids))"),
    M("Ex2 Q4", "data.py", "if self.get_id(path) != JUNK_ID]", "if self.get_id(path) != -2]", "junk images kept"),
    M("Ex2 Q4", "data.py", '        return int(Path(file_path).name.split("_")[0])',
      '        return int(Path(file_path).name.split("_")[1][1])', "get_id returns the camera"),
    M("Ex2 Q4", "data.py", "        return image, self.labels[index]", "        return image, self.ids[index]",
      "__getitem__ returns the person id, not its label"),
    M("Ex2 Q4", "data.py", "        if self.transform is not None:\n            image = self.transform(image)",
      "        if False:\n            image = self.transform(image)", "__getitem__ ignores the transform"),
    # Ex2 Q5: ReIDNet
    M("Ex2 Q5", "network.py", "        features = self.FC1(self.backbone(x))", "        features = self.FC1[0](self.backbone(x))",
      "the embedding's batch norm built but never applied"),
    M("Ex2 Q5", "network.py", "        return torch.cat([logits, features], 1), logits, features",
      "        return torch.cat([features, logits], 1), logits, features", "concatenation in the other order"),
    M("Ex2 Q5", "network.py", "        return torch.cat([logits, features], 1), logits, features",
      "        return logits, torch.cat([logits, features], 1), features", "outputs not in the TP's order"),
    M("Ex2 Q5", "network.py", "        features = self.FC1(self.backbone(x))",
      "        features = torch.relu(self.FC1(self.backbone(x)))", "a ReLU after FC1: features are not FC1's output"),
    M("Ex2 Q5", "network.py", "self.backbone = torchvision.models.get_model(backbone, weights=None)",
      'self.backbone = torchvision.models.get_model("resnet34", weights=None)', "the backbone argument ignored"),
    # Ex2 Q6: train()
    M("Ex2 Q6", "main.py", "        scaler.step(optimizer)\n", "", "train() never steps the optimizer"),
    M("Ex2 Q6", "main.py", "        optimizer.zero_grad(set_to_none=True)\n        scaler.scale(loss).backward()",
      "        scaler.scale(loss).backward()\n        optimizer.zero_grad(set_to_none=True)",
      "zero_grad after backward: no gradient reaches the step"),
    M("Ex2 Q6", "main.py", "    model.train()\n    sums = ", "    sums = ", "train() leaves the model in evaluation mode"),
    M("Ex2 Q6", "main.py", "            _, logits, features = model(images)", "            features, logits, _ = model(images)",
      "the triplet term on the concatenation, not the features"),
    M("Ex2 Q6", "main.py", "name: total / max(1, num_batches) for", "name: total for", "the summed loss, not the mean"),
    # Ex2 Q7: checkpoint and evaluation_tp.py
    M("Ex2 Q7", "main.py", '"config": dict(config), **extra}', "**extra}", "the checkpoint holds no config"),
    M("Ex2 Q7", "main.py", '"epoch": epoch,\n', '"epoch": epoch + 1,\n', "the next epoch saved as the epoch"),
    M("Ex2 Q7", "evaluation_tp.py", "    return model.to(device).eval(), config",
      "    return model.to(device), config", "the reloaded model left in training mode"),
    M("Ex2 Q7", "evaluation_tp.py", 'for split in ("query", "gallery"))', 'for split in ("query", "query"))',
      "the queries searched among themselves"),
    M("Ex2 Q7", "evaluation_tp.py", '        raise ValueError(f"{path}: not a main.py checkpoint',
      '        raise KeyError(f"{path}: not a main.py checkpoint', "a foreign checkpoint gives a traceback"),
)


def apply(mutant: Mutant, destination: Path) -> Path:
    copy_solution(destination)
    target = destination / mutant.file
    text = target.read_text()
    assert text.count(mutant.old) == 1, f"mutant {mutant.why!r}: its text occurs {text.count(mutant.old)} times"
    target.write_text(text.replace(mutant.old, mutant.new))
    return destination


# Each worker grades its share of the mutants, one in-process pytest session each (PyTorch imported once).
WORKER = """
import json, sys
import pytest
for job in json.loads(sys.argv[1]):
    pytest.main(["-q", "-p", "no:cacheprovider", "--jobs=1", f"--submission={job['root']}",
                 f"--grades-dir={job['grades']}", f"--starter={job['starter']}", *job["tests"]])
"""


def test_each_mutant_loses_points_in_its_own_question_only(tmp_path):
    assert len(MUTANTS) >= 40 and {m.question for m in MUTANTS} == {q.key for q in points.QUESTIONS}
    starter = tmp_path / "starter"
    handout.write_handout(starter)
    jobs = []
    for index, mutant in enumerate(MUTANTS):
        readers = [q for q in points.QUESTIONS if mutant.file in q.files]
        jobs.append({"root": str(apply(mutant, tmp_path / f"m{index}")), "grades": str(tmp_path / f"g{index}"),
                     "starter": str(starter), "tests": [f"tests/graded/{q.test_module}" for q in readers]})
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(jobs[half::2])], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for half in (0, 1)]
    for worker in workers:
        worker.wait(timeout=1700)
    problems = []
    for index, mutant in enumerate(MUTANTS):
        path = tmp_path / f"g{index}" / "results.json"
        if not path.is_file():
            problems.append(f"{mutant.why}: not graded")
            continue
        scores: dict[str, float] = {}
        for test in json.loads(path.read_text())["tests"]:
            if "(written" not in test["name"]:
                key = " ".join(test["name"].split()[:2])
                scores[key] = scores.get(key, 0) + test["score"]
        for question in points.QUESTIONS:
            if mutant.file not in question.files:
                continue
            if question.key == mutant.question and scores.get(question.key, 0) >= question.points:
                problems.append(f"{mutant.question} kept full marks: {mutant.why}")
            if question.key != mutant.question and scores.get(question.key, 0) < question.points:
                problems.append(f"{question.key} lost points for a mutant of {mutant.question}: {mutant.why}")
    assert not problems, "\n".join(problems)

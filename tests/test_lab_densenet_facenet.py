"""The DenseNet / ResNeXt / FaceNet lab: the 52-convolution DenseNet, the lab's PNG layout and subset, per-epoch
kNN accuracies, the error images, triplets from chosen digits, checkpoints and --resume, one-line errors.

References are independent: convolutions counted by forward hooks, brute-force nearest-neighbour loops,
scikit-learn's kNN, the PNG files read back with PIL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from exercise1 import densenet_resnext
from exercise1.densenet_resnext import ARCHITECTURES, DenseBottleneck, densenet, densenet52, resnext32_16x8d
from exercise2 import facenet_knn
from utils.lab_digits import lab_subset, read_lab_digits
from utils.mnist import MnistData


# --------------------------------------------------------------------------- the networks
def convolutions_run(model: nn.Module, images: torch.Tensor) -> int:
    """Convolutions a forward pass really executes, counted by hooks (not by listing modules)."""
    calls = []
    hooks = [module.register_forward_hook(lambda *_: calls.append(1)) for module in model.modules()
             if isinstance(module, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(images)
    for hook in hooks:
        hook.remove()
    return len(calls)


def test_densenet52_has_52_convolutions_in_the_labs_four_block_skeleton():
    model = densenet52()
    images = torch.randn(2, 1, 28, 28)
    assert convolutions_run(model, images) == 52
    assert densenet_resnext.count_convolutions(model) == 52
    blocks = [stage for stage in model.features if isinstance(stage, nn.Sequential)]
    assert [len(block) for block in blocks] == [2, 2, 4, 16]
    assert all(isinstance(layer, DenseBottleneck) for block in blocks for layer in block)
    # The lab's skeleton: stem + [2, 5, 4, 6] + 3 transitions = 38 convolutions, + 1 linear = 39 layers.
    assert convolutions_run(densenet(), images) == 38
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1


def test_resnext_stem_is_a_1x1_convolution_to_64_and_shapes_hold():
    model = resnext32_16x8d().eval()
    assert (model.conv1.kernel_size, model.conv1.in_channels, model.conv1.out_channels) == ((1, 1), 1, 64)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        for build in ARCHITECTURES.values():
            assert build().eval()(images).shape == (2, 10)
        assert model.features(images).shape == (2, 1024, 7, 7)
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(grouped) == 9 and all(m.groups == 16 for m in grouped)
    assert [m.out_channels for m in grouped[::3]] == [128, 256, 512]  # bottleneck width doubles each stage


# --------------------------------------------------------------------------- tiny data in the lab's layout
def digit_images(count: int, seed: int, learnable: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``count`` fake digits (uint8 28 x 28) in the order 0, 1, ..., 9, 0...: noise, plus (when ``learnable``)
    a bright bar at row 2 + 2c for class c."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        if learnable:
            image[2 + 2 * label: 4 + 2 * label, 4:24] = 255
    return images, labels


def write_lab_layout(root: Path, train: int = 60, test: int = 30, csv_for_train: bool = True,
                     learnable: bool = True) -> dict:
    """``root/{train,test}/<class>/<id>.png``; ``train.csv`` (``id,label``) beside them when asked."""
    written = {}
    for split, count, seed in (("train", train, 1), ("test", test, 2)):
        images, labels = digit_images(count, seed, learnable)
        rows = []
        for index, (image, label) in enumerate(zip(images, labels)):
            path = root / split / str(label) / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            rows.append((index, label))
        written[split] = (images, labels)
        if split == "train" and csv_for_train:
            with (root / "train.csv").open("w", newline="") as handle:
                csv.writer(handle).writerows([("id", "label"), *rows])
    return written


def test_lab_layout_is_read_with_and_without_its_csv(tmp_path):
    written = write_lab_layout(tmp_path / "mnist")
    data = read_lab_digits(tmp_path / "mnist")
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("test", data.test_images, data.test_labels)):
        expected_images, expected_labels = written[split]
        assert images.shape == (len(expected_labels), 1, 28, 28) and images.dtype == torch.float32
        # The CSV gives the train order (its rows); the folder walk sorts by path: compare as sets of rows.
        pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
        got = sorted((label, image.tobytes()) for label, image in zip(labels.tolist(), pixels))
        want = sorted((label, image.tobytes()) for label, image in zip(expected_labels.tolist(), expected_images))
        assert got == want, split
    assert data.train_labels.tolist() == written["train"][1].tolist()  # in the CSV's order
    assert "2,000" not in data.source and "60 train / 30 test" in data.source


@pytest.mark.parametrize("content, message", [
    ("path,label\ntrain/0/0.png,7\n", r"train\.csv:2: label 7 but the image is in class folder"),
    ("id,label\n999,0\n", r"train\.csv:2: no image '999'"),
    ("id,label\n0,x\n", r"train\.csv:2: label 'x' is not a digit"),
    ("name_of_it,number\n0,0\n", r"train\.csv:1: expected a header naming the image column"),
])
def test_lab_csv_errors_name_the_file_and_line(tmp_path, content, message):
    write_lab_layout(tmp_path / "mnist", train=10, test=10)
    (tmp_path / "mnist" / "train.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        read_lab_digits(tmp_path / "mnist")


def test_lab_layout_bad_images_and_folders_are_one_line_errors(tmp_path):
    write_lab_layout(tmp_path / "mnist", train=10, test=10, csv_for_train=False)
    Image.new("L", (32, 32)).save(tmp_path / "mnist" / "test" / "3" / "big.png")
    with pytest.raises(ValueError, match=r"big\.png: expected a 28 x 28 digit, got 32 x 32"):
        read_lab_digits(tmp_path / "mnist")
    (tmp_path / "mnist" / "test" / "3" / "big.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"big\.png: not a readable image"):
        read_lab_digits(tmp_path / "mnist")
    with pytest.raises(SystemExit, match=r"^error: --lab-root .*nowhere: no such folder$"):
        densenet_resnext.main(["--dry-run", "--lab-root", str(tmp_path / "nowhere")])


def test_lab_subset_is_stratified_2000_by_1000_and_the_same_every_time():
    generator = torch.Generator().manual_seed(0)
    train_labels = torch.randint(0, 10, (5000,), generator=generator)
    test_labels = torch.randint(0, 10, (1800,), generator=generator)
    data = MnistData(torch.arange(5000.0).view(-1, 1, 1, 1), train_labels, torch.arange(1800.0).view(-1, 1, 1, 1),
                     test_labels, "fake")
    first, second = lab_subset(data), lab_subset(data)
    assert (len(first.train_labels), len(first.test_labels)) == (2000, 1000)
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.test_images, second.test_images)
    kept = first.train_images.flatten().long()
    assert len(set(kept.tolist())) == 2000 and torch.equal(train_labels[kept], first.train_labels)
    expected = torch.bincount(train_labels, minlength=10).float() * 2000 / 5000
    assert (torch.bincount(first.train_labels, minlength=10).float() - expected).abs().max() <= 1
    assert "lab subset 2,000 train / 1,000 test" in first.source


# --------------------------------------------------------------------------- kNN, centre points, triplets
def test_training_folds_are_stratified_whatever_the_order():
    cyclic = torch.arange(50) % 10  # 0, 1, ..., 9, 0, 1, ...: interleaved folds would put two digits per fold
    fold = facenet_knn.stratified_folds(cyclic, 5)
    for index in range(5):
        assert sorted(cyclic[fold == index].tolist()) == list(range(10))
    labels = torch.tensor([3, 3, 1, 3, 1, 1, 3, 2])
    fold = facenet_knn.stratified_folds(labels, 2)
    for label in (1, 2, 3):  # each class alternates between the two folds in its own order
        assert fold[labels == label].tolist() == [i % 2 for i in range(int((labels == label).sum()))]


def test_train_knn_and_centres_match_brute_force():
    generator = torch.Generator().manual_seed(3)
    embeddings, labels = torch.randn(40, 3, generator=generator), torch.randint(0, 4, (40,), generator=generator)
    predicted = facenet_knn.train_knn_predict(embeddings, labels, k=1, folds=5)
    fold = facenet_knn.stratified_folds(labels, 5).tolist()
    for item in range(40):
        others = [j for j in range(40) if fold[j] != fold[item]]
        nearest = min(others, key=lambda j: torch.dist(embeddings[item], embeddings[j]).item())
        assert predicted[item] == labels[nearest]
    centres = facenet_knn.class_centres(embeddings, labels)
    for label, centre in zip(sorted(set(labels.tolist())), centres.tolist()):
        members = [j for j in range(40) if labels[j] == label]
        mean = embeddings[members].mean(0)
        assert centre == min(members, key=lambda j: torch.dist(embeddings[j], mean).item())


@pytest.mark.parametrize("mode", ["random", "batch_hard"])
def test_triplets_come_only_from_the_chosen_classes(mode):
    labels = torch.arange(200) % 10
    batches, num_batches = facenet_knn.triplet_batches(labels, mode, [2, 5, 7], 16, 8, 0, torch.Generator())
    assert num_batches == 4  # 60 digits of the chosen classes, batches of 16
    seen = set()
    produced = list(batches(1))
    assert len(produced) == num_batches
    for batch in produced:
        if mode == "random":
            anchors, positives, negatives = batch
            assert (labels[anchors] == labels[positives]).all() and (anchors != positives).all()
            assert (labels[anchors] != labels[negatives]).all()
            batch = torch.cat(batch)
        seen |= set(labels[batch].tolist())
    assert seen == {2, 5, 7}


# --------------------------------------------------------------------------- the FaceNet run
def run_facenet(tmp_path: Path, *extra: str) -> dict:
    return facenet_knn.main(["--lab-root", str(tmp_path / "mnist"), "--epochs", "2", "--batch-size", "16",
                             "--num-instances", "4", "--k", "1", "--dim", "8", "--runs-dir", str(tmp_path / "runs"),
                             "--checkpoint-dir", str(tmp_path / "checkpoints"), *extra])


def test_facenet_logs_knn_per_epoch_and_saves_every_error_image(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    write_lab_layout(tmp_path / "mnist")
    results = run_facenet(tmp_path, "--run-name", "r")
    run = tmp_path / "runs" / "facenet_knn" / "r"
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert {"Loss/train", "Accuracy/train_knn", "Accuracy/test_knn", "Accuracy/test_centre"} <= set(row)
    assert history[-1]["Accuracy/test_knn"] == results["accuracy_test_knn"]

    # The saved model, embedded again and classified by scikit-learn's 1-NN, gives the logged accuracy.
    data = read_lab_digits(tmp_path / "mnist")
    model = facenet_knn.FaceNetEmbedding(8)
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "facenet_knn" / "r.pt", weights_only=True)["model"])
    with torch.no_grad():
        train, test = model.eval()(data.train_images), model(data.test_images)
    knn = KNeighborsClassifier(n_neighbors=1).fit(train.numpy(), data.train_labels.numpy())
    predicted = knn.predict(test.numpy())
    assert results["accuracy_test_knn"] == pytest.approx((predicted == data.test_labels.numpy()).mean())

    wrong = np.flatnonzero(predicted != data.test_labels.numpy())
    expected_names = {f"{i:05d}_true{data.test_labels[i].item()}_pred{predicted[i]}.png" for i in wrong}
    assert results["errors_test"] == len(wrong) and {p.name for p in (run / "pics").iterdir()} == expected_names
    for name in expected_names:
        pixels = np.asarray(Image.open(run / "pics" / name))
        index = int(name.split("_")[0])
        assert np.array_equal(pixels, (data.test_images[index, 0] * 255).round().to(torch.uint8).numpy())
    with (run / "errors.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["test_index"]) for row in rows] == wrong.tolist()
    assert (run / "errors.png").is_file() and (run / "centres.png").is_file()


def test_facenet_resume_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    write_lab_layout(tmp_path / "mnist")
    straight = run_facenet(tmp_path, "--run-name", "straight", "--triplets", "random")

    saved = facenet_knn.save_epoch

    def save_then_die(path, epoch, *args):
        saved(path, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt  # killed right after the first checkpoint

    monkeypatch.setattr(facenet_knn, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_facenet(tmp_path, "--run-name", "cut", "--triplets", "random")
    monkeypatch.setattr(facenet_knn, "save_epoch", saved)
    resumed = run_facenet(tmp_path, "--run-name", "cut", "--triplets", "random", "--resume")
    for key in ("accuracy_test_knn", "accuracy_train_knn", "accuracy_test_centre", "errors_test"):
        assert resumed[key] == straight[key]
    losses = [[row["Loss/train"] for row in json.loads((tmp_path / "runs" / "facenet_knn" / name / "metrics.json")
                                                       .read_text())["history"]] for name in ("straight", "cut")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    with pytest.raises(SystemExit, match=r"^error: --resume: .*cut\.pt was trained with --triplets random, "
                                         r"not batch_hard$"):
        run_facenet(tmp_path, "--run-name", "cut", "--resume")


def test_densenet_resume_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    write_lab_layout(tmp_path / "mnist", train=40, test=20)
    common = ["--lab-root", str(tmp_path / "mnist"), "--arch", "densenet", "--epochs", "2", "--batch-size", "16",
              "--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    straight = densenet_resnext.main([*common, "--run-name", "straight"])
    saved = densenet_resnext.save_epoch

    def save_then_die(path, epoch, *args):
        saved(path, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(densenet_resnext, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        densenet_resnext.main([*common, "--run-name", "cut"])
    monkeypatch.setattr(densenet_resnext, "save_epoch", saved)
    resumed = densenet_resnext.main([*common, "--run-name", "cut", "--resume"])
    assert resumed["accuracy_test"] == straight["accuracy_test"]
    assert resumed["loss_test"] == pytest.approx(straight["loss_test"], rel=1e-5)
    metrics_path = tmp_path / "runs" / "densenet_resnext" / "cut" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert resumed["convolutions"] == 38 and resumed["test_size"] == 20
    # Resuming a finished run trains nothing, gives the same results and keeps the final values.
    assert densenet_resnext.main([*common, "--run-name", "cut", "--resume"]) == resumed
    assert json.loads(metrics_path.read_text())["final"] == metrics["final"] != {}


@pytest.mark.parametrize("argv, message", [
    (["--resume"], r"--resume needs --run-name"),
    (["--resume", "--run-name", "never"], r"--resume: no checkpoint .*never\.pt"),
    (["--triplet-classes", "3"], r"--triplet-classes expects at least two distinct digits 0-9, got 3"),
    (["--triplet-classes", "1", "12"], r"--triplet-classes expects"),
    (["--triplet-classes", "1", "2"], r"--triplet-classes: 2 digits cannot fill a batch of 8 digits"),
    (["--k", "0"], r"--k must be > 0"),
    (["--seed", "-1"], r"--seed must be >= 0"),
    (["--num-instances", "1"], r"--num-instances must be >= 2"),
    (["--batch-size", "20"], r"--batch-size 20 must be a multiple of --num-instances 8"),
])
def test_facenet_bad_flags_are_one_line_errors(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=rf"^error: {message}"):
        facenet_knn.main(["--dry-run", "--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), *argv])


def test_foreign_and_corrupt_checkpoints_are_one_line_errors(tmp_path):
    write_lab_layout(tmp_path / "mnist", train=20, test=10)
    common = ["--lab-root", str(tmp_path / "mnist"), "--epochs", "1", "--batch-size", "16", "--runs-dir",
              str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    densenet_resnext.main([*common, "--arch", "densenet", "--run-name", "dense"])
    saved = tmp_path / "checkpoints" / "densenet_resnext" / "dense.pt"
    with pytest.raises(SystemExit, match=r"^error: --resume: .*dense\.pt was trained with --arch densenet, "
                                         r"not densenet52$"):
        densenet_resnext.main([*common, "--arch", "densenet52", "--run-name", "dense", "--resume"])
    foreign = tmp_path / "checkpoints" / "facenet_knn" / "dense.pt"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(saved.read_bytes())
    with pytest.raises(SystemExit, match=r"^error: --resume: .*dense\.pt has no --triplets setting: not a "
                                         r"checkpoint of this script$"):
        facenet_knn.main([*common, "--run-name", "dense", "--resume"])
    saved.write_bytes(b"truncated")
    with pytest.raises(SystemExit, match=r"^error: --resume: .*dense\.pt: not a readable PyTorch checkpoint"):
        densenet_resnext.main([*common, "--arch", "densenet", "--run-name", "dense", "--resume"])
    (tmp_path / "a_file").write_text("")  # an unusable --checkpoint-dir is refused before the first step
    with pytest.raises(SystemExit, match=r"^error: --checkpoint-dir .*a_file/facenet_knn: not writable"):
        facenet_knn.main([*common, "--checkpoint-dir", str(tmp_path / "a_file")])


def test_a_last_batch_of_one_digit_trains(tmp_path):
    # 17 digits in batches of 16: the last batch holds one digit; batch norm still has 3 x 3 maps to average.
    write_lab_layout(tmp_path / "mnist", train=17, test=10)
    results = densenet_resnext.main(["--lab-root", str(tmp_path / "mnist"), "--arch", "densenet", "--epochs", "1",
                                     "--batch-size", "16", "--runs-dir", str(tmp_path), "--checkpoint-dir",
                                     str(tmp_path)])
    assert results["train_size"] == 17 and 0 <= results["accuracy_test"] <= 1
    results = facenet_knn.main(["--lab-root", str(tmp_path / "mnist"), "--triplets", "random", "--epochs", "1",
                                "--batch-size", "16", "--dim", "8", "--runs-dir", str(tmp_path),
                                "--checkpoint-dir", str(tmp_path)])  # one anchor left: three images
    assert results["train_size"] == 17


def test_a_diverging_densenet_stops_with_one_line(tmp_path):
    write_lab_layout(tmp_path / "mnist", train=40, test=20)
    with pytest.raises(SystemExit, match=r"^error: the training loss became (nan|inf)"):
        densenet_resnext.main(["--lab-root", str(tmp_path / "mnist"), "--arch", "densenet", "--epochs", "3",
                               "--batch-size", "8", "--lr", "1e30", "--runs-dir", str(tmp_path),
                               "--checkpoint-dir", str(tmp_path)])


# --------------------------------------------------------------------------- --dry-run on the embedded digits
def test_facenet_knn_dry_run(tmp_path):
    results = facenet_knn.main(["--dry-run", "--triplets", "semi_hard", "--batch-size", "16", "--num-instances", "4",
                                "--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path), "--run-name", "d"])
    run = tmp_path / "facenet_knn" / "d"
    assert (run / "errors.png").is_file() and (run / "metrics.json").is_file()
    assert 0 <= results["accuracy_test_knn"] <= 1 and 0 <= results["accuracy_test_centre"] <= 1


def test_densenet_resnext_dry_run(tmp_path):
    results = densenet_resnext.main(["--dry-run", "--arch", "resnext32_16x8d", "--batch-size", "8",
                                     "--runs-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path)])
    assert results["convolutions"] == 31 and 0 <= results["accuracy_test"] <= 1


# --------------------------------------------------------------------------- the report's answers
def test_every_figure_the_answers_quote_is_filled_from_real_runs(tmp_path):
    """Tiny real runs of every experiment the answers quote: each {placeholder} of the lab's answer files gets a
    value, and the values are the runs' own (errors per 1,000, votes read back from errors.csv)."""
    import re

    from report import sections
    from report.runs import Notices, RunIndex

    write_lab_layout(tmp_path / "mnist", train=40, test=20, learnable=False)  # noise: errors to analyse
    outputs = ["--runs-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "checkpoints")]
    lab = ["--lab-root", str(tmp_path / "mnist"), "--lab-subset", "--epochs", "1", "--batch-size", "16", *outputs]
    for arch in sections.ARCHITECTURES:
        densenet_resnext.main([*lab, "--arch", arch, "--run-name", arch])
    densenet_resnext.main([*(flag for flag in lab if flag != "--lab-subset"), "--arch", "densenet52",
                           "--run-name", "all-digits"])
    for mode in sections.TRIPLET_MODES:
        facenet_knn.main([*lab, "--triplets", mode, "--num-instances", "4", "--dim", "8", "--run-name", mode])
    facenet_knn.main([*lab, "--triplet-classes", "0", "1", "--num-instances", "8", "--dim", "8", "--run-name", "q3"])

    index = RunIndex(tmp_path / "runs", notices=Notices(echo=None))
    ctx = sections.BuildContext(index, tmp_path / "out", Path(sections.__file__).parent / "answers", None,
                                index.notices)
    mode_runs = {mode: index.select("facenet_knn", lambda run, mode=mode: run.name == mode)
                 for mode in sections.TRIPLET_MODES}
    fields = sections.facenet_fields(mode_runs, index.select("facenet_knn", lambda run: run.name == "q3"))
    for name in (*sections.ARCHITECTURES, "all-digits"):
        fields.update(sections.lab_architecture_fields(index.select("densenet_resnext",
                                                                    lambda run, name=name: run.name == name)))
    labs = {section.key: section for section in sections.LABS}
    for text in (sections.render_lab_architectures(ctx, labs["lab_architectures"]),
                 sections.render_lab_facenet(ctx, labs["lab_facenet"])):
        assert "**?**" not in text and "not written yet" not in text
    for name in (*sections.LAB_ARCHITECTURE_ANSWERS, *sections.FACENET_ANSWERS):
        placeholders = set(re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", (ctx.answers_dir / name).read_text()))
        assert placeholders - set(fields) - {"architectures_ranking"} == set(), name  # (made by the render)

    results = json.loads((tmp_path / "runs" / "facenet_knn" / "batch_hard" / "results.json").read_text())
    assert fields["batch_hard_errors"] == str(results["errors_test"])
    assert fields["fn_errors_per_1000"] == f"{1000 * results['errors_test'] / 20:.1f}"
    assert fields["fn_bar"] == ("meets" if results["errors_test"] * 1000 / 20 <= 30 else "misses")
    with (tmp_path / "runs" / "facenet_knn" / "batch_hard" / "errors.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == results["errors_test"] > 0
    assert fields["fn_errors_unanimous"] == str(sum(row["votes_for_predicted_of_5"] == "5" for row in rows))
    sizes, errors = results["test_digits_per_class"], results["errors_per_class"]
    assert fields["fn_seen"] == f"{100 * (1 - (errors[0] + errors[1]) / (sizes[0] + sizes[1])):.2f}"


def test_confusions_are_summarised_from_the_error_rows():
    from report.sections import confusions_text

    rows = [{"true": t, "predicted": p} for t, p in (("4", "9"), ("9", "8"), ("4", "9"), ("1", "7"), ("9", "8"),
                                                     ("4", "9"), ("3", "5"))]
    assert confusions_text(rows) == "4 read as 9 (3), 9 read as 8 (2) and 2 other errors"
    assert confusions_text(rows[:2]) == "2 different confusions, none repeated"
    assert confusions_text([]) == "none"

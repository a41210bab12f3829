"""What the sandboxed child does for each question: call the student's code on the parent's inputs and
return plain data (tensors, numbers, strings). No expected value is here: the parent compares.

Each probe runs on its own: its exception is recorded (type, first line, innermost submission line) and
the next probe runs. ``QUESTIONS[key]`` is ``(install_doubles, [probe, ...])``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn


CPU = torch.device("cpu")
LABEL = "Ex"  # the handout's stubs raise NotImplementedError("Ex1 Q2: Net.forward")


class Context:
    def __init__(self, config: dict[str, Any], inputs: dict[str, Any]):
        self.repo = Path(config["repo"])
        self.data = Path(config["data"])
        self.out = Path(config["out"])
        self.inputs = inputs
        self.cache: dict[str, Any] = {}


def doubles(name: str):
    """The test-double module ``doubles_<name>.py`` shipped to this child (only the ones its question needs)."""
    return sys.modules[f"_grader_doubles_{name}"]


def student(module: str):
    return importlib.import_module(module)


def replace(module: str, **names: Any) -> None:
    """Set ``names`` on ``module`` (the handed-out version of another question's file)."""
    target = importlib.import_module(module)
    for name, value in names.items():
        setattr(target, name, value)


def numbers(values: Any) -> list[float]:
    return [float(value) for value in values]


def describe_linear(module: Any) -> dict[str, Any]:
    if isinstance(module, nn.Sequential) and len(module) > 0:
        module = module[0]
    if not isinstance(module, nn.Linear):
        return {"type": type(module).__name__}
    return {"type": "Linear", "in": module.in_features, "out": module.out_features, "bias": module.bias is not None}


def parameter_summary(model: nn.Module) -> dict[str, Any]:
    shapes = sorted(list(p.shape) for p in model.parameters())
    return {"count": sum(p.numel() for p in model.parameters()), "shapes": shapes}


# --------------------------------------------------------------------------- Ex1 Q2
def ex1_q2_net_layers(ctx: Context) -> Any:
    net = student("exercise1.q2_module_mlp").Net()
    return {"FC1": describe_linear(getattr(net, "FC1", None)), "FC2": describe_linear(getattr(net, "FC2", None)),
            **parameter_summary(net)}


def ex1_q2_net_forward(ctx: Context) -> Any:
    net = student("exercise1.q2_module_mlp").Net()
    weights = ctx.inputs["net"]
    with torch.no_grad():
        net.FC1.weight.copy_(weights["fc1_w"])
        net.FC1.bias.copy_(weights["fc1_b"])
        net.FC2.weight.copy_(weights["fc2_w"])
        net.FC2.bias.copy_(weights["fc2_b"])
        x = ctx.inputs["x"]
        return {"image": net(x), "flat": net(x.reshape(len(x), -1))}


def ex1_q2_train(ctx: Context) -> Any:
    train = student("exercise1.q2_module_mlp").train
    setting = ctx.inputs["train"]
    torch.manual_seed(setting["seed"])
    model = doubles("mlp").TinyClassifier()
    model.eval()  # the training function must switch to training mode itself
    optimizer = torch.optim.SGD(model.parameters(), lr=setting["lr"], momentum=setting["momentum"],
                                weight_decay=setting["weight_decay"])
    returned = train(model, CPU, list(setting["batches"]), optimizer)
    return {"returned": numbers(returned), "state": model.state_dict()}


def ex1_q2_test(ctx: Context) -> Any:
    test = student("exercise1.q2_module_mlp").test
    setting = ctx.inputs["test"]
    torch.manual_seed(setting["seed"])
    model = doubles("mlp").TinyClassifier()
    model.train()  # the test function must switch to evaluation mode itself
    returned = test(model, CPU, list(setting["batches"]))
    return {"returned": numbers(returned), "state": model.state_dict()}


def ex1_q2_doubles(ctx: Context) -> None:
    return None


# --------------------------------------------------------------------------- Ex1 Q3
def ex1_q3_doubles(ctx: Context) -> None:
    q3 = doubles("q3")
    replace("exercise1.q2_module_mlp", Net=q3.Q3Net, train=q3.q3_train, test=q3.q3_test)


def ex1_q3_run(ctx: Context) -> Any:
    main = student("exercise1.q3_summaries").main
    main(["--epochs", "2", "--batch-size", "16", "--seed", "0", "--device", "cpu",
          "--data-root", str(ctx.data / "mnist"), "--runs-dir", str(ctx.out / "runs"), "--run-name", "graded"])
    return dict(doubles("q3").CALLS)


# --------------------------------------------------------------------------- Ex1 Q4
def resnet(ctx: Context, stem: str) -> nn.Module:
    return student("exercise1.q4_resnet").ResNet18(num_classes=10, in_channels=1, stem=stem)


def ex1_q4_parameters(ctx: Context) -> Any:
    return {stem: parameter_summary(resnet(ctx, stem)) for stem in ("imagenet", "cifar")}


def ex1_q4_stages(ctx: Context) -> Any:
    shapes = {}
    for stem in ("imagenet", "cifar"):
        model = resnet(ctx, stem).eval()
        seen: dict[str, list[int]] = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            getattr(model, name).register_forward_hook(
                lambda module, args, output, name=name: seen.__setitem__(name, list(output.shape)))
        with torch.no_grad():
            output = model(ctx.inputs["x28"])
        shapes[stem] = {**seen, "output": list(output.shape)}
    return shapes


def ex1_q4_block(ctx: Context) -> Any:
    block_class = student("exercise1.q4_resnet").BasicBlock
    block = block_class(8, 8, 1).eval()
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.zero_()
                module.bias.zero_()
        identity = block(ctx.inputs["block_x"])
        down = block_class(8, 16, 2).eval()(ctx.inputs["block_x"])
    return {"identity": identity, "down_shape": list(down.shape)}


def ex1_q4_forward(ctx: Context) -> Any:
    model = resnet(ctx, "imagenet").eval()
    with torch.no_grad():
        return {"logits": model(ctx.inputs["x28"])}


def ex1_q4_fit(ctx: Context) -> Any:
    torch.manual_seed(0)
    model = resnet(ctx, "imagenet").train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = ctx.inputs["fit_x"], ctx.inputs["fit_y"]
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses}


# --------------------------------------------------------------------------- Ex1 Q5
def ex1_q5_doubles(ctx: Context) -> None:
    grid, stand_ins = ctx.inputs["grid"], doubles("grid")
    stand_ins.GRID["fingerprints"] = {tuple(cell): value for cell, value in grid["fingerprints"]}
    stand_ins.GRID["diverge"] = tuple(grid["diverge"])
    replace("exercise1.q2_module_mlp", train=stand_ins.grid_train, test=stand_ins.grid_test)
    replace("exercise1.q4_resnet", ResNet18=stand_ins.GridNet)
    q4 = importlib.import_module("exercise1.q4_resnet")
    for name, value in (("train", stand_ins.grid_train), ("test", stand_ins.grid_test)):
        if hasattr(q4, name):  # a Q4 that re-exports Q2's loop
            setattr(q4, name, value)


def ex1_q5_run(ctx: Context) -> Any:
    grid = ctx.inputs["grid"]
    main = student("exercise1.q5_grid_search").main
    main(["--table", "both", "--lrs", *map(str, grid["lrs"]), "--weight-decays", *map(str, grid["weight_decays"]),
          "--batch-sizes", *map(str, grid["batch_sizes"]), "--epochs", "1", "--train-size", "0",
          "--workers", "1", "--out", str(ctx.out / "grid"), "--data-root", str(ctx.data / "mnist"),
          "--device", "cpu", "--seed", "0"])
    record = doubles("grid").GRID
    return {"built": int(record["built"]), "trained": [list(cell) for cell in record["trained"]]}


# --------------------------------------------------------------------------- Ex2 Q2
def ex2_q2_cases(ctx: Context) -> Any:
    triplet_loss_class = student("utils.TripletLoss").TripletLoss
    results = []
    for case in ctx.inputs["cases"]:
        try:
            features = case["features"].clone().requires_grad_(True)
            loss_fn = triplet_loss_class(margin=case["margin"], mining=case["mining"], soft_margin=case["soft_margin"])
            loss = loss_fn(features, case["labels"])
            loss.backward()
            grad = features.grad if features.grad is not None else torch.zeros_like(features)
            results.append({"ok": True, "loss": float(loss), "grad": grad.detach(),
                            "grad_is_none": features.grad is None})
        except BaseException as error:  # noqa: BLE001 - one case's failure is recorded, the others still run
            results.append(failure_record(error, ctx))
    return results


# --------------------------------------------------------------------------- Ex2 Q4
def market(ctx: Context, split: str, transform: Callable | None = None):
    return student("data").Market1501(str(ctx.data / "market"), split, transform=transform)


def ex2_q4_get_id(ctx: Context) -> Any:
    dataset_class = student("data").Market1501
    paths = [str(ctx.data / "market" / name) for name in ctx.inputs["names"]]
    try:  # get_id(self, file_path) should not need the folder: try it on an instance without __init__
        bare = object.__new__(dataset_class)
        return [int(bare.get_id(path)) for path in paths]
    except AttributeError:
        dataset = market(ctx, "train")
        return [int(dataset.get_id(path)) for path in paths]


def image_summary(image: Any) -> torch.Tensor:
    """What the grader's transform makes of an image: RGB or not, its size and per-channel means."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or getattr(image, "mode", "") != "RGB":
        return torch.zeros(6, dtype=torch.float64)
    return torch.tensor([1.0, float(image.size[0]), float(image.size[1]), *array.reshape(-1, 3).mean(0)],
                        dtype=torch.float64)


def split_structure(split: str) -> Callable[[Context], Any]:
    def probe(ctx: Context) -> Any:
        dataset = market(ctx, split)
        root = str(ctx.data / "market")
        return {"len": len(dataset), "imgs": [os.path.relpath(str(path), root) for path in dataset.imgs],
                "unique_ids": [int(value) for value in dataset.unique_ids]}
    probe.__name__ = f"ex2_q4_structure_{split}"
    return probe


def split_items(split: str) -> Callable[[Context], Any]:
    def probe(ctx: Context) -> Any:
        dataset = market(ctx, split, transform=image_summary)
        items = [dataset[index] for index in range(len(dataset))]
        return {"labels": [int(label) for _, label in items],
                "images": torch.stack([torch.as_tensor(image, dtype=torch.float64).reshape(-1)[:6]
                                       for image, _ in items]) if items else torch.zeros(0, 6)}
    probe.__name__ = f"ex2_q4_items_{split}"
    return probe


# --------------------------------------------------------------------------- Ex2 Q5
def reid_net(ctx: Context) -> nn.Module:
    if "model" not in ctx.cache:
        setting = ctx.inputs["net"]
        torch.manual_seed(0)
        ctx.cache["model"] = student("network").ReIDNet(setting["num_classes"], backbone="resnet50",
                                                        feat_dim=setting["feat_dim"])
    return ctx.cache["model"]


def ex2_q5_outputs(ctx: Context) -> Any:
    model = reid_net(ctx).eval()
    captured = {}
    handle = model.FC1.register_forward_hook(lambda module, args, output: captured.__setitem__("fc1", output))
    with torch.no_grad():
        outputs = model(ctx.inputs["x"])
        handle.remove()
        outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
        result = {"count": len(outputs), "outputs": [o.detach() for o in outputs if torch.is_tensor(o)]}
        if len(outputs) == 3 and torch.is_tensor(outputs[2]):
            result["fc2_of_features"] = model.FC2(outputs[2])
        if torch.is_tensor(captured.get("fc1")):
            result["fc1_output"] = captured["fc1"]
    return result


def ex2_q5_structure(ctx: Context) -> Any:
    model = reid_net(ctx)
    heads = sum(p.numel() for p in model.FC1.parameters()) + sum(p.numel() for p in model.FC2.parameters())
    return {"total": sum(p.numel() for p in model.parameters()), "heads": heads,
            "FC1": describe_linear(model.FC1), "FC2": describe_linear(model.FC2)}


def ex2_q5_gradients(ctx: Context) -> Any:
    model = reid_net(ctx).train()
    outputs = model(ctx.inputs["x"])
    sum(output.sum() for output in outputs if torch.is_tensor(output)).backward()
    return {"without_gradient": [name for name, p in model.named_parameters() if p.grad is None],
            "parameters": sum(1 for _ in model.parameters())}


# --------------------------------------------------------------------------- Ex2 Q6
def ex2_q6_train(ctx: Context) -> Any:
    train = student("main").train
    setting = ctx.inputs["train"]
    torch.manual_seed(setting["seed"])
    stand_ins = doubles("reid")
    model = stand_ins.TrainProbeNet(setting["num_classes"], setting["feat_dim"])
    model.eval()  # train() must switch to training mode itself
    criterion = stand_ins.ProbeCriterion()
    optimizer = torch.optim.SGD(model.parameters(), lr=setting["lr"], momentum=setting["momentum"])
    returned = train(model, list(setting["batches"]), criterion, optimizer, CPU)
    plain = {str(key): float(value) for key, value in dict(returned).items()
             if isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1)}
    return {"returned": plain, "state": model.state_dict(), "criterion_calls": criterion.calls}


# --------------------------------------------------------------------------- Ex2 Q7
def ex2_q7_doubles(ctx: Context) -> None:
    replace("network", ReIDNet=doubles("eval").EvalProbeNet)
    replace("data", Market1501=doubles("eval").MarketDouble)


def probe_model(ctx: Context) -> tuple[nn.Module, torch.optim.Optimizer]:
    return doubles("eval").checkpoint_model(ctx.inputs["checkpoint"])


def checkpoint_path(ctx: Context) -> Path:
    return ctx.out / "checkpoints" / "graded.pt"


def ex2_q7_save(ctx: Context) -> Any:
    save_checkpoint = student("main").save_checkpoint
    model, optimizer = probe_model(ctx)
    path = checkpoint_path(ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(str(path), model, optimizer, 3, dict(ctx.inputs["checkpoint"]["config"]))
    ctx.cache["saved"] = path.is_file()
    return {"state": model.state_dict()}


def reload_source(ctx: Context) -> Path:
    """The student's own checkpoint when their save worked, else one in the documented format."""
    if ctx.cache.get("saved"):
        return checkpoint_path(ctx)
    model, optimizer = probe_model(ctx)
    path = ctx.out / "checkpoints" / "documented.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                "config": dict(ctx.inputs["checkpoint"]["config"])}, path)
    return path


def ex2_q7_reload(ctx: Context) -> Any:
    load = student("evaluation_tp").load_reid_checkpoint
    model, config = load(str(reload_source(ctx)), "cpu")
    return {"state": model.state_dict(), "training": bool(model.training), "type": type(model).__name__,
            "config": {str(key): value for key, value in dict(config).items() if isinstance(value, (int, float, str))}}


def ex2_q7_evaluate(ctx: Context) -> Any:
    evaluation = student("evaluation_tp")
    returned = evaluation.main(["--checkpoint", str(reload_source(ctx)), "--data-root", str(ctx.data / "market"),
                                "--device", "cpu", "--runs-dir", str(ctx.out / "runs"), "--run-name", "graded"])
    plain = {key: float(value) for key, value in dict(returned).items() if key in ("rank1", "rank5", "rank10", "mAP")}
    return {"returned": plain}


def ex2_q7_bad_checkpoints(ctx: Context) -> Any:
    evaluation = student("evaluation_tp")
    folder = ctx.out / "bad"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
    (folder / "corrupt.pt").write_bytes(os.urandom(256))
    results = {}
    for name in ("foreign.pt", "corrupt.pt"):
        outcome = {"exited": False, "message": "", "raised": ""}
        try:
            evaluation.main(["--checkpoint", str(folder / name), "--data-root", str(ctx.data / "market"),
                             "--device", "cpu", "--runs-dir", str(ctx.out / "runs"), "--run-name", f"bad-{name}"])
        except SystemExit as error:
            outcome.update(exited=True, message=str(error.code)[:400], code_is_text=isinstance(error.code, str))
        except NotImplementedError:
            raise  # a stub: "not implemented", not "a traceback"
        except BaseException as error:  # noqa: BLE001
            outcome["raised"] = type(error).__name__
        results[name] = outcome
    return results


def no_doubles(ctx: Context) -> None:
    return None


QUESTIONS: dict[str, tuple[Callable[[Context], None], list[Callable[[Context], Any]]]] = {
    "ex1_q2": (no_doubles, [ex1_q2_net_layers, ex1_q2_net_forward, ex1_q2_train, ex1_q2_test]),
    "ex1_q3": (ex1_q3_doubles, [ex1_q3_run]),
    "ex1_q4": (no_doubles, [ex1_q4_parameters, ex1_q4_stages, ex1_q4_block, ex1_q4_forward, ex1_q4_fit]),
    "ex1_q5": (ex1_q5_doubles, [ex1_q5_run]),
    "ex2_q2": (no_doubles, [ex2_q2_cases]),
    "ex2_q4": (no_doubles, [ex2_q4_get_id, *(probe(split) for split in ("train", "query", "gallery")
                                              for probe in (split_structure, split_items))]),
    "ex2_q5": (no_doubles, [ex2_q5_outputs, ex2_q5_structure, ex2_q5_gradients]),
    "ex2_q6": (no_doubles, [ex2_q6_train]),
    "ex2_q7": (ex2_q7_doubles, [ex2_q7_save, ex2_q7_reload, ex2_q7_evaluate, ex2_q7_bad_checkpoints]),
}


# --------------------------------------------------------------------------- recording failures
def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def failure_record(error: BaseException, ctx: Context) -> dict[str, Any]:
    """What the parent learns of a failure: kind, exception type, first line, innermost submission line."""
    chain = _chain(error)
    repo = str(ctx.repo) + os.sep
    where = ""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.startswith(repo):
            where = f"{frame.filename[len(repo):]}:{frame.lineno}"
            break
    if any(isinstance(link, NotImplementedError) for link in chain):
        link = next(link for link in chain if isinstance(link, NotImplementedError))
        kind, detail = "not_implemented", str(link)
    elif any(isinstance(link, MemoryError) for link in chain) or "can't allocate memory" in str(error):
        kind, detail = "memory", ""
    else:
        kind, detail = "error", str(error)
    if isinstance(error, SystemExit):
        detail = str(error.code)
    lines = [line for line in detail.splitlines() if line.strip()]
    return {"ok": False, "kind": kind, "type": type(error).__name__, "line": lines[0][:300] if lines else "",
            "where": where}


def run_question(key: str, config: dict[str, Any]) -> dict[str, Any]:
    inputs = torch.load(Path(config["data"]) / "inputs.pt", map_location="cpu", weights_only=True)
    ctx = Context(config, inputs)
    install, probes = QUESTIONS[key]
    results: dict[str, Any] = {}
    try:
        install(ctx)
    except BaseException as error:  # noqa: BLE001 - a handed-out file that does not import: every probe fails
        record = failure_record(error, ctx)
        record["kind"] = "setup"
        return {"probes": {probe.__name__: record for probe in probes}}
    for probe in probes:
        try:
            results[probe.__name__] = {"ok": True, "value": probe(ctx)}
        except BaseException as error:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from student code too
            results[probe.__name__] = failure_record(error, ctx)
    return {"probes": results, "files": json.dumps(sorted(str(p.relative_to(ctx.out)) for p in ctx.out.rglob("*")
                                                          if p.is_file())[:200])}

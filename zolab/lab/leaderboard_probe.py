"""The leaderboard's probe: on a testbed's model and a training batch, what each rule's step needs and
costs, measured once; ``zolab leaderboard --run`` keeps it in ``<root>/leaderboard_<testbed>/probe.json``.

Per ZO rule (the optimizer built as a run builds it: the rule's defaults, the protocol's μ, bound to the model;
stepped as ZOModule steps it, with ``full=`` over the data module's ``full_batches()`` where the rule reads it):

    forwards_per_step    the forwards the optimizer counts (``opt.zo["forwards"]``) over 3 steps, / 3
    scale_free           whether 3 steps from the same start and seed move the parameters as far on 100 f as on f
                         (the norms within a factor 10; a plain ZO-SGD step moves 100×): sign and Adam-like rules.
                         The leaderboard scales such a rule's lr grid (``scale_free_factor``)
    step_ms              the least wall-clock of one ``opt.step`` (its forwards included) over ``rounds`` rounds
                         in which every method steps once, after a warm-up (timeit's convention: on a shared
                         machine the other times include waits for a core); ``step_vs_reference``: over MeZO's
                         (``zo_sgd``)
    memory_vs_inference  the peak bytes of the tensors alive during two steps (``PeakMemory``: parameters, batch and
                         everything allocated, the optimizer's state included) over the peak of two forward passes

A rule whose step is forward-mode passes (the ``jvp`` scheme: Forward-Grad) is charged r_jvp forwards a pass, as
Adam by backprop is charged its backward: ``passes_per_step`` (the optimizer's count) × ``jvp_ratio``, the median
time of a JVP of the loss (``torch.func.jvp``, a Gaussian tangent on every trained tensor) over that of a forward.

Adam by backprop (``first_order``): ``forwards_per_step`` is its charge, the median time of forward + backward over
that of a forward (least times; the forward as ``torch.no_grad`` inference); its step adds
``optimizer.step``. ``starts``: per seed, the untrained model's validation and test metrics (the claims' power
rule measures the reference's movement from them; tuning never reads test).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
import os
import platform
import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from zolab.lab.final_test import evaluate
from zolab.lab.full_batch import FullBatch, wanted_evaluators

REFERENCE = "zo_sgd"
SCALE = 100.0  # the loss multiplier of the scale test


class PeakMemory(TorchDispatchMode):
    """The peak total bytes of the tensor storages alive while the mode is on: ``tensors`` (given at entry) and
    every storage an operation allocates (an output whose storage is none of its inputs'), until it is freed."""

    def __init__(self, tensors=()):
        super().__init__()
        self.live: dict[int, int] = {}
        self.peak = 0
        for t in tensors:
            self._add(t.untyped_storage())

    def _add(self, storage) -> None:
        key = storage.data_ptr()
        if key in self.live or storage.nbytes() == 0:
            return
        self.live[key] = storage.nbytes()
        weakref.finalize(storage, self.live.pop, key, None)
        self.peak = max(self.peak, sum(self.live.values()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = tree_flatten((args, kwargs))[0]
        inputs = {None} | {_pointer(t) for t in flat if isinstance(t, torch.Tensor)}  # None: no storage to count
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta" and _pointer(t) not in inputs:
                self._add(t.untyped_storage())
        return out


def _pointer(t: torch.Tensor) -> int | None:
    """The tensor's storage address; None for a tensor without real storage (forward-mode AD's dual wrappers under
    ``torch.func.jvp``: the numbers they carry are allocated, and counted, as ordinary tensors)."""
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:
        return None


def peak_bytes(fn, tensors) -> int:
    with PeakMemory(tensors) as tracker:
        fn()
    return tracker.peak


def resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build(config, root, seed_args: list[str]):
    """The CLI's model and datamodule of ``config`` (no logger, callbacks or checkpoints; the runs root for caches)."""
    from zolab.lab.cli import cli_main

    return cli_main(["--config", str(config), f"--trainer.default_root_dir={root}", "--trainer.logger=false",
                     "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false", *seed_args], run=False)


def make(cls, task, mu: float, budget: int, lr: float = 1e-4):
    """The rule on the task's trainable tensors as ZOModule builds it (``total_steps``: the budget, for a rule
    that takes it), bound to the task."""
    kwargs = dict(lr=lr, mu=mu, seed=0)
    if "total_steps" in inspect.signature(cls).parameters:
        kwargs["total_steps"] = budget
    return cls(task.zo_named_parameters(), **kwargs).bind(task)


class _Full:
    """``full=``: the task's loss over the whole training subset (``FullBatch``), times ``scale``."""

    def __init__(self, task, batches: list, scale: float):
        self.full, self.scale = FullBatch(task, batches), scale
        self.forwards = self.full.forwards  # the step counts them

    def __call__(self):
        return self.scale * self.full()


def take_step(opt, task, batch, full_batches: list | None = None, scale: float = 1.0) -> None:
    """One step of ``opt`` on ``task`` as ZOModule takes it: ``full=`` at the steps the rule reads it (MeZO-SVRG's
    anchors; ``full_batches``: the data module's ``full_batches()``)."""
    evaluators = {}
    if "full" in wanted_evaluators(opt):
        if full_batches is None:
            raise ValueError(f"{type(opt).__name__} evaluates the whole training subset: the data module gives no "
                             "full_batches()")
        evaluators["full"] = _Full(task, full_batches, scale)
    opt.step(lambda: scale * task.loss(batch), **evaluators)


def _moved(cls, task0, batch, mu, budget, scale: float, full_batches=None) -> float:
    task = copy.deepcopy(task0)
    before = [p.detach().clone() for _, p in task.zo_named_parameters()]
    opt = make(cls, task, mu, budget)
    for _ in range(3):
        take_step(opt, task, batch, full_batches, scale)
    return math.sqrt(sum(float((p.detach() - b).double().square().sum())
                         for (_, p), b in zip(task.zo_named_parameters(), before)))


def probe_rule(cls, task0, batch, mu: float, budget: int, full_batches: list | None = None) -> dict:
    """forwards_per_step, scale_free (and the ratio it is read from) and memory_vs_inference's numerator."""
    task = copy.deepcopy(task0)
    opt = make(cls, task, mu, budget)
    for _ in range(3):
        take_step(opt, task, batch, full_batches)
    plain = _moved(cls, task0, batch, mu, budget, 1.0, full_batches)
    ratio = _moved(cls, task0, batch, mu, budget, SCALE, full_batches) / plain if plain > 0 else math.nan
    task = copy.deepcopy(task0)
    tensors = [p for _, p in task.zo_named_parameters()] + [t for t in tree_flatten(batch)[0] if torch.is_tensor(t)]

    def two_steps():
        opt = make(cls, task, mu, budget)
        for _ in range(2):
            take_step(opt, task, batch, full_batches)

    return {"forwards_per_step": opt.zo["forwards"] / 3, "scheme": opt.grad_estimator.scheme.name,
            "scale_ratio": ratio,
            "scale_free": bool(ratio < math.sqrt(SCALE)), "peak_bytes": peak_bytes(two_steps, tensors)}


def _first_order(optimizer: str, task0, batch):
    """(forward, forward + backward, full step) callables on a copy of the task, and its memory-peak function."""
    task = copy.deepcopy(task0).train()
    params = [p for _, p in task.zo_named_parameters()]
    opt = resolve(optimizer)(params, lr=1e-6)

    def forward():
        with torch.no_grad():
            task.loss(batch)

    def backward():
        opt.zero_grad(set_to_none=True)
        task.loss(batch).backward()

    def step():
        backward()
        opt.step()

    def two_steps():
        fresh = resolve(optimizer)(params, lr=1e-6)
        for _ in range(2):
            fresh.zero_grad(set_to_none=True)
            task.loss(batch).backward()
            fresh.step()
        fresh.zero_grad(set_to_none=True)

    return forward, backward, step, two_steps


class _Loss(torch.nn.Module):
    """The task's loss on one batch as a module's forward (what ``torch.func.functional_call`` calls)."""

    def __init__(self, task, batch):
        super().__init__()
        self.task, self.batch = task, batch

    def forward(self):
        return self.task.loss(self.batch)


def _forward_and_jvp(task0, batch):
    """A forward (inference) and a forward-mode JVP of the loss along a Gaussian tangent, on a copy of the task."""
    loss = _Loss(copy.deepcopy(task0), batch)
    trained = {id(p) for _, p in loss.task.zo_named_parameters()}
    keys = [k for k, p in loss.named_parameters() if id(p) in trained]
    params = dict(loss.named_parameters())
    primals = tuple(params[k].detach() for k in keys)
    gen = torch.Generator(device=primals[0].device).manual_seed(0)
    tangents = tuple(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype) for p in primals)

    def forward():
        with torch.no_grad():
            loss()

    def jvp():
        torch.func.jvp(lambda *v: torch.func.functional_call(loss, dict(zip(keys, v)), ()), primals, tangents)

    return forward, jvp


def charge_jvp(entries: dict, task0, batch) -> None:
    """Charge each forward-mode rule's entry r_jvp forwards a pass (``passes_per_step``, ``jvp_ratio``)."""
    jvp_rules = [e for e in entries.values() if e.get("scheme") == "jvp" and "error" not in e]
    if jvp_rules:
        forward, jvp = _forward_and_jvp(task0, batch)
        ratio = _median_ratio(jvp, forward)
        for entry in jvp_rules:
            entry.update(passes_per_step=entry["forwards_per_step"], jvp_ratio=round(ratio, 2),
                         forwards_per_step=round(entry["forwards_per_step"] * ratio, 2))


def _median_ratio(fn, reference, repeats: int = 21) -> float:
    """median over ``repeats`` of time(fn) / time(reference), each pair timed back to back (after a warm-up)."""
    fn(), reference()
    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        reference()
        ratios.append((t1 - t0) / (time.perf_counter() - t1))
    return statistics.median(ratios)


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 1), "torch": torch.__version__}


def probe(config, root, *, rules: dict[str, str], first_order: str | None, mu: float, budget: int,
          seed_keys: list[str], seeds: list[int], rounds: int = 200) -> dict:
    """Measure ``rules`` (key -> class path) and, with ``first_order`` (a torch optimizer's class path), Adam by
    backprop under the key ``"first_order"``; ``starts`` for ``seeds``. Returns the record (module doc)."""
    torch.set_num_threads(1)
    cli = build(config, root, [f"--{k}=0" for k in seed_keys])
    data, task0 = cli.datamodule, cli.model.task.eval()
    data.trainer = cli.trainer  # the feature cache under the runs root, as a run finds it
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    full_batches = data.full_batches() if hasattr(data, "full_batches") else None
    tensors = [p for _, p in task0.zo_named_parameters()] + [t for t in tree_flatten(batch)[0] if torch.is_tensor(t)]

    def inference():
        with torch.no_grad():
            task0.loss(batch)
            task0.loss(batch)

    inference_peak = peak_bytes(inference, tensors)
    out: dict = {"rules": {}, "machine": machine(), "inference_peak_bytes": inference_peak}
    timed = {}
    for key, path in {**rules, REFERENCE: rules.get(REFERENCE, "zolab.rules.zosgd.ZOSGD")}.items():
        try:
            cls = resolve(path)
            entry = {"class": path, "label": getattr(cls, "label", "") or cls.__name__,
                     **probe_rule(cls, task0, batch, mu, budget, full_batches)}
            task = copy.deepcopy(task0)
            opt = make(cls, task, mu, budget, lr=1e-7)
            timed[key] = (lambda o=opt, t=task: take_step(o, t, batch, full_batches))
        except Exception as err:  # noqa: BLE001 - a rule that cannot step is reported, the others measured
            entry = {"class": path, "error": f"{type(err).__name__}: {err}"}
        if key in rules:
            out["rules"][key] = entry
    charge_jvp(out["rules"], task0, batch)
    if first_order:
        forward, backward, step, two_steps = _first_order(first_order, task0, batch)
        timed.update({"forward": forward, "forward+backward": backward, "first_order": step})
        out["rules"]["first_order"] = {"class": first_order, "label": f"{first_order.rsplit('.', 1)[-1]} by backprop",
                                       "first_order": True, "scale_free": True,
                                       "peak_bytes": peak_bytes(two_steps, tensors)}
    seconds: dict[str, list[float]] = {k: [] for k in timed}
    for r in range(3 + rounds):  # 3 warm-up rounds
        for key, fn in timed.items():
            start = time.perf_counter()
            fn()
            if r >= 3:
                seconds[key].append(time.perf_counter() - start)
    ms = {k: 1000 * min(v) for k, v in seconds.items()}
    for key, entry in out["rules"].items():
        if key in ms and "error" not in entry:
            entry.update(step_ms=ms[key], step_vs_reference=ms[key] / ms[REFERENCE],
                         memory_vs_inference=entry["peak_bytes"] / inference_peak)
    if first_order:
        out["rules"]["first_order"]["forwards_per_step"] = round(ms["forward+backward"] / ms["forward"], 2)
        out["forward_ms"] = ms["forward"]
    out["starts"] = {}
    for seed in seeds:
        task = build(config, root, [f"--{k}={seed}" for k in seed_keys]).model.task
        out["starts"][str(seed)] = {f"{split}/{k}": v for split, loader in (
            ("val", data.val_dataloader()), ("test", data.test_dataloader()))
            for k, v in evaluate(task, loader, torch.device("cpu")).items()}
    return out


def threads(n: int) -> None:
    """torch's threads in this process (the leaderboard's runs use one each, as its CPU-second budget assumes)."""
    torch.set_num_threads(n)

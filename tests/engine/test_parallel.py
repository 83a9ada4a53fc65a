"""Several processes on one ZO step (zolab/engine/parallel.py), two gloo processes spawned from the test: data parallel
equals one process on the global batch, query parallel is bitwise one process, a NaN on one shard is handled
alike everywhere, a checkpoint of two processes continues in one, a crashed process is an error, not a hang."""

import os
import socket
import traceback
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zolab.engine.parallel import ParallelPoints, batch_length, check_in_step, shard, shard_size
from zolab.testing import REGISTRY

from ..rules._problem import TinyProblem

STEPS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Rules whose directions are built from a whole matrix's factors (U Vᵀ, U Z Vᵀ): a process holding rows of it
# cannot draw its part alone, so these rules refuse sharded tensors at construction (the tests check the refusal).
WHOLE_MATRICES = {"lozo", "lozo_m", "subzero", "sparse_mezo"}  # Sparse-MeZO: its threshold is a whole k-th value
# Forward-Grad's JVP differentiates the whole model's closure: FSDP2's shards are refused as such, the sharded
# job's bare tensors (no model to bind) at its first step.
REFUSES_SHARDS = {**dict.fromkeys(WHOLE_MATRICES, ("are shards of larger tensors; allowed: whole",)),
                  "forward_grad": ("needs whole tensors; shards of a sharded model are not supported",
                                   "call optimizer.bind(model) first")}


def _queries(info) -> dict:
    """Two queries a step where the rule takes K (query parallelism splits them); ZO-AdaMU's schedule options."""
    if "total_steps" in info.kwargs:
        return {"total_steps": 60, "t1": 5}
    return {} if "num_queries" in info.fixed else {"num_queries": 2}


def _run(rule: str, steps: int, parallel=None, rank=0, world=1, state=None, nan_at=None, nonfinite="raise"):
    """``steps`` steps of ``rule`` on the tiny problem (5 examples); with ``parallel``, the closure's loss is the
    mean over this process's shard of the examples and the estimator combines the processes' losses."""
    problem = TinyProblem()
    info = REGISTRY[rule]
    kw = _queries(info)
    opt = info.make(list(problem.named_parameters()), lr=1e-2, mu=1e-3, seed=3, nonfinite=nonfinite, **kw)
    if info.needs_model:  # Forward-Grad's JVP differentiates through the model
        opt.bind(problem)
    if state is not None:
        problem.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    data = parallel.data if parallel is not None else 1
    index = parallel.data_index if parallel is not None else 0
    if parallel is not None:
        opt.grad_estimator.parallel = parallel
    X, Y = shard(problem.X, index, data), shard(problem.Y, index, data)
    if parallel is not None:
        parallel.weight = float(len(X))
    losses = []
    for t in range(1, steps + 1):
        def closure(t=t):
            r = X @ problem.W + problem.b - Y
            loss = (torch.nn.functional.softplus(2 * r) - r).sum() / len(X)
            return loss * float("nan") if (nan_at == (t, rank)) else loss
        losses.append(float(opt.step(closure)))
    return problem, opt, losses


def _run_sharded(rule, rank, world, steps=STEPS):
    """The tiny problem with W and b split by rows between the processes (each holds its shard, as in a
    sharded model): the closure gathers the perturbed shards into the whole tensors, as FSDP's forward does."""
    problem = TinyProblem()
    W = torch.nn.Parameter(problem.W.detach()[2 * rank:2 * rank + 2].clone())
    b = torch.nn.Parameter(problem.b.detach()[3 * rank:3 * rank + 3].clone())
    info = REGISTRY[rule]
    kw = _queries(info)
    opt = info.make([{"params": [("W", W), ("b", b)], "shards": [(12 * rank, 24), (3 * rank, 6)]}], lr=1e-2,
                    mu=1e-3, seed=3, **kw)
    opt.grad_estimator.shard_sum = dist.all_reduce

    def gathered(t):
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t.detach())
        return torch.cat(parts)

    draws = []
    for _ in range(steps):
        opt.step(lambda: problem.f(gathered(W), gathered(b)))
        est = opt.record.blocks[0]
        if not info.own_directions:
            draws.append(torch.cat([opt.direction(r, est.queries[0]).flatten() for r in est.refs]))
    return gathered(W), gathered(b), draws


def _mlp():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).double()
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(6, 8, generator=gen, dtype=torch.float64), torch.randn(6, 1, generator=gen, dtype=torch.float64)
    return model, X, Y


def _mlp_steps(rule, model, X, Y, parallel=None, steps=10):
    info = REGISTRY[rule]
    kw = _queries(info)
    opt = info.make(list(model.named_parameters()), lr=1e-2, mu=1e-3, seed=3, **kw)
    if info.needs_model:
        opt.bind(model)
    if parallel is not None:
        opt.grad_estimator.parallel, opt.grad_estimator.shard_sum = parallel, dist.all_reduce
        parallel.weight = float(len(X))
    for _ in range(steps):
        opt.step(lambda: (model(X) - Y).square().mean())
    return opt


def _run_fsdp(rule, rank, world):
    """FSDP2's fully_shard on the CPU (gloo): each process holds torch.chunk's rows of every tensor and its half
    of the batch; the optimizer takes the DTensor parameters as they are."""
    from torch.distributed.fsdp import fully_shard

    model, X, Y = _mlp()
    for layer in (model[0], model[2]):
        fully_shard(layer)
    fully_shard(model)
    _mlp_steps(rule, model, shard(X, rank, world), shard(Y, rank, world), ParallelPoints(world, 1))
    return {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}


def _worker(rank, world, port, out, job):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))
    result = {}
    try:
        if job == "modes":
            for rule in REGISTRY:
                for mode, (data, query) in (("data", (2, 1)), ("query", (1, 2))):
                    problem, opt, losses = _run(rule, STEPS, ParallelPoints(data, query), rank, world)
                    check_in_step(list(problem.parameters()))
                    result[(rule, mode)] = ({k: v.clone() for k, v in problem.state_dict().items()}, losses)
        elif job == "nan":
            for nonfinite in ("skip", "raise"):
                try:
                    problem, opt, _ = _run("radazo", 6, ParallelPoints(2, 1), rank, world, nan_at=(4, 1),
                                           nonfinite=nonfinite)
                    result[nonfinite] = (problem.W.detach().clone(), dict(opt.zo))
                except FloatingPointError as err:
                    result[nonfinite] = str(err)
        elif job == "checkpoint":
            problem, opt, _ = _run("radazo", 15, ParallelPoints(2, 1), rank, world)
            result["state"] = {"model": problem.state_dict(), "optimizer": opt.state_dict()}
            problem, _, _ = _run("radazo", 30, ParallelPoints(2, 1), rank, world)
            result["uninterrupted"] = problem.W.detach().clone()
        elif job in ("sharded", "fsdp"):
            for rule in REGISTRY:
                try:
                    result[rule] = (_run_sharded if job == "sharded" else _run_fsdp)(rule, rank, world)
                except ValueError as err:  # a rule that cannot perturb a shard refuses it before any step
                    result[rule] = str(err)
        elif job == "crash":
            if rank == 1:
                _run("zo_sgd", 2, ParallelPoints(2, 1), rank, world)
                os._exit(0)  # this process dies before step 3's all-reduce (no cleanup, no goodbye)
            try:
                _run("zo_sgd", 10, ParallelPoints(2, 1), rank, world)
                result["error"] = None
            except RuntimeError as err:
                result["error"] = str(err)
    except Exception:  # noqa: BLE001 - reported to the test through the file
        result["traceback"] = traceback.format_exc()
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    if job != "crash":
        dist.destroy_process_group()


def _spawn(tmp_path, job, ranks=(0, 1)):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), job), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in ranks]
    for r in results:
        assert "traceback" not in r, r.get("traceback")
    return results


@pytest.fixture(scope="module")
def modes(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("modes"), "modes")


@pytest.mark.parametrize("rule", list(REGISTRY))
def test_data_parallel_equals_one_process_on_the_global_batch(modes, rule):
    rank0, rank1 = modes
    (state0, losses0), (state1, _) = rank0[(rule, "data")], rank1[(rule, "data")]
    for k in state0:
        assert torch.equal(state0[k], state1[k]), f"ranks differ: {k}"
    problem, _, losses = _run(rule, STEPS)
    # FZOO divides the differences by the spread σ of N nearly equal losses, which scales the rounding of the
    # processes' weighted loss sum by ~1/σ: 2e-11 of the largest entry measured, to rounding still
    rtol = 1e-8 if rule == "fzoo" else 1e-10
    for k, v in problem.state_dict().items():
        torch.testing.assert_close(state0[k], v, rtol=rtol, atol=0, msg=k)
    assert losses0 == pytest.approx(losses, rel=1e-10)


@pytest.mark.parametrize("rule", list(REGISTRY))
def test_query_parallel_is_bitwise_one_process(modes, rule):
    rank0, rank1 = modes
    (state0, losses0), (state1, _) = rank0[(rule, "query")], rank1[(rule, "query")]
    problem, _, losses = _run(rule, STEPS)
    for k, v in problem.state_dict().items():
        assert torch.equal(state0[k], v) and torch.equal(state1[k], v), k
    assert losses0 == losses


@pytest.mark.slow
def test_a_nan_on_one_shard_is_handled_alike_by_every_process(tmp_path):
    rank0, rank1 = _spawn(tmp_path, "nan")
    assert torch.equal(rank0["skip"][0], rank1["skip"][0])
    assert rank0["skip"][1]["skipped"] == rank1["skip"][1]["skipped"] == 1
    for r in (rank0, rank1):
        assert isinstance(r["raise"], str) and "non-finite loss at step 4" in r["raise"]


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_continues_in_one(tmp_path):
    rank0, rank1 = _spawn(tmp_path, "checkpoint")
    state = rank0["state"]
    problem, _, _ = _run("radazo", 15, state=state)  # 15 more steps, one process, the same global batch
    torch.testing.assert_close(problem.W.detach(), rank0["uninterrupted"], rtol=1e-10, atol=0)
    assert torch.equal(rank0["uninterrupted"], rank1["uninterrupted"])


@pytest.mark.slow
def test_a_crashed_process_is_an_error_that_names_the_survivor(tmp_path):
    (result,) = _spawn(tmp_path, "crash", ranks=(0,))
    assert result["error"] is not None and "process 0 of 2" in result["error"] and "all-reduce" in result["error"]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return _spawn(tmp_path_factory.mktemp("sharded"), "sharded")


@pytest.mark.parametrize("rule", list(REGISTRY))
@pytest.mark.slow
def test_a_sharded_model_draws_and_updates_what_the_whole_one_does(sharded, rule):
    """Each process holds half the rows of each tensor and draws its elements of the whole directions: the draws
    are bitwise the whole's (Gaussian; sphere's norm is summed over the processes: to rounding), the updates
    agree to 1e-10."""
    if rule in REFUSES_SHARDS:
        assert sharded[0][rule] == sharded[1][rule] and any(m in sharded[0][rule] for m in REFUSES_SHARDS[rule])
        return
    W, b, draws = sharded[0][rule]
    assert torch.equal(W, sharded[1][rule][0]) and torch.equal(b, sharded[1][rule][1])
    problem, opt, _ = _run_whole(rule)
    torch.testing.assert_close(W, problem.W.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(b, problem.b.detach(), rtol=1e-10, atol=1e-12)
    if draws:
        whole = _whole_draws(rule)
        for t, (d0, d1) in enumerate(zip(draws, sharded[1][rule][2])):
            full = whole[t]
            mine = torch.cat([d0[:12], d1[:12], d0[12:], d1[12:]])  # W rows 0-1, 2-3, then b 0-2, 3-5
            if opt.sampler.name == "sphere":
                torch.testing.assert_close(mine, full, rtol=1e-12, atol=0)
            else:
                assert torch.equal(mine, full), t


def _run_whole(rule, steps=STEPS):
    problem = TinyProblem()
    info = REGISTRY[rule]
    kw = _queries(info)
    opt = info.make([("W", problem.W), ("b", problem.b)], lr=1e-2, mu=1e-3, seed=3, **kw)
    if info.needs_model:
        opt.bind(problem)
    for _ in range(steps):
        opt.step(problem.loss)
    return problem, opt, None


def _whole_draws(rule, steps=STEPS):
    problem = TinyProblem()
    info = REGISTRY[rule]
    queries = {} if "num_queries" in info.fixed else {"num_queries": 2}
    opt = info.make([("W", problem.W), ("b", problem.b)], lr=1e-2, mu=1e-3, seed=3, **queries)
    if info.needs_model:
        opt.bind(problem)
    out = []
    for _ in range(steps):
        opt.step(problem.loss)
        est = opt.record.blocks[0]
        out.append(torch.cat([opt.direction(r, est.queries[0]).flatten() for r in est.refs]))
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 (torch.distributed.fsdp.fully_shard) is needed")
    return _spawn(tmp_path_factory.mktemp("fsdp"), "fsdp")


@pytest.mark.parametrize("rule", list(REGISTRY))
@pytest.mark.slow
def test_an_fsdp2_sharded_model_steps_as_the_whole_model_on_the_global_batch(fsdp, rule):
    """FSDP2 on two CPU processes, data parallel over its shards: every rule's run equals one process with the
    whole model on the global batch (1e-10, float64), and both processes hold the same whole parameters."""
    if rule in REFUSES_SHARDS:
        assert fsdp[0][rule] == fsdp[1][rule] and any(m in fsdp[0][rule] for m in REFUSES_SHARDS[rule])
        return
    model, X, Y = _mlp()
    _mlp_steps(rule, model, X, Y)
    for name, value in model.named_parameters():
        assert torch.equal(fsdp[0][rule][name], fsdp[1][rule][name]), name
        torch.testing.assert_close(fsdp[0][rule][name], value.detach(), rtol=1e-10, atol=1e-12, msg=name)


def test_shards_of_a_batch():
    x = torch.arange(10).reshape(5, 2)
    assert shard(x, 0, 2).tolist() == [[0, 1], [2, 3], [4, 5]] and shard(x, 1, 2).tolist() == [[6, 7], [8, 9]]
    examples = ["a", "b", "c"]
    assert shard(examples, 0, 2) == ["a", "b"] and shard(examples, 1, 2) == ["c"]
    batch = {"ids": torch.arange(4), "mask": torch.ones(4)}
    assert shard(batch, 1, 2)["ids"].tolist() == [2, 3]
    assert shard((torch.arange(4), torch.arange(4) * 2), 1, 2)[1].tolist() == [4, 6]
    assert shard(x, 0, 1) is x


def test_the_default_collates_records_split_field_by_field_and_lists_of_examples_by_example():
    x, y = torch.arange(10).reshape(5, 2), torch.arange(5)
    first, second = shard([x, y], 0, 2), shard([x, y], 1, 2)  # a TensorDataset's default collate: a list
    assert isinstance(first, list) and first[0].tolist() == [[0, 1], [2, 3], [4, 5]] and first[1].tolist() == [0, 1, 2]
    assert second[0].tolist() == [[6, 7], [8, 9]] and second[1].tolist() == [3, 4]
    assert shard([x, ["a", "b", "c", "d", "e"]], 1, 2)[1] == ["d", "e"]  # a string field: its examples
    examples = [(x[i], y[i]) for i in range(5)]  # an identity collate's list of records: split by example
    assert shard(examples, 1, 2) == examples[3:]
    assert shard([{"t": "a"}, {"t": "b"}], 1, 2) == [{"t": "b"}]


def test_batch_length_counts_the_examples_shard_splits():
    x, y = torch.arange(10).reshape(5, 2), torch.arange(5)
    assert batch_length([x, y]) == batch_length((x, y)) == batch_length({"x": x, "y": y, "name": "s"}) == 5
    assert batch_length(["a", "b", "c"]) == 3 and batch_length([(x[i], y[i]) for i in range(5)]) == 5
    assert batch_length(None) is None and batch_length(3) is None and batch_length(torch.tensor(1.0)) is None
    assert [shard_size(5, d, 2) for d in range(2)] == [len(shard(x, d, 2)) for d in range(2)] == [3, 2]
    assert [shard_size(1, d, 2) for d in range(2)] == [len(shard([x[:1], y[:1]], d, 2)[1]) for d in range(2)] == [1, 0]
    with pytest.raises(ValueError, match=r"fields hold \[3, 5\] examples: its shards would not line up"):
        batch_length({"x": x, "vocab": torch.ones(3)})

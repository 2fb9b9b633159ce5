"""Serving the quickstart front: latency in onnxruntime vs FLOPs, torch vs onnxruntime vs int8, and
what int8 quantisation costs in accuracy on the embedded task.

For up to `--students` students spread over the FLOPs of the quickstart run's Pareto front: export,
fine-tune on the embedded task (`finetune --save`, the quickstart's and the benchmarks' budget, one seed), export to ONNX with
`--quantize int8`; then, with nothing else measured at the same time, latency at batch 1 x 128
(p50 of 20 after warm-up; onnxruntime: the median of three such runs, whose spread is the noise)
in PyTorch, onnxruntime fp32 and onnxruntime int8, and test accuracy of the fp32 and int8 ONNX
classifiers.
"""

import argparse
import json
import shutil
import subprocess
import sys

import numpy as np
from common import FINETUNE, REPO, WORK, cli, ensure_run, export_arch, in_parallel, saved_finetune
from report import command, describe_finetune, machine, markdown_table, write_results, write_section

from autodistil_evo.spaces.space import GENES


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def onnx_accuracy(folder, name) -> float:
    """Test accuracy of an ONNX classifier on the embedded task's test split."""
    import onnxruntime
    from transformers import AutoTokenizer

    from autodistil_evo.data import sentiment_task
    from autodistil_evo.export.onnx import feeds
    from autodistil_evo.export.trust import model_folder

    session = onnxruntime.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=model_folder(folder)[1])
    token_types = any(i.name == "token_type_ids" for i in session.get_inputs())
    rows = sentiment_task().test
    correct = 0
    for start in range(0, len(rows), 64):
        chunk = rows[start : start + 64]
        predicted = session.run(None, feeds(tokenizer, [t for t, _ in chunk], 64, token_types))[0].argmax(-1)
        correct += int((predicted == np.array([y for _, y in chunk])).sum())
    return correct / len(rows)


def bench(folder, runtime) -> list:
    out = subprocess.run([sys.executable, "-m", "autodistil_evo.cli", "bench", str(folder), "--runtime", runtime,
                          "--seq-len", "128", "--repeats", "20", "--json"], cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=8)
    args = parser.parse_args()
    run = ensure_run(WORK / "quickstart-run")
    search = WORK / "deploy-search"
    cli("evolve", run, "--out", search, "--population", 12, "--generations", 4, "--resume")
    front = sorted(json.loads((search / "pareto.json").read_text())["front"], key=lambda r: r["flops"])
    picks = [front[i] for i in sorted(set(np.linspace(0, len(front) - 1, min(args.students, len(front))).round().astype(int)))]
    # Everything that is not timed first: exports, then the fine-tunes side by side (the largest first).
    encoders = [export_arch(run, row["subspace"], {g: row[g] for g in GENES}) for row in picks]
    classifiers = [WORK / "deploy" / f"{row['id']}-classifier" for row in picks]
    remade = in_parallel(lambda i, threads: saved_finetune(encoders[i], classifiers[i], threads=threads)[1],
                         range(len(picks))[::-1])[::-1]
    students = []
    for row, encoder, classifier, new in zip(picks, encoders, classifiers, remade):
        onnx_dir = WORK / "deploy" / f"{row['id']}-onnx"
        if new:  # re-made (other budget or fine-tuning code): so is its ONNX
            shutil.rmtree(onnx_dir, ignore_errors=True)
        if not (onnx_dir / "model.int8.onnx").is_file():
            cli("onnx", classifier, "--out", onnx_dir, "--quantize", "int8", "--force")
        students.append((row, encoder, onnx_dir))
    results = []
    for row, encoder, onnx_dir in students:
        torch_ms = bench(encoder, "torch")[0]["latency_ms"]
        repeats = [{r["model"].rsplit("/", 1)[1]: r["latency_ms"] for r in bench(onnx_dir, "onnxruntime")} for _ in range(3)]
        ort = {name: float(np.median([x[name] for x in repeats])) for name in repeats[0]}
        spread = (max(x["model.onnx"] for x in repeats) - min(x["model.onnx"] for x in repeats)) / ort["model.onnx"]
        check = json.loads((onnx_dir / "autodistil_onnx.json").read_text())
        results.append({
            "id": row["id"], "flops": row["flops"], "params": row["params"], "torch_ms": torch_ms,
            "onnxruntime_ms": ort["model.onnx"], "int8_ms": ort["model.int8.onnx"], "onnxruntime_spread": spread,
            "fp32_accuracy": onnx_accuracy(onnx_dir, "model.onnx"), "int8_accuracy": onnx_accuracy(onnx_dir, "model.int8.onnx"),
            "int8_agreement": check["int8_agreement"], "onnx_max_abs_diff": check["max_abs_diff"],
        })
        print(results[-1], flush=True)
    from autodistil_evo.data import sentiment_task

    labels = [y for _, y in sentiment_task().test]
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    learned = [r for r in results if r["fp32_accuracy"] > majority + 1e-9]  # the others predict one class
    flops = [r["flops"] for r in results]
    summary = {
        "spearman_onnxruntime_latency_vs_flops": spearman(flops, [r["onnxruntime_ms"] for r in results]),
        "spearman_torch_latency_vs_flops": spearman(flops, [r["torch_ms"] for r in results]),
        "median_onnxruntime_over_torch": float(np.median([r["onnxruntime_ms"] / r["torch_ms"] for r in results])),
        "median_int8_over_onnxruntime": float(np.median([r["int8_ms"] / r["onnxruntime_ms"] for r in results])),
        "majority_accuracy": majority,
        "students_above_majority": len(learned),
        "mean_int8_accuracy_change_above_majority": (
            float(np.mean([r["int8_accuracy"] - r["fp32_accuracy"] for r in learned])) if learned else None),
        "median_onnxruntime_spread": float(np.median([r["onnxruntime_spread"] for r in results])),
        "max_onnxruntime_spread": float(max(r["onnxruntime_spread"] for r in results)),
    }
    write_results("deploy", {"batch": 1, "seq_len": 128, "repeats": 20, "students": results, **summary})
    table = markdown_table(
        ["student", "GFLOPs", "torch ms", "onnxruntime ms", "int8 ms", "fp32 acc", "int8 acc", "int8 = fp32 predictions"],
        [(r["id"], f"{r['flops'] / 1e9:.3f}", f"{r['torch_ms']:.2f}", f"{r['onnxruntime_ms']:.2f}", f"{r['int8_ms']:.2f}",
          f"{r['fp32_accuracy']:.3f}", f"{r['int8_accuracy']:.3f}", f"{r['int8_agreement']:.1%}") for r in results],
    )
    write_section(
        "deploy",
        f"## Serving the quickstart front\n\nMachine: {machine()}. {len(results)} students spread over the FLOPs of the "
        "quickstart run's Pareto front (`evolve` population 12 x 4 generations), each fine-tuned on the embedded task "
        f"({describe_finetune(FINETUNE)}, seed 0) and exported with `onnx --quantize int8`. Latency: batch 1 x 128, p50 of 20 after "
        "warm-up, CPU execution provider; accuracy: the ONNX classifiers on the test split.\n\n"
        f"Command: `{command()}`\n\n{table}\n\n"
        f"Spearman rank correlation with FLOPs: onnxruntime latency {summary['spearman_onnxruntime_latency_vs_flops']:.3f}, "
        f"torch latency {summary['spearman_torch_latency_vs_flops']:.3f}. Median onnxruntime / torch latency "
        f"{summary['median_onnxruntime_over_torch']:.2f}; median int8 / fp32 onnxruntime latency "
        f"{summary['median_int8_over_onnxruntime']:.2f}. Accuracy: {len(learned)} of {len(results)} students rise above "
        f"the majority class ({majority:.3f}) with this fine-tuning budget"
        + ("" if len(learned) == len(results) else " (the others predict one class, so int8 cannot change them)")
        + "; over those, int8 changes test accuracy by "
        + (f"{summary['mean_int8_accuracy_change_above_majority']:+.3f} on average" if learned else "nothing measurable")
        + ". Noise: three separate `bench --runtime onnxruntime` runs of each "
        f"student differ by {summary['median_onnxruntime_spread']:.1%} of the median (median over students; max "
        f"{summary['max_onnxruntime_spread']:.1%}).\n",
    )


if __name__ == "__main__":
    main()

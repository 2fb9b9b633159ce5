"""`autodistil-evo embed-eval`: embedding fidelity of model folders to their teacher, no labels needed."""

from transformers import AutoModel, AutoTokenizer

from autodistil_evo.errors import UserError
from autodistil_evo.export.trust import model_folder
from autodistil_evo.search.fidelity import embed, encoder_forward, fidelity, fidelity_sentences, sts_spearman
from autodistil_evo.teacher import pooling_of


def _encoder(path, remote_code):
    try:
        return (AutoModel.from_pretrained(path, trust_remote_code=remote_code).eval(),
                AutoTokenizer.from_pretrained(path, trust_remote_code=remote_code))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load ({str(e).splitlines()[0]})") from None


def embed_eval(model_dirs, teacher_spec=None, sentences: int = 1000, seed: int = 0, trust_remote_code: bool = False,
               sts: str | None = None, sts_data=None) -> list:
    """One row per folder: Spearman of cosine similarities and recall@10 of nearest neighbours against the
    teacher's embeddings, on `fidelity_sentences(sentences, seed)`; with `sts` (dev / test), also `stsb`, the
    STS Benchmark score of that split (Spearman x 100 against the gold scores)."""
    from autodistil_evo.data import sts_benchmark
    from autodistil_evo.teacher import load_teacher

    if sentences < 20:
        raise UserError(f"--sentences: {sentences} is too few to compare neighbourhoods (at least 20)")
    pairs = sts_benchmark(sts, sts_data) if sts else None  # read (and checked) before any model is loaded
    teacher = load_teacher(teacher_spec)
    texts = fidelity_sentences(sentences, seed)
    # 128 tokens, or fewer where the teacher's positions end sooner (RoBERTa-style ids start past padding)
    max_len = min(128, getattr(teacher.model.config, "max_position_embeddings", 512) - 2)
    reference = embed(encoder_forward(teacher.model), teacher.tokenizer, texts, pooling_of(teacher.source), max_len=max_len)
    rows = []
    for model_dir in model_dirs:
        path, remote_code = model_folder(model_dir, trust_remote_code)
        model, tokenizer = _encoder(path, remote_code)
        vectors = embed(encoder_forward(model), tokenizer, texts, pooling_of(path), max_len=max_len)
        rows.append({"model": str(model_dir), "width": vectors.shape[1], "params": sum(p.numel() for p in model.parameters()),
                     **fidelity(vectors, reference, seed=seed)})
        if pairs is not None:
            rows[-1].update(stsb=sts_spearman(encoder_forward(model), tokenizer, pairs, pooling_of(path), max_len=max_len),
                            sts_split=sts, sts_pairs=len(pairs))
    return rows

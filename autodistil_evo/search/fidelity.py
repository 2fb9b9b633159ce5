"""Embedding fidelity without labels: how well a student keeps its teacher's sentence-similarity structure.

On a fixed sample of sentences (held-out text of the embedded corpus and the embedded task's test
texts, half each), two numbers compare the student's sentence embeddings with the teacher's:
- `spearman`: the Spearman correlation between the teacher's and the student's cosine similarities
  over a fixed, seeded sample of sentence pairs;
- `recall_at_10`: for a fixed set of query sentences, the share of each one's 10 nearest neighbours
  under the teacher that are also among its 10 under the student, averaged.
Both compare similarity structure, not vectors, so they hold whatever the student's width; a
student equal to its teacher scores 1.0 on both. Embeddings are pooled as the model's
sentence-transformers modules say (mean pooling and normalisation, all-MiniLM-L6-v2's, by default).
"""


import numpy as np
import torch

from autodistil_evo.data import corpus_parts, hash_bucket, sentiment_task
from autodistil_evo.teacher import pool


def fidelity_sentences(n: int = 1000, seed: int = 0, heldout_fraction: float = 0.05) -> list:
    """`n` sentences, fixed by (n, seed): half held-out embedded-corpus texts of 5 words or more (the corpus'
    hash split, so none was trained on), half the embedded task's test texts."""
    rng = np.random.default_rng(seed)
    corpus = [t for _, part in corpus_parts(None) for t in part["text"]
              if hash_bucket(t) < heldout_fraction and len(t.split()) >= 5]
    reviews = [text for text, _ in sentiment_task().test]
    half = n // 2
    picks = [corpus[i] for i in sorted(rng.choice(len(corpus), size=min(half, len(corpus)), replace=False))]
    picks += [reviews[i] for i in sorted(rng.choice(len(reviews), size=min(n - len(picks), len(reviews)), replace=False))]
    return picks


def encoder_forward(model):
    """`forward(input_ids, attention_mask)` -> last hidden state of a Hugging Face encoder, as `embed` takes it."""
    return lambda ids, mask: model(input_ids=ids, attention_mask=mask).last_hidden_state


@torch.no_grad()
def embed(forward, tokenizer, texts: list, pooling=("mean", True), batch_size: int = 64, max_len: int = 128,
          device="cpu") -> torch.Tensor:
    """Sentence embeddings [len(texts), width]: `forward(input_ids, attention_mask)` gives the last hidden state."""
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_len,
                          return_tensors="pt")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        out.append(pool(forward(ids, mask), mask, pooling))
    return torch.cat(out).cpu()


def sts_spearman(forward, tokenizer, pairs, pooling=("mean", True), max_len: int = 128, device="cpu") -> float:
    """The STS Benchmark's score: Spearman x 100 between the cosine similarity of each pair's embeddings and the
    gold scores of `pairs` (`data.SentencePairs`)."""
    from scipy.stats import spearmanr

    first, second = (embed(forward, tokenizer, texts, pooling, max_len=max_len, device=device).double()
                     for texts in (pairs.first, pairs.second))
    cosine = torch.nn.functional.cosine_similarity(first, second, dim=-1)
    return 100 * float(spearmanr(cosine.numpy(), np.asarray(pairs.gold))[0])


def fidelity(student: torch.Tensor, teacher: torch.Tensor, pairs: int = 5000, queries: int = 200, k: int = 10,
             seed: int = 0) -> dict:
    """Spearman of the two models' cosine similarities over `pairs` seeded pairs, and recall@k of the teacher's
    nearest neighbours among all the sentences for `queries` seeded queries."""
    from scipy.stats import spearmanr

    s, t = (torch.nn.functional.normalize(x.double(), dim=-1) for x in (student, teacher))
    n = len(t)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, n, pairs), rng.integers(0, n, pairs)
    keep = a != b
    a, b = torch.from_numpy(a[keep]), torch.from_numpy(b[keep])
    spearman = float(spearmanr((t[a] * t[b]).sum(-1).numpy(), (s[a] * s[b]).sum(-1).numpy())[0])
    chosen = torch.from_numpy(rng.choice(n, size=min(queries, n), replace=False))

    def neighbours(x):
        similarity = x[chosen] @ x.T
        similarity[torch.arange(len(chosen)), chosen] = float("-inf")  # a sentence is not its own neighbour
        return similarity.topk(k, dim=1).indices

    mine, theirs = neighbours(s), neighbours(t)
    recall = float(np.mean([len(set(m.tolist()) & set(r.tolist())) / k for m, r in zip(mine, theirs)]))
    return {"spearman": spearman, "recall_at_10" if k == 10 else f"recall_at_{k}": recall, "sentences": n,
            "pairs": int(keep.sum()), "queries": len(chosen)}

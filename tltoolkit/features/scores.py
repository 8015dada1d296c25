"""Scores of frozen features for a labelled set, without fine-tuning: k-NN accuracy and LogME (what
`tltoolkit rank` reports per base, and `finetune` notes as the frozen-feature baseline)."""

from __future__ import annotations

import numpy as np

from tltoolkit.features.folder import nearest_neighbours

KS = (1, 3, 5, 7, 9, 15, 21)
BASELINE_IMAGES = 10_000  # training images the baseline scores on at most (k-NN is quadratic in them)


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of `features` [n, d] for class ids `labels` [n] (You et al. 2021, Algorithm 1)."""
    f = np.asarray(features, "float64").reshape(len(features), -1)
    labels = np.asarray(labels)
    n, d = f.shape
    # F^T F = V diag(s) V^T: every fixed-point step is then a few vector operations.
    s, v = np.linalg.eigh(f.T @ f)
    s = np.clip(s, 0.0, None)
    evidences = []
    for label in np.unique(labels):
        y = (labels == label).astype("float64")
        projected = v.T @ (f.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(11):  # converges in a few steps; the paper's cap
            gamma = float((beta * s / (alpha + beta * s)).sum())
            m = v @ (beta * projected / (alpha + beta * s))
            alpha_de, beta_de = float(m @ m), float(((y - f @ m) ** 2).sum())
            new_alpha, new_beta = gamma / (alpha_de + 1e-5), (n - gamma) / (beta_de + 1e-5)
            converged = abs(new_alpha / new_beta - alpha / beta) / (alpha / beta) < 1e-2
            alpha, beta = new_alpha, new_beta
            if converged:
                break
        m = v @ (beta * projected / (alpha + beta * s))
        alpha_de, beta_de = float(m @ m), float(((y - f @ m) ** 2).sum())
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * s).sum()
                    - beta / 2 * beta_de - alpha / 2 * alpha_de - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def knn_accuracy(train_x, train_y, val_x=None, val_y=None, ks=KS) -> tuple[float, int]:
    """(accuracy, k): k by leave-one-out accuracy on the training images (ties: the smaller k), then the
    validation accuracy of that k (the leave-one-out accuracy without validation images)."""
    mean = np.asarray(train_x, "float32").mean(axis=0)
    train_y = np.asarray(train_y)
    index, similarity = nearest_neighbours(train_x - mean, train_x - mean, max(ks), same=True)
    ks = [k for k in ks if k <= index.shape[1]]
    scores = [float(np.mean(_vote(train_y[index[:, :k]], similarity[:, :k]) == train_y)) for k in ks]
    k = ks[int(np.argmax(scores))]
    if val_x is None or not len(val_x):
        return max(scores), k
    index, similarity = nearest_neighbours(val_x - mean, train_x - mean, k)
    return float(np.mean(_vote(train_y[index], similarity) == np.asarray(val_y))), k


def _vote(neighbour_labels: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """The majority label of each row's neighbours; ties go to the label with the larger summed similarity."""
    classes = np.unique(neighbour_labels)
    votes = np.stack([((neighbour_labels == c) * (1.0 + 1e-3 * similarity)).sum(axis=1) for c in classes], axis=1)
    return classes[votes.argmax(axis=1)]


def frozen_baseline(train_x, train_y, val_x=None, val_y=None, seed: int = 0) -> dict | None:
    """k-NN accuracy (with its k) and LogME of features, on at most BASELINE_IMAGES seeded training images;
    None with fewer than two training images (no neighbour to vote). Feature maps are average-pooled to
    vectors first, as `rank` scores a base (LogME's cost grows with the cube of the width)."""
    def vectors(x):
        x = np.asarray(x, "float32")
        return x.mean(axis=(1, 2)) if x.ndim == 4 else x.reshape(len(x), -1)

    train_x, train_y = vectors(train_x), np.asarray(train_y)
    if len(train_x) < 2:
        return None
    if len(train_x) > BASELINE_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(len(train_x), BASELINE_IMAGES, replace=False))
        train_x, train_y = train_x[keep], train_y[keep]
    if val_x is not None:
        val_x = vectors(val_x)
    accuracy, k = knn_accuracy(train_x, train_y, val_x, val_y)
    return {"knn_accuracy": round(accuracy, 4), "knn_k": k, "logme": round(logme(train_x, train_y), 4),
            "images": len(train_x)}

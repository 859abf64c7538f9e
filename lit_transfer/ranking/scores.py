"""Transferability scores: how well frozen features (or source predictions) suit a labelled target set.

Pure functions of numpy arrays; higher is better for every score. ``features`` is ``[N, D]``, ``labels`` is
``[N]`` with values ``0..C-1``, ``source_probs`` is ``[N, Z]`` (each row a distribution over source classes).

- :func:`logme`  LogME (You et al., ICML 2021): the per-sample log marginal likelihood (evidence) of a
  Bayesian linear regression from the features to each one-hot label column, maximised over the prior
  precision ``alpha`` and noise precision ``beta`` (MacKay's fixed point), averaged over classes.
- :func:`leep`   LEEP (Nguyen et al., ICML 2020): average log-likelihood of the "expected empirical
  predictor" ``sum_z P(y|z) theta_z(x)``, with ``P(y|z)`` the empirical conditional of target label given
  source label under the source model's soft predictions ``theta``.
- :func:`nce`    NCE (Tran et al., ICCV 2019): ``-H(Y|Z)``, the negative conditional entropy of target labels
  given hard source labels ``Z`` (the source model's argmax), from their empirical joint distribution.
- :func:`hscore` H-score (Bao et al., ICIP 2019): ``tr(cov(f)^+ cov(E[f|y]))``, how much of the feature
  variance is between-class variance.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["logme", "logme_evidence", "leep", "nce", "hscore", "joint_distribution", "gmm_source_probs", "METRICS"]


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    if n is not None and len(y) != n:
        raise ValueError(f"got {len(y)} labels for {n} samples")
    if y.size and y.min() < 0:
        raise ValueError("labels must be 0..C-1")
    return y


# ------------------------------------------------------------------------------------------------------ LogME
def logme_evidence(features, y, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) / N for ``y = F w + noise``, ``w ~ N(0, I/alpha)``, ``noise ~ N(0, I/beta)``.

    The closed form of the Gaussian marginal ``y ~ N(0, I/beta + F F^T / alpha)``, written with the posterior
    mean ``m = beta A^-1 F^T y`` and ``A = alpha I + beta F^T F`` (Bishop, PRML eq. 3.86).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    resid = float(((y - f @ m) ** 2).sum())
    logdet = float(np.linalg.slogdet(a)[1])
    ev = (d * math.log(alpha) + n * math.log(beta) - logdet - beta * resid - alpha * float(m @ m)
          - n * math.log(2 * math.pi)) / 2
    return ev / n


def _max_evidence(u: np.ndarray, sigma: np.ndarray, d: int, f: np.ndarray, y: np.ndarray,
                  max_iter: int = 100, tol: float = 1e-6) -> tuple[float, float, float]:
    """(evidence / N, alpha, beta) at MacKay's fixed point, from the thin SVD ``F = U diag(sigma) V^T``."""
    n = len(y)
    s2 = sigma**2  # the nonzero eigenvalues of F^T F (the other d - len(sigma) are 0)
    uty = u.T @ y
    y2 = float(y @ y)
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        shrink = beta * s2 / (alpha + beta * s2)
        gamma = float(shrink.sum())  # effective number of well-determined parameters
        coef = beta * sigma * uty / (alpha + beta * s2)  # m = V coef
        m2 = float(coef @ coef)
        resid = y2 - float(uty @ uty) + float(((uty - sigma * coef) ** 2).sum())  # ||y - F m||^2
        resid = max(resid, 1e-12)
        new_alpha = gamma / max(m2, 1e-12)
        new_beta = max(n - gamma, 1e-12) / resid
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * alpha / beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    shrink = beta * s2 / (alpha + beta * s2)
    coef = beta * sigma * uty / (alpha + beta * s2)
    m2 = float(coef @ coef)
    resid = max(y2 - float(uty @ uty) + float(((uty - sigma * coef) ** 2).sum()), 0.0)
    logdet = float(np.log(alpha + beta * s2).sum()) + (d - len(s2)) * math.log(alpha)
    ev = (d * math.log(alpha) + n * math.log(beta) - logdet - beta * resid - alpha * m2
          - n * math.log(2 * math.pi)) / 2
    return ev / n, alpha, beta


def logme(features, labels, return_params: bool = False):
    """LogME: mean over classes of the maximum per-sample log evidence of regressing the class indicator.

    With ``return_params`` also the list of ``(alpha, beta)`` per class. Targets can also be real-valued: pass
    a float ``[N, K]`` array as ``labels`` to score a K-output regression.
    """
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    labels = np.asarray(labels)
    if labels.ndim == 2 and np.issubdtype(labels.dtype, np.floating):
        targets = labels.astype(np.float64)
    else:
        y = _labels(labels, n)
        targets = (y[:, None] == np.arange(int(y.max()) + 1)[None]).astype(np.float64)
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} samples")
    u, sigma, _ = np.linalg.svd(f, full_matrices=False)
    keep = sigma > sigma.max(initial=0.0) * max(n, d) * np.finfo(np.float64).eps
    u, sigma = u[:, keep], sigma[keep]
    out = [_max_evidence(u, sigma, d, f, targets[:, k]) for k in range(targets.shape[1])]
    score = float(np.mean([e for e, _, _ in out]))
    return (score, [(a, b) for _, a, b in out]) if return_params else score


# ------------------------------------------------------------------------------------------------ LEEP / NCE
def joint_distribution(source_probs, labels, num_classes: int | None = None) -> np.ndarray:
    """Empirical joint ``P(y, z) = 1/N sum_i theta_z(x_i) [y_i = y]``, shape ``[C, Z]``."""
    theta = np.asarray(source_probs, dtype=np.float64)
    y = _labels(labels, len(theta))
    c = int(num_classes or y.max() + 1)
    onehot = (y[:, None] == np.arange(c)[None]).astype(np.float64)
    return onehot.T @ theta / len(theta)


def leep(source_probs, labels) -> float:
    """LEEP: ``1/N sum_i log sum_z P(y_i | z) theta_z(x_i)``; in ``(-inf, 0]``, higher is better."""
    theta = np.asarray(source_probs, dtype=np.float64)
    if theta.ndim != 2:
        raise ValueError(f"source_probs must be [N, Z], got shape {theta.shape}")
    y = _labels(labels, len(theta))
    joint = joint_distribution(theta, y)
    pz = joint.sum(0, keepdims=True)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = theta @ cond.T  # [N, C]: the expected empirical prediction of every target label
    return float(np.log(eep[np.arange(len(y)), y]).mean())


def nce(source_labels, labels) -> float:
    """NCE: ``-H(Y | Z) = sum_{y,z} P(y, z) log P(y | z)`` from hard source labels; in ``(-inf, 0]``."""
    z = _labels(source_labels)
    y = _labels(labels, len(z))
    zs, z_idx = np.unique(z, return_inverse=True)
    theta = np.zeros((len(z), len(zs)))
    theta[np.arange(len(z)), z_idx] = 1.0
    joint = joint_distribution(theta, y)
    pz = joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log((joint / pz)[nz])).sum())


# ------------------------------------------------------------------------------------------------- H-score
def hscore(features, labels, shrinkage: float | str | None = "auto") -> float:
    """H-score: ``tr(cov(f)^-1 cov(g))`` with ``g_i = E[f | y = y_i]``, the mean feature of sample i's class.

    ``shrinkage=None`` (or 0) is Bao et al.'s score with a pseudo-inverse. It degenerates when the features
    span the samples (``D >= N - 1``, e.g. 100 few-shot images and a 128-d embedding): ``cov(f)^+`` then whitens
    every direction and the score is ``C - 1`` for *any* features. ``"auto"`` (the default) shrinks ``cov(f)``
    towards ``mu I`` with the Ledoit-Wolf coefficient ``a``, ``(1 - a) cov(f) + a mu I``, and scales
    ``cov(g)`` by ``1 - a`` (the regularised H-score of Ibrahim et al., ICLR 2023); a float fixes ``a``.
    Both covariances are maximum-likelihood (divided by N), so only their ratio matters.
    """
    f = np.asarray(features, dtype=np.float64)
    y = _labels(labels, len(f))
    n, d = f.shape
    f = f - f.mean(0, keepdims=True)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    cov_f = f.T @ f / n
    cov_g = g.T @ g / n
    if shrinkage == "auto":
        from sklearn.covariance import ledoit_wolf_shrinkage

        a = float(ledoit_wolf_shrinkage(f, assume_centered=True))
    else:
        a = float(shrinkage or 0.0)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {a}")
    if a == 0.0:
        return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ cov_g))
    mu = float(np.trace(cov_f)) / d
    shrunk = (1 - a) * cov_f + a * mu * np.eye(d)
    return float(np.trace(np.linalg.solve(shrunk, (1 - a) * cov_g)))


# ----------------------------------------------------------------------------------- pseudo source labels
def gmm_source_probs(features, n_components: int, variance: float = 0.8, seed: int = 0) -> np.ndarray:
    """Soft "source labels" for a backbone without a source head (N-LEEP, Li et al., CVPR 2021).

    PCA keeping ``variance`` of the feature variance (at least 1, at most N/2 dimensions), then a diagonal
    Gaussian mixture with ``n_components`` components, seeded; returns its posteriors ``[N, n_components]``.
    LEEP and NCE then treat the mixture components as the source classes.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f = np.asarray(features, dtype=np.float64)
    n = len(f)
    pca = PCA(n_components=min(f.shape[1], max(1, n // 2)), random_state=seed).fit(f)
    keep = int(np.searchsorted(np.cumsum(pca.explained_variance_ratio_), variance) + 1)
    z = pca.transform(f)[:, : max(1, min(keep, pca.n_components_))]
    gmm = GaussianMixture(n_components=min(n_components, n), covariance_type="diag", reg_covar=1e-4,
                          random_state=seed, n_init=1, max_iter=200).fit(z)
    return gmm.predict_proba(z)


METRICS = ("logme", "leep", "nce", "hscore")

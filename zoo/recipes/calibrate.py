"""Temperature scaling (Guo et al. 2017): one scalar fitted on the validation split.

A single-label zoo model ends in a softmax, so its logits are recovered as ``log(p)``
(equal to the logits up to a per-image constant, which a softmax ignores):
``softmax(log(p) / T)`` is the calibrated output. The temperature is chosen to minimise
the negative log-likelihood of the validation labels; it never changes the arg-max, so
accuracy is the same before and after, only the confidence moves.

Multi-label runs are not calibrated: their per-class thresholds were chosen on the
same validation split, and one temperature over the sigmoids would move every threshold;
the run records ``{"method": "none", "reason": ...}`` instead.
"""

from __future__ import annotations

import numpy as np

BINS = 15
# A temperature outside this range means the split was too small or degenerate to say
# anything; bounding keeps the optimiser off a flat likelihood.
_LOG_T_RANGE = (np.log(0.05), np.log(20.0))
_EPS = 1e-12


def logits_of(probs: np.ndarray) -> np.ndarray:
    """Logits (up to a per-row constant) of softmax probabilities ``[N, C]``."""
    return np.log(np.clip(np.asarray(probs, "float64"), _EPS, 1.0))


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax probabilities ``[N, C]`` recomputed at ``temperature``.

    Args:
        probs: Softmax outputs.
        temperature: A positive scalar; 1 returns ``probs`` unchanged.

    Returns:
        ``softmax(log(probs) / temperature)``, float32.
    """
    temperature = check_temperature(temperature)
    if temperature == 1.0:
        return np.asarray(probs, "float32")
    return _softmax(logits_of(probs) / temperature).astype("float32")


def check_temperature(temperature) -> float:
    """Returns ``temperature`` as a float if it is finite and positive, else raises."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a positive number; got {temperature!r}.") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a positive number; got {temperature!r}.")
    return value


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return float(np.mean(log_z - shifted[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``.

    Args:
        logits: ``[N, C]`` logits (or ``log`` of softmax probabilities, see
            :func:`logits_of`).
        labels: ``[N]`` true class indices.

    Returns:
        ``T`` in [0.05, 20]; divide the logits by it.

    Raises:
        ValueError: On empty input, mismatched lengths or labels outside ``[0, C)``.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, "float64")
    labels = _check(logits, labels)
    found = minimize_scalar(lambda log_t: _nll(logits, labels, float(np.exp(log_t))),
                            bounds=_LOG_T_RANGE, method="bounded",
                            options={"xatol": 1e-4})
    return float(np.exp(found.x))


def _check(probs: np.ndarray, labels) -> np.ndarray:
    labels = np.asarray(labels).astype("int64").reshape(-1)
    if probs.ndim != 2 or len(probs) == 0:
        raise ValueError(f"Expected [N, C] scores with N > 0; got shape {probs.shape}.")
    if len(labels) != len(probs):
        raise ValueError(f"{len(probs)} rows of scores but {len(labels)} labels.")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"Labels must be class indices in [0, {probs.shape[1]}); got "
                         f"{labels.min()}..{labels.max()}.")
    return labels


def reliability(probs, labels, bins: int = BINS) -> dict:
    """The reliability diagram's figures: per equal-width confidence bin.

    Args:
        probs: ``[N, C]`` probabilities.
        labels: ``[N]`` true class indices.
        bins: Number of equal-width bins over [0, 1].

    Returns:
        ``{"confidence": [...], "accuracy": [...], "count": [...]}``, one entry per bin:
        the mean top-1 confidence and the accuracy of the images whose confidence falls in
        the bin (``None`` for both in an empty bin), and how many there are.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}.")
    probs = np.asarray(probs, "float64")
    labels = _check(probs, labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Bins are (lo, hi], the first one also holds 0 (as in Guo et al.).
    which = np.clip(np.ceil(confidence * bins).astype("int64") - 1, 0, bins - 1)
    out: dict = {"confidence": [], "accuracy": [], "count": []}
    for b in range(int(bins)):
        inside = which == b
        n = int(inside.sum())
        out["count"].append(n)
        out["confidence"].append(float(confidence[inside].mean()) if n else None)
        out["accuracy"].append(float(correct[inside].mean()) if n else None)
    return out


def expected_calibration_error(probs, labels, bins: int = BINS) -> float:
    """Expected calibration error: the count-weighted mean |accuracy - confidence| per bin.

    Args:
        probs: ``[N, C]`` probabilities.
        labels: ``[N]`` true class indices.
        bins: Number of equal-width confidence bins.

    Returns:
        ECE in [0, 1].
    """
    table = reliability(probs, labels, bins)
    total = sum(table["count"])
    return float(sum(n * abs(a - c) for n, a, c in
                     zip(table["count"], table["accuracy"], table["confidence"]) if n)
                 / total)


def calibration_record(probs, labels, bins: int = BINS) -> dict:
    """Fits the temperature on validation probabilities: run.json's ``calibration`` object.

    Args:
        probs: ``[N, C]`` softmax outputs on the validation split.
        labels: ``[N]`` true class indices.
        bins: Bins of the ECE and the reliability figures.

    Returns:
        ``{"method": "temperature", "temperature", "fitted_on": "validation", "images",
        "ece_before", "ece_after", "bins", "reliability_before", "reliability_after"}``.
    """
    probs = np.asarray(probs, "float64")
    temperature = fit_temperature(logits_of(probs), labels)
    after = scale(probs, temperature)
    return {"method": "temperature", "temperature": round(temperature, 6),
            "fitted_on": "validation", "images": int(len(probs)),
            "ece_before": expected_calibration_error(probs, labels, bins),
            "ece_after": expected_calibration_error(after, labels, bins), "bins": int(bins),
            "reliability_before": reliability(probs, labels, bins),
            "reliability_after": reliability(after, labels, bins)}


def not_calibrated(reason: str) -> dict:
    """run.json's ``calibration`` object for a run that was not calibrated, and why."""
    return {"method": "none", "reason": reason}

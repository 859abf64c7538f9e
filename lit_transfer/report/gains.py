"""A row's gain over its baseline, and whether it may be claimed: the paired t-test over seeds, the convergence
check (or, for runs selected without target labels, the stability rule of :mod:`lit_transfer.claims`) and the
Holm correction over every claimable comparison of the report."""

from __future__ import annotations

import math

from lit_transfer.claims import STABLE_RULE, stable_gain
from lit_transfer.convergence import DRIFT
from lit_transfer.gain import paired_baselines, transfer_gain
from lit_transfer.stats import holm, paired_gain

__all__ = ["VAL_ACC", "unconverged", "add_gain", "correct_for_multiplicity"]

VAL_ACC = "target/val_acc"  # the curve the stability rule reads


def unconverged(rs: list[dict]) -> tuple[int, int]:
    """(runs still improving at the end of their budget, runs whose curve was too short or missing to tell)."""
    flags = [((r.get("convergence") or {}).get("still_improving")) for r in rs]
    return sum(f is True for f in flags), sum(f is None for f in flags)


def _label_free(rs: list[dict]) -> bool:
    """Runs whose convergence was read from target val predictions (selected without target labels)."""
    return any((r.get("convergence") or {}).get("metric") == DRIFT for r in rs)


def _stable_gain(rs: list[dict], base: list[dict], conf: float):
    """The stability rule's paired gain (lit_transfer.claims) over each run's and its paired baseline's target
    val accuracy curves."""
    runs, bases = [], []
    for r in rs:
        paired = paired_baselines(r, base)
        if paired:
            runs.append(((r.get("curve") or {}).get(VAL_ACC)))
            bases.append(((paired[0].get("curve") or {}).get(VAL_ACC)))
    return stable_gain(runs, bases, conf)


def add_gain(row: dict, rs: list[dict], base: list[dict], base_strategy: str, conf: float) -> list[str]:
    """Add the paired gain of ``rs`` over ``base`` (runs paired by :mod:`lit_transfer.gain`, as in W&B
    summaries) to ``row`` with whether it is claimed; returns the notes that explain it."""
    exp, strategy, shots = row["experiment"], row["strategy"], row["target_shots"]
    notes = []
    gains, mismatched = [], 0
    base_seeds = {b.get("seed") for b in base}
    for r in rs:
        g = transfer_gain(r, base)
        if g is not None:
            gains.append(g)
        elif r.get("seed") in base_seeds:
            mismatched += 1
    if mismatched:
        notes.append(f"{exp}/{strategy}/shots={shots}: {mismatched} run(s) not paired with {base_strategy}: "
                     "same seed but a different split_hash (different labelled examples)")
    g = paired_gain(gains, [0.0] * len(gains), conf)
    row.update(pairs=g.n, gain_mean=g.mean, gain_ci=g.half, gain_low=g.low, gain_high=g.high,
               gain_p=g.p, negative_transfer=g.negative, split_mismatch=mismatched)
    return notes + _claim(row, rs, base, base_strategy, conf)


def _claim(row: dict, rs: list[dict], base: list[dict], base_strategy: str, conf: float) -> list[str]:
    """Whether the row's gain is claimed (``gain_claimed``). A gain over a baseline that was still improving
    measures the budget, not the transfer. Runs selected without target labels (domain adaptation) never settle
    by design: their gain is claimed when it holds at every final evaluation (lit_transfer.claims) instead."""
    exp, strategy, shots = row["experiment"], row["strategy"], row["target_shots"]
    base_up, base_unknown = unconverged(base)
    own_up, own_unknown = unconverged(rs)
    why = []
    if _label_free(rs) or _label_free(base):
        stable = _stable_gain(rs, base, conf)
        row["claim_rule"], row["stable_gain"] = STABLE_RULE, stable.as_dict()
        why = [] if stable.claimed else [stable.reason]
    elif base_up or base_unknown:
        why.append(f"{base_strategy} had not converged ({base_up} of {len(base)} runs still improving at the end"
                   f"{f', {base_unknown} unchecked' if base_unknown else ''})")
    if (own_up or own_unknown) and "claim_rule" not in row:
        why.append(f"{strategy} had not converged ({own_up} of {len(rs)} runs still improving"
                   f"{f', {own_unknown} unchecked' if own_unknown else ''})")
    row["gain_claimed"] = not why
    stable = row.get("stable_gain")
    if why:
        row["negative_transfer"] = False
        return [f"{exp}/{strategy}/shots={shots}: no gain or negative transfer is claimed because "
                + " and ".join(why) + (f" (rule: {STABLE_RULE}, for runs selected without target "
                                       "labels)" if stable else "; give every strategy a longer budget")]
    if stable:
        return [f"{exp}/{strategy}/shots={shots}: claimable by the rule for runs selected without target "
                f"labels ({STABLE_RULE}, in place of the convergence check): the paired gain in target val "
                f"accuracy has its {round(100 * conf)}% interval "
                f"{'below' if stable['max_high'] < 0 else 'above'} 0 at each of the final "
                f"{stable['points']} evaluations of {stable['n']} seeds; its test gain is significant only "
                "if its Holm-corrected p is below α"]
    return []


def correct_for_multiplicity(rows: list[dict], conf: float) -> list[str]:
    """Holm-correct the p-values of every claimable gain in the report (converged rows with a paired test):
    ``gain_p_holm``; a negative-transfer flag (or a significant gain, ``gain_significant``) then needs the corrected p
    below α = 1 − conf as well as its interval off zero. Ten rows at α = 0.05 would otherwise give a 40 % chance
    of at least one false flag."""
    family = [r for r in rows if r.get("gain_claimed") and isinstance(r.get("gain_p"), float)
              and math.isfinite(r["gain_p"])]
    if not family:
        return []
    alpha = 1 - conf
    for r, p in zip(family, holm([r["gain_p"] for r in family])):
        r["gain_p_holm"] = p
        r["negative_transfer"] = bool(r.get("negative_transfer")) and p < alpha
        r["gain_significant"] = bool(r.get("gain_low") is not None and r["gain_low"] > 0) and p < alpha
    borderline = [r for r in family if r["gain_p"] < alpha <= r["gain_p_holm"]]
    note = (f"p-values Holm-corrected over the {len(family)} claimable comparisons of this report (α = {alpha:g}): a "
            "gain or negative transfer is flagged only when its corrected p is below α")
    if borderline:
        note += (f"; {len(borderline)} row(s) with p < {alpha:g} before correction are not flagged ("
                 + ", ".join(f"{r['strategy']}/{r['backbone']}/shots={r['target_shots']}" for r in borderline[:6])
                 + (", …" if len(borderline) > 6 else "") + ")")
    return [note]

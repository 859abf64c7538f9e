"""``lit-transfer rank``: which source model or backbone to transfer from, scored before any fine-tuning.

    lit-transfer rank --config configs/data/digits_shift.yaml \\
        --candidates sweep_runs/rank_digits/stages resnet18.a1_in1k small_cnn@weights.safetensors \\
        --metric logme --out rank.json

Each candidate is loaded frozen, embeds the target's labelled training examples (through the feature cache,
:mod:`lit_transfer.features`) and gets every score of :mod:`lit_transfer.ranking.scores`; the table is sorted
by ``--metric``. LEEP and NCE need predictions over *source* classes: a lit_transfer checkpoint brings its
source head; a backbone without one (a timm name, a weights file) gets Gaussian-mixture pseudo-source labels
on its own features (N-LEEP), and ``rank.json`` says so (``"source_labels": "gmm"``).

Candidates:
- ``path/to/run/checkpoints/last.ckpt``: a lit_transfer checkpoint (backbone name from its hyper-parameters);
- a directory: every run below it (e.g. a sweep's ``stages/`` folder of source models), each with the checkpoint
  its ``result.json`` reports (what ``--model.weights=source`` loads), else its ``checkpoints/last.ckpt``;
- ``ARCH@FILE``: timm architecture ``ARCH`` with weights from a .safetensors/.pth/.ckpt file;
- ``ARCH`` or ``ARCH.TAG``: timm's hub weights (cached or downloadable); ``ARCH@random``: random init;
- ``@LIST.txt``: one candidate per line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from lit_transfer.errors import TransferConfigError
from lit_transfer.plan.weights import File, Hub, Random, SourceStage, Weights, parse_weights

PROG = "lit-transfer rank"
RANK_FILE = "rank.json"
SCHEMA = 1

__all__ = ["Candidate", "parse_candidates", "load_target", "score_candidate", "rank", "main", "RANK_FILE"]


@dataclass
class Candidate:
    spec: str  # what the user wrote (or the checkpoint found in a directory)
    backbone: str
    weights: Weights  # Random(), Hub() or File(path): never SourceStage (a stage's checkpoint is a File)
    label: str
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ candidates
def _checkpoint_backbone(path: Path) -> str:
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt or unsafe files come with several exception types
        raise TransferConfigError(f"cannot read checkpoint {path} ({type(err).__name__}); pass ARCH@{path}") from err
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or not isinstance(hp.get("backbone"), str):
        raise TransferConfigError(f"{path} is not a lit_transfer checkpoint (no backbone in its hyper-parameters); "
                                  f"name the architecture: ARCH@{path}")
    return hp["backbone"]


def _describe_shifts(shifts) -> str:
    parts = []
    for s in shifts or []:
        s = dict(s)
        name = s.pop("name", "?")
        parts.append(name + "".join(f"{v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""
                                    for v in s.values()))
    return "+".join(parts) or "none"


def _run_description(ckpt: Path) -> dict:
    """What a run's ``config.yaml`` says its model was trained on (source domain and shifts, strategy)."""
    import yaml

    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {"run_dir": str(run_dir)}
    data = cfg.get("data") or {}
    data = data.get("init_args", data) if isinstance(data, dict) else {}
    trained_on = data.get("train_on", "target")
    domain = (data.get(trained_on if trained_on in ("source", "target") else "target") or {})
    return {"run_dir": str(run_dir), "trained_on": trained_on, "domain": domain.get("name"),
            "shifts": domain.get("shifts") or [], "strategy": (cfg.get("run") or {}).get("strategy")}


def _from_checkpoint(path: Path, spec: str) -> Candidate:
    path = path.resolve()
    backbone = _checkpoint_backbone(path)
    meta = _run_description(path)
    what = meta.get("domain")
    label = f"{backbone} / {what}[{_describe_shifts(meta.get('shifts'))}]" if what else f"{backbone} / {path.name}"
    return Candidate(spec, backbone, File(path), label, meta)


def _run_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint a run reported its results with (``result.json`` ``checkpoint``), else its last.ckpt."""
    try:
        ckpt = json.loads((run_dir / "result.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        ckpt = None
    if ckpt and Path(ckpt).is_file():
        return Path(ckpt)
    last = run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() else None


def parse_candidates(items: list[str]) -> list[Candidate]:
    """Candidates from command-line items (see the module docstring); duplicates are dropped."""
    out: list[Candidate] = []
    queue = [p for item in items for p in str(item).split(",") if p.strip()]
    while queue:
        item = queue.pop(0).strip()
        if item.startswith("@"):
            lines = Path(item[1:]).read_text().splitlines()
            queue[:0] = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = [_run_checkpoint(d.parent) for d in sorted(path.rglob("checkpoints")) if d.is_dir()]
            found = [p for p in found if p is not None]
            if not found:
                raise TransferConfigError(f"no run directory with checkpoints/*.ckpt under {path}")
            out += [_from_checkpoint(p, str(p)) for p in found]
        elif path.suffix == ".ckpt" and "@" not in item:
            if not path.is_file():
                raise TransferConfigError(f"candidate checkpoint not found: {path}")
            out.append(_from_checkpoint(path, item))
        elif "@" in item:
            arch, _, text = item.partition("@")
            weights = Random() if text.lower() == "scratch" else parse_weights(text)
            if isinstance(weights, Random):
                out.append(Candidate(item, arch, weights, f"{arch} (random init)"))
            elif isinstance(weights, Hub):
                out.append(Candidate(item, arch, Hub(), f"{arch} (hub)"))
            else:
                file = Path(text).expanduser() if isinstance(weights, SourceStage) else weights.path
                if not file.is_file():
                    raise TransferConfigError(f"weights file of candidate {item!r} not found: {file}")
                out.append(Candidate(item, arch, File(file.resolve()), f"{arch} / {file.name}"))
        else:
            out.append(Candidate(item, item, Hub(), f"{item} (hub)"))
    seen, unique = set(), []
    for c in out:
        key = (c.backbone, c.weights)
        if key not in seen:
            seen.add(key)
            unique.append(c)
    if not unique:
        raise TransferConfigError("no candidates; pass --candidates CKPT|DIR|ARCH|ARCH@WEIGHTS ...")
    return unique


# ------------------------------------------------------------------------------------------------- target
def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def data_section(configs: list[str]) -> dict:
    """The ``data`` section of the stacked YAML configs (later files override earlier ones)."""
    import yaml

    merged: dict = {}
    for path in configs:
        try:
            cfg = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise TransferConfigError(f"config not found: {path}") from None
        merged = _merge(merged, cfg if isinstance(cfg, dict) else {})
    data = merged.get("data")
    if not isinstance(data, dict):
        raise TransferConfigError(f"no `data:` section in {', '.join(configs)}")
    return dict(data.get("init_args", data)) if "class_path" in data else dict(data)


def load_target(data: dict, shots_seed: Optional[int] = None):
    """``(images_uint8, labels, datamodule)`` of the target's labelled training examples."""
    from lit_transfer.data import DomainPairDataModule

    data = dict(data)
    data.pop("train_on", None)
    if shots_seed is not None:
        data["shots_seed"] = shots_seed
    dm = DomainPairDataModule(**data)
    images, labels = dm.subset("target", "train")
    return images, labels, dm


# ------------------------------------------------------------------------------------------------- scoring
def _build_model(c: Candidate, num_classes: int, in_chans: int, device: str):
    from lit_transfer.module import TransferClassifier

    model = TransferClassifier(backbone=c.backbone, weights=c.weights.config_value, num_classes=num_classes,
                               in_chans=in_chans)
    return model.to(device).eval()


def score_candidate(c: Candidate, targets: list[tuple[Any, Any]], num_classes: int, in_chans: int,
                    device: str = "cpu", cache_dir: Optional[str] = None) -> dict:
    """Every score of one candidate, averaged over the given target draws ``[(images, labels), ...]``."""
    import torch

    from lit_transfer import features
    from lit_transfer.ranking import scores

    started = time.perf_counter()
    try:
        model = _build_model(c, num_classes, in_chans, device)
    except TransferConfigError as err:
        hint = f" (for rank: {c.backbone}@FILE or {c.backbone}@random)" if isinstance(c.weights, Hub) else ""
        raise TransferConfigError(f"candidate {c.spec!r}: {str(err).splitlines()[0]}{hint}") from err
    per_draw: list[dict] = []
    source_labels = "head" if model.source_head is not None else "gmm"
    dim = int(model.backbone.out_features)
    for images, labels in targets:
        feats = features.embeddings(model, images, cache_dir=cache_dir)
        y = np.asarray(labels, dtype=np.int64)
        f = feats.float().numpy().astype(np.float64)
        if model.source_head is not None:
            with torch.no_grad():
                probs = torch.softmax(model.source_head(feats.to(device).float()).float(), -1).cpu().numpy()
        else:
            probs = scores.gmm_source_probs(f, n_components=num_classes)
        per_draw.append({
            "logme": scores.logme(f, y),
            "leep": scores.leep(probs, y),
            "nce": scores.nce(probs.argmax(1), y),
            "hscore": scores.hscore(f, y),
            "hscore_raw": scores.hscore(f, y, shrinkage=None),
        })
    result = {k: float(np.mean([d[k] for d in per_draw])) for k in per_draw[0]}
    return {"candidate": c.spec, "label": c.label, "backbone": c.backbone, "weights": c.weights.config_value,
            "source_labels": source_labels, "feature_dim": dim, "scores": result,
            "scores_per_draw": per_draw if len(per_draw) > 1 else None, **({"source": c.meta} if c.meta else {}),
            "seconds": round(time.perf_counter() - started, 3)}


def rank(candidates: list[Candidate], data: dict, metric: str = "logme", shots_seeds: Optional[list[int]] = None,
         device: str = "cpu", cache_dir: Optional[str] = None, progress=None) -> dict:
    """Score every candidate and sort by ``metric`` (higher is better); the ``rank.json`` payload."""
    from lit_transfer.data import domains
    from lit_transfer.ranking.scores import METRICS

    if metric not in METRICS:
        raise TransferConfigError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    started = time.perf_counter()
    draws = shots_seeds or [None]
    targets, dm = [], None
    for seed in draws:
        images, labels, dm = load_target(data, seed)
        targets.append((images, labels))
    num_classes, in_chans = dm.target_num_classes, domains.in_chans(dm.target)
    rows = []
    for i, c in enumerate(candidates):
        row = score_candidate(c, targets, num_classes, in_chans, device=device, cache_dir=cache_dir)
        rows.append(row)
        if progress:
            progress(f"[{i + 1}/{len(candidates)}] {c.label}: {metric} {row['scores'][metric]:.4f} "
                     f"({row['seconds']:.1f}s)")
    rows.sort(key=lambda r: -r["scores"][metric])
    for metric_name in list(rows[0]["scores"]) if rows else []:
        order = sorted(range(len(rows)), key=lambda i: -rows[i]["scores"][metric_name])
        for pos, i in enumerate(order, 1):
            rows[i].setdefault("ranks", {})[metric_name] = pos
    for pos, r in enumerate(rows, 1):
        r["rank"] = pos
    return {
        "schema": SCHEMA, "metric": metric,
        "target": {"domain": dm.target.identity(), "target_shots": dm.shots["target"], "split_seed": dm.split_seed,
                   "shots_seeds": [dm.split_seed if s is None else s for s in draws],
                   "examples": int(len(targets[0][1])), "num_classes": num_classes},
        "candidates": rows, "wall_s": round(time.perf_counter() - started, 3),
    }


def table(payload: dict) -> str:
    metric = payload["metric"]
    names = ["logme", "leep", "nce", "hscore"]
    header = ["rank", "candidate", "D", *[f"{n}{' *' if n == metric else ''}" for n in names], "source labels", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in payload["candidates"]:
        lines.append("| " + " | ".join([str(r["rank"]), r["label"], str(r["feature_dim"]),
                                        *[f"{r['scores'][n]:.4f}" for n in names], r["source_labels"],
                                        f"{r['seconds']:.1f}"]) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- command
def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Rank candidate source models / backbones for a target "
                                     "by transferability scores computed from one frozen forward pass.")
    parser.add_argument("--config", "-c", action="append", required=True,
                        help="data config (YAML with a `data:` section); repeat to stack")
    parser.add_argument("--candidates", nargs="+", required=True,
                        help="checkpoints, directories of runs, ARCH, ARCH.TAG, ARCH@WEIGHTS_FILE, ARCH@random, "
                             "@list.txt")
    parser.add_argument("--metric", default="logme", choices=["logme", "leep", "nce", "hscore"],
                        help="score the table is sorted by (all are computed and saved)")
    parser.add_argument("--shots", type=int, help="labelled target examples per class (overrides data.target_shots)")
    parser.add_argument("--shots-seeds", type=int, nargs="+",
                        help="average the scores over these draws of the labelled examples (data.shots_seed); "
                             "default: the config's draw")
    parser.add_argument("--out", default=RANK_FILE, help=f"where to write the ranking (default ./{RANK_FILE})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--feature-cache-dir", help="keep embeddings here as .npy files (reused by later calls)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    args = parser.parse_args(argv)
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        data = data_section(args.config)
        if args.shots is not None:
            data["target_shots"] = args.shots
        candidates = parse_candidates(args.candidates)
        payload = rank(candidates, data, args.metric, args.shots_seeds, device=device,
                       cache_dir=args.feature_cache_dir, progress=lambda m: print(m, file=sys.stderr))
    except (TransferConfigError, OSError) as err:
        print(f"{PROG}: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    payload["configs"] = list(args.config)
    out = Path(args.out)
    from lit_transfer.atomic import write_json

    write_json(out, payload)
    t = payload["target"]
    print(f"target: {t['domain']['name']} {_describe_shifts(t['domain']['shifts'])}, {t['examples']} labelled "
          f"examples ({t['target_shots']} per class, draws {t['shots_seeds']}); sorted by {args.metric} (higher is "
          f"better)\n")
    print(table(payload))
    print(f"\n{len(candidates)} candidates in {payload['wall_s']:.1f}s; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

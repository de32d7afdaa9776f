"""Join the run folders of a sharded run (``run --shard K/N``) into one run folder.

``qdqbench merge RUN_DIR... --out DIR [--force]`` checks, before writing anything, that the
folders are one run cut into pieces: the same ``suite.json`` (compared as data, so formatting
does not matter) and the same code (``run.json`` ``git.commit`` and ``versions``). A difference
is refused with one line naming the first differing key, unless ``--force``. Records are the
union of the shards' ``results.jsonl``; a cell present in two folders is fine when the records
are identical (the same folder downloaded twice) and a conflict otherwise, which ``--force``
resolves by keeping an ok record over a failed one, then the later folder on the command line.
Artifacts are copied; a file at the same path with different bytes is a conflict too.

The shard set must be whole: every shard K/N of one count N (``run.json`` ``shard``), each
finished (``state`` "finished" where the run recorded one, and ``finished_at`` set: a shard still
running, interrupted, stopped or crashed is not). The merged run's ``state`` is "finished", or
"partial" when ``--partial`` let an incomplete set through. A missing
shard (``merge: refused: shards 2/4, 4/4 missing (have 1/4, 3/4); use --partial to merge what is
here``), mixed counts (1/2 with 1/3), a plain run among shards, or an unfinished shard is refused
unless ``--partial``; a partial merge records ``"partial": {"missing_shards", "have",
"unfinished_shards", "reasons"}`` in the merged ``run.json`` and its report opens with a
"Partial merge" warning. Lines of a shard's ``results.jsonl`` that could not be read are warned
about on stderr and kept in ``merge.skipped_lines`` (and the notes), so the merged report says so.

The merged ``run.json`` is the first shard's with ``started_at`` = earliest start,
``finished_at`` = latest finish, ``shards`` listing every input (its run id, shard, times,
machine, commit) and ``merge`` recording what was forced. Machine facts that differ between
shards are joined with `` | `` so that ``qdqbench compare`` sees that the merged run's latency
came from more than one machine.
"""

from __future__ import annotations

import copy
import filecmp
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qdqbench.core.errors import QdqbenchError
from qdqbench.core.results import (
    Record,
    SkippedLine,
    load_records,
    load_run_info,
    read_json_file,
    warn_skipped,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

RUN_JSON, SUITE_JSON, RESULTS, ARTIFACTS = "run.json", "suite.json", "results.jsonl", "artifacts"
STATUS_RANK = {"ok": 2, "skipped": 1, "failed": 0}  # --force keeps the better record of a conflict


@dataclass
class MergeResult:
    """What a merge wrote and what it had to force."""

    out_dir: Path
    runs: int
    cells: int
    artifacts: int
    notes: list[str] = field(default_factory=list)  # differences accepted with --force, conflicts resolved
    partial: dict[str, Any] | None = None  # what is missing, when --partial merged an incomplete set


@dataclass
class _Shard:
    path: Path
    info: dict[str, Any]
    suite: Any  # suite.json as data, or None
    records: list[Record]
    skipped: list[SkippedLine] = field(default_factory=list)  # lines of results.jsonl not read

    @property
    def name(self) -> str:
        return str(self.info.get("run_id") or self.path.name)

    @property
    def shard(self) -> tuple[int, int] | None:
        """(K, N) from run.json's ``shard``, None for a run that is not a shard."""
        raw = self.info.get("shard")
        if raw is None:
            return None
        k = raw.get("index") if isinstance(raw, Mapping) else None
        n = raw.get("count") if isinstance(raw, Mapping) else None
        if not (_whole(k) and _whole(n) and 1 <= k <= n):
            raise QdqbenchError(f"{self.path / RUN_JSON}: run.json is damaged (shard is {str(raw)[:80]}; "
                                'expected {"index": K, "count": N} with 1 <= K <= N)')
        return k, n


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)  # True is not a shard number


def _load(path: Path) -> _Shard:
    path = Path(path)
    if not path.is_dir():
        raise QdqbenchError(f"merge: run folder not found: {path}")
    # A shard with no cells (fewer model × task groups than shards) has run.json but no results.
    if not (path / RESULTS).is_file() and not (path / RUN_JSON).is_file():
        raise QdqbenchError(f"merge: not a run folder (no {RESULTS} or {RUN_JSON}): {path}")
    suite = None
    if (path / SUITE_JSON).is_file():
        suite = read_json_file(path / SUITE_JSON, SUITE_JSON)
    info = load_run_info(path)
    skipped: list[SkippedLine] = []
    records = load_records(path, on_skip=skipped.extend)
    return _Shard(path, info, suite, records, skipped)


def _unfinished(s: _Shard) -> str | None:
    """Why a run folder is not a finished run, or None when it is (or cannot be told).

    A run that records a ``state`` is finished only when it says "finished". A shard without a
    ``finished_at`` is still running, interrupted or crashed. A plain run (not a shard) without
    ``state`` or ``finished_at`` (hand-made, or from before run.json had them) cannot be told and
    is only noted (``merge.unfinished_shards``).
    """
    state = s.info.get("state")
    if state is not None and state != "finished":
        return f'its run.json says state "{str(state)[:40]}"'
    if not s.info.get("finished_at") and s.info.get("shard") is not None:
        return "no finished_at in its run.json: still running, interrupted or crashed"
    return None


def _fmt_shards(ids) -> str:
    return ", ".join(f"{k}/{n}" for k, n in ids)


def _check_complete(shards: Sequence[_Shard], partial: bool) -> dict[str, Any] | None:
    """Refuse an incomplete or mixed shard set (or unfinished runs) unless ``partial``.

    Returns what is missing (for run.json's ``partial``) when ``partial`` lets it through, else None.
    """
    ids = {id(s): s.shard for s in shards}  # damaged shard info raises here, --partial or not
    sharded = [s for s in shards if ids[id(s)] is not None]
    plain = [s for s in shards if ids[id(s)] is None]
    have = sorted({ids[id(s)] for s in sharded}, key=lambda kn: (kn[1], kn[0]))
    counts = sorted({n for _, n in have})
    missing = [(k, n) for n in counts for k in range(1, n + 1) if (k, n) not in have]
    unfinished = [s for s in shards if _unfinished(s)]

    reasons = []
    if len(counts) > 1:
        shown = ", ".join(f"{s.path} is {k}/{n}" for s in sharded for k, n in [ids[id(s)]])
        reasons.append(f"mixed shard counts ({shown}): not the shards of one run")
    if sharded and plain:
        reasons.append(f"{plain[0].path} is not a shard (its {RUN_JSON} has no shard) but "
                       f"{sharded[0].path} is shard {_fmt_shards([ids[id(sharded[0])]])}")
    if missing:
        word = "shard" if len(missing) == 1 else "shards"
        reasons.append(f"{word} {_fmt_shards(missing)} missing (have {_fmt_shards(have)})")
    for s in unfinished:
        kn = ids[id(s)]
        who = f"shard {_fmt_shards([kn])} ({s.path})" if kn else str(s.path)
        reasons.append(f"{who} has not finished ({_unfinished(s)})")
    if not reasons:
        return None
    if not partial:
        raise QdqbenchError(f"merge: refused: {'; '.join(reasons)}; use --partial to merge what is here")
    return {"missing_shards": [f"{k}/{n}" for k, n in missing], "have": [f"{k}/{n}" for k, n in have],
            "unfinished_shards": [s.name for s in unfinished], "reasons": reasons}


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, or None when equal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return f"{where}{k}"
            d = first_difference(a[k], b[k], f"{where}{k}.")
            if d is not None:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{where.rstrip('.')}[{i}].")
            if d is not None:
                return d
        return None
    return None if a == b else (where.rstrip(".") or "(top level)")


def _get(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, Mapping):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d


def _check_same(shards: Sequence[_Shard], force: bool, notes: list[str]) -> None:
    first = shards[0]
    for s in shards[1:]:
        problems = []
        if (first.suite is None) != (s.suite is None):
            missing = first if first.suite is None else s
            problems.append(f"{missing.path} has no {SUITE_JSON}")
        elif first.suite is not None:
            d = first_difference(first.suite, s.suite)
            if d is not None:
                problems.append(f"a different suite ({SUITE_JSON} differs at {d})")
        for key in ("git.commit", "versions"):
            d = first_difference(_get(first.info, key), _get(s.info, key), f"{key}.")
            if d is not None:
                problems.append(f"different code ({d}: {_get(first.info, d)!s} vs {_get(s.info, d)!s})")
        for p in problems:
            line = f"{s.path} vs {first.path}: {p}"
            if not force:
                raise QdqbenchError(f"merge: refused: {line}; use --force to merge anyway")
            notes.append(f"forced: {line}")


def _merge_records(shards: Sequence[_Shard], force: bool, notes: list[str]) -> list[Record]:
    chosen: dict[str, tuple[Record, _Shard]] = {}
    for s in shards:
        for r in s.records:
            prev = chosen.get(r.cell)
            if prev is None:
                chosen[r.cell] = (r, s)
                continue
            if prev[0].model_dump() == r.model_dump():
                continue  # the same record twice: the same shard passed twice, or a copy
            line = f"cell {r.cell} differs between {prev[1].path} and {s.path}"
            if not force:
                raise QdqbenchError(f"merge: conflict: {line}; use --force to keep one")
            keep = r if STATUS_RANK.get(r.status, 0) >= STATUS_RANK.get(prev[0].status, 0) else prev[0]
            chosen[r.cell] = (keep, s if keep is r else prev[1])
            notes.append(f"forced: {line}; kept the {keep.status} record from "
                         f"{(s if keep is r else prev[1]).path}")
    records = [r for r, _ in chosen.values()]
    order = _suite_order(shards[0].suite)
    if order:
        records.sort(key=lambda r: order.get(r.cell, len(order)))  # stable: unknown cells keep their order
    return records


def _suite_order(suite_data: Any) -> dict[str, int]:
    if suite_data is None:
        return {}
    from qdqbench.config.suite import Suite, expand

    try:
        suite = Suite.model_validate(suite_data)
        return {c.id: i for i, c in enumerate(expand(suite))}
    except (ValueError, QdqbenchError):
        return {}


def _plan_artifacts(shards: Sequence[_Shard], force: bool, notes: list[str]) -> dict[Path, Path]:
    plan: dict[Path, Path] = {}
    for s in shards:
        root = s.path / ARTIFACTS
        if not root.is_dir():
            continue
        for src in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = src.relative_to(root)
            prev = plan.get(rel)
            if prev is None:
                plan[rel] = src
            elif not filecmp.cmp(prev, src, shallow=False):
                line = f"artifact {rel} differs between {prev.parent} and {src.parent}"
                if not force:
                    raise QdqbenchError(f"merge: conflict: {line}; use --force to keep the first")
                notes.append(f"forced: {line}; kept the first")
    return plan


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _merged_info(shards: Sequence[_Shard], out_dir: Path, force: bool, notes: list[str]) -> dict[str, Any]:
    info = copy.deepcopy(shards[0].info)
    for key in ("shard", "resumed_at", "artifacts"):  # per shard (below); records name their artifacts
        info.pop(key, None)
    info["run_id"] = out_dir.name
    starts = [(w, s.info["started_at"]) for s in shards if (w := _when(s.info.get("started_at")))]
    ends = [(w, s.info["finished_at"]) for s in shards if (w := _when(s.info.get("finished_at")))]
    info["started_at"] = min(starts)[1] if starts else None
    unfinished = [s.name for s in shards if _unfinished(s) or not s.info.get("finished_at")]
    info["finished_at"] = max(ends)[1] if ends and not unfinished else None
    # Facts that differ between shards are joined, so a later compare flags them.
    for section in ("machine", "versions"):
        first = info.get(section)
        merged = dict(first) if isinstance(first, Mapping) else {}
        for s in shards[1:]:
            other = s.info.get(section)
            for k, v in (other.items() if isinstance(other, Mapping) else ()):
                values = str(merged.get(k)).split(" | ") if k in merged else []
                if k not in merged:
                    merged[k] = v
                elif merged[k] != v and str(v) not in values:
                    merged[k] = f"{merged[k]} | {v}"
                    notes.append(f"{section}.{k} differs between shards: {merged[k]}")
        if merged:
            info[section] = merged
    info["shards"] = [
        {"run_id": s.name, "path": str(s.path), "shard": s.info.get("shard"),
         "started_at": s.info.get("started_at"), "finished_at": s.info.get("finished_at"),
         "cells": len(s.records), "git": s.info.get("git"), "machine": s.info.get("machine"),
         "artifacts": s.info.get("artifacts")}
        for s in shards
    ]
    info["merge"] = {"merged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "forced": force, "notes": list(notes), "unfinished_shards": unfinished,
                     "skipped_lines": [{"run_id": s.name, "path": str(k.path), "line": k.line, "reason": k.reason}
                                       for s in shards for k in s.skipped]}
    return info


def merge_runs(run_dirs: Sequence[Path], out_dir: Path, *, force: bool = False,
               partial: bool = False) -> MergeResult:
    """Merge shard run folders into ``out_dir`` (which must not exist or be empty).

    An incomplete shard set, mixed shard counts or an unfinished shard is refused (QdqbenchError)
    unless ``partial``; then the merged run.json says what is missing under ``partial``.
    """
    if not run_dirs:
        raise QdqbenchError("merge: give at least one run folder")
    out_dir = Path(out_dir)
    resolved = {Path(d).resolve() for d in run_dirs}
    if out_dir.resolve() in resolved:
        raise QdqbenchError(f"merge: --out {out_dir} is one of the inputs")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise QdqbenchError(f"merge: --out {out_dir} exists and is not an empty folder")
    # Everything is checked before the first byte is written.
    shards = [_load(Path(d)) for d in dict.fromkeys(Path(d) for d in run_dirs)]
    warn_skipped([k for s in shards for k in s.skipped])  # never dropped silently
    notes: list[str] = []
    _check_same(shards, force, notes)
    missing = _check_complete(shards, partial)
    for s in shards:
        for k in s.skipped:
            notes.append(f"skipped: {k} (its cell may be missing from the merged run)")
    records = _merge_records(shards, force, notes)
    plan = _plan_artifacts(shards, force, notes)
    if missing is not None:
        notes.append(f"partial merge (--partial): {'; '.join(missing['reasons'])}")
    info = _merged_info(shards, out_dir, force, notes)
    if missing is not None:
        info["partial"] = missing
    # Only a whole, finished shard set makes a finished run; anything --partial let through is not.
    if missing is not None:
        info["state"] = "partial"
    elif info.get("finished_at"):
        info["state"] = "finished"
    else:  # plain runs that cannot tell whether they finished: claim nothing
        info.pop("state", None)

    out_dir.mkdir(parents=True, exist_ok=True)
    first_suite = shards[0].path / SUITE_JSON
    if first_suite.is_file():
        write_bytes_atomic(out_dir / SUITE_JSON, first_suite.read_bytes())
    write_text_atomic(out_dir / RESULTS, "".join(r.model_dump_json() + "\n" for r in records))
    for rel, src in plan.items():
        dst = out_dir / ARTIFACTS / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    write_json_atomic(out_dir / RUN_JSON, info)
    return MergeResult(out_dir, len(shards), len(records), len(plan), notes, missing)

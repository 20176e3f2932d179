"""Dataset loaders: local GSM8K / MATH-style files, Hugging Face datasets, synthetic arithmetic.

Every loader returns ``list[Problem]`` with normalised answers (see ``problems.py``). Malformed
input raises ``DataFormatError`` naming the file and line (or array item), because a silently
dropped or mis-parsed row would skew a training run without anyone noticing. The one
exception: rows whose answer is null/empty (two such rows exist in the public MATH train
JSON) are skipped with a logged warning, since they carry no reward signal at all.

A row's fields beyond the question and the answer (test cases, units, tolerances, MATH's
`level`...) are kept as the problem's `metadata`, which every reward function receives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .problems import Problem, _normalize_answer
from .skills import skill_problems
from .synthetic import arithmetic_problems

log = logging.getLogger(__name__)

SOURCES = ("gsm8k", "math", "hf", "arith", "skill")


class DataFormatError(ValueError):
    """A dataset file or row that does not have the expected shape."""


def _jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{where}: invalid JSON ({e.msg})") from None


def _json_or_jsonl_records(path: Path) -> Iterator[tuple[str, Any]]:
    """A JSON array if the file starts with ``[``, JSON Lines otherwise."""
    with path.open(encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head.startswith("["):
        yield from _jsonl_records(path)
        return
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}: invalid JSON array ({e.msg})") from None
    for i, item in enumerate(items):
        yield f"{path}: array item {i}", item


def _field(rec: Any, where: str, *names: str) -> Any:
    if not isinstance(rec, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    for name in names:
        if name in rec:
            return rec[name]
    raise DataFormatError(f"{where}: missing field {' or '.join(map(repr, names))}")


def _question(rec: Any, where: str, *names: str) -> str:
    q = _field(rec, where, *names)
    if not isinstance(q, str) or not q.strip():
        raise DataFormatError(f"{where}: question must be a non-empty string, got {q!r}")
    return q


def _answer(raw: Any, where: str) -> str:
    try:
        return _normalize_answer(raw)
    except (TypeError, ValueError) as e:
        raise DataFormatError(f"{where}: bad answer: {e}") from None


def _metadata(rec: Mapping[str, Any], *used: str) -> dict[str, Any]:
    """The row's fields other than those the loader read: what reward functions get."""
    return {k: v for k, v in rec.items() if k not in used}


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")


def _finish(problems: list[Problem], skipped: int, origin: str) -> list[Problem]:
    if skipped:
        log.warning("%s: skipped %d rows with an empty answer", origin, skipped)
    if not problems:
        raise DataFormatError(f"{origin}: no problems found")
    return problems


def load_gsm8k_jsonl(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """GSM8K JSON Lines: ``question`` and ``answer`` (a worked solution ending ``#### N``)."""
    _check_limit(limit)
    path = Path(path)
    out: list[Problem] = []
    for where, rec in _jsonl_records(path):
        question = _question(rec, where, "question")
        solution = _field(rec, where, "answer")
        if not isinstance(solution, str) or "####" not in solution:
            raise DataFormatError(f"{where}: answer has no '#### <final answer>' line")
        final = solution.rsplit("####", 1)[1].strip()
        if not final:
            raise DataFormatError(f"{where}: empty final answer after '####'")
        out.append(Problem(id=f"gsm8k-{len(out)}", question=question,
                           answer=_answer(final, where),
                           metadata=_metadata(rec, "question", "answer")))
        if limit is not None and len(out) >= limit:
            break
    return _finish(out, 0, str(path))


def load_math(path: str | Path, *, limit: int | None = None) -> list[Problem]:
    """MATH-style JSON array or JSON Lines: ``problem`` (or ``question``) and ``answer``.

    The answer may be a string (LaTeX kept) or a number (``27.0`` -> ``"27"``). Ids come from
    ``unique_id`` or ``id`` when present, else ``math-<row index>``.
    """
    return _load_records(Path(path), ("problem", "question"), "answer", limit=limit,
                         id_prefix="math")


def load_fields(path: str | Path, question_field: str, answer_field: str, *,
                limit: int | None = None) -> list[Problem]:
    """Any JSON array or JSON Lines file, with the question and answer fields named.

    An answer holding a GSM8K-style ``#### N`` line is cut to ``N``; rows with an empty
    answer are skipped (with a warning), as in the other loaders."""
    path = Path(path)
    return _load_records(path, (question_field,), answer_field, limit=limit,
                         id_prefix=path.stem, cut_hashes=True)


def _load_records(path: Path, question_fields: tuple[str, ...], answer_field: str, *,
                  limit: int | None, id_prefix: str, cut_hashes: bool = False
                  ) -> list[Problem]:
    """Problems from a JSON array / JSON Lines file; rows with an empty answer are skipped."""
    _check_limit(limit)
    out: list[Problem] = []
    skipped = 0
    for i, (where, rec) in enumerate(_json_or_jsonl_records(path)):
        question = _question(rec, where, *question_fields)
        qfield = next(f for f in question_fields if f in rec)
        raw = _field(rec, where, answer_field)
        if cut_hashes and isinstance(raw, str) and "####" in raw:
            raw = raw.rsplit("####", 1)[1]
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            skipped += 1
            continue
        rid = rec.get("unique_id", rec.get("id"))
        pid = f"{id_prefix}-{i}" if rid is None else str(rid)
        out.append(Problem(id=pid, question=question, answer=_answer(raw, where),
                           metadata=_metadata(rec, qfield, answer_field)))
        if limit is not None and len(out) >= limit:
            break
    return _finish(out, skipped, str(path))


def load_hf(
    name: str,
    split: str = "train",
    question_field: str = "question",
    answer_field: str = "answer",
    *,
    limit: int | None = None,
) -> list[Problem]:
    """A Hugging Face dataset; ``name`` may carry a config as ``"openai/gsm8k:main"``.

    Answers holding a GSM8K-style ``#### N`` line are cut to ``N``. Needs the optional
    ``datasets`` package and network access (or a warm HF cache).
    """
    _check_limit(limit)
    try:
        import datasets  # lazy: an optional dependency, and slow to import
    except ImportError as e:
        raise RuntimeError(
            "source 'hf' needs the `datasets` package (pip install datasets) and network "
            "access to the Hugging Face Hub; or download the data and use source 'gsm8k'/'math'"
        ) from e
    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:  # network, auth and naming errors all look alike from here
        raise RuntimeError(
            f"could not load HF dataset {name!r} split {split!r} "
            f"(needs network or a cached copy): {e}"
        ) from e
    out: list[Problem] = []
    skipped = 0
    for i, rec in enumerate(ds):
        where = f"{name}[{split}] row {i}"
        question = _question(rec, where, question_field)
        raw = _field(rec, where, answer_field)
        if isinstance(raw, str) and "####" in raw:
            raw = raw.rsplit("####", 1)[1]
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            skipped += 1
            continue
        out.append(Problem(id=f"{repo}-{split}-{i}", question=question,
                           answer=_answer(raw, where),
                           metadata=_metadata(rec, question_field, answer_field)))
        if limit is not None and len(out) >= limit:
            break
    return _finish(out, skipped, f"{name}[{split}]")


def load_problems(
    source: str,
    *,
    path: str | None = None,
    split: str = "train",
    limit: int | None = None,
    question_field: str = "question",
    answer_field: str = "answer",
    seed: int = 0,
    arith: Mapping[str, Any] | None = None,
    skill: Mapping[str, Any] | None = None,
) -> list[Problem]:
    """Load problems from ``source`` (``gsm8k`` | ``math`` | ``hf`` | ``arith`` | ``skill``).

    ``path`` is the file for ``gsm8k``/``math`` and the dataset name for ``hf``; ``split`` and
    the field names only apply to ``hf``. ``arith`` holds keyword arguments of
    ``arithmetic_problems`` (``n``, ``min_operand``, ``max_operand``, ``operators``; e.g.
    ``cfg.data.arith.model_dump()``), drawn with ``seed``. ``limit`` keeps the first N.
    """
    _check_limit(limit)
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")
    if source == "arith":
        kwargs = dict(arith or {})
        n = kwargs.pop("n", 256)
        # Problems are drawn one after another, so the first `limit` equal a shorter draw.
        return arithmetic_problems(n if limit is None else min(n, limit), seed=seed, **kwargs)
    if source == "skill":
        if not skill or "task" not in skill:
            raise ValueError("data source 'skill' needs its settings (`[data.skill]` task, n)")
        n = int(skill.get("n", 4096))
        return skill_problems(skill["task"], n if limit is None else min(n, limit), seed=seed)
    if not path:
        raise ValueError(f"data source {source!r} needs a path (a file, or a dataset name for hf)")
    if source == "gsm8k":
        return load_gsm8k_jsonl(path, limit=limit)
    if source == "math":
        return load_math(path, limit=limit)
    return load_hf(path, split, question_field, answer_field, limit=limit)

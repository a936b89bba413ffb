"""Sample-level benchmark results: the one shape every runner, importer and stage shares.

A row is (benchmark, version, sample_id, attempt, score, error). `score` is in
[0, 1]; a row whose attempt failed has `score=None` and a non-empty `error`.
Summaries are always computed from rows, never taken from a runner.

`SampleTable` keeps the rows columnar (NumPy) so a million rows classify in
about a second; it validates every row on the way in and names the first bad one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.errors import ResultsError

ROW_FIELDS = ("benchmark", "version", "sample_id", "attempt", "score", "error")
_REQUIRED = ("benchmark", "sample_id", "score")


@dataclass(frozen=True)
class SampleTable:
    benchmark: np.ndarray  # str (numpy unicode)
    version: np.ndarray  # str ("" when the runner gave none)
    sample_id: np.ndarray  # str
    attempt: np.ndarray  # int64, >= 0
    score: np.ndarray  # float64 in [0, 1]; NaN exactly where the attempt errored
    error: np.ndarray  # str ("" when the attempt succeeded)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    @classmethod
    def empty(cls) -> SampleTable:
        txt = np.array([], dtype=str)
        return cls(txt, txt.copy(), txt.copy(), np.array([], dtype=np.int64), np.array([], dtype=float), txt.copy())

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], source: str = "results") -> SampleTable:
        bench: list[str] = []
        version: list[str] = []
        sample: list[str] = []
        attempt: list[int] = []
        score: list[float] = []
        error: list[str] = []
        for i, row in enumerate(rows):
            where = f"{source}: row {i + 1}"
            if not isinstance(row, Mapping):
                raise ResultsError(f"{where}: expected an object, got {type(row).__name__}")
            unknown = set(row) - set(ROW_FIELDS)
            if unknown:
                raise ResultsError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
            for key in _REQUIRED:
                if key not in row:
                    raise ResultsError(f"{where}: missing field '{key}'")
            b, s = row["benchmark"], row["sample_id"]
            if not isinstance(b, str) or not b:
                raise ResultsError(f"{where}: 'benchmark' must be a non-empty string")
            if isinstance(s, bool) or not isinstance(s, (str, int)) or s == "":
                raise ResultsError(f"{where}: 'sample_id' must be a non-empty string or integer")
            a = row.get("attempt", 0)
            if isinstance(a, bool) or not isinstance(a, int) or a < 0:
                raise ResultsError(f"{where}: 'attempt' must be a non-negative integer, got {a!r}")
            v = row.get("version") or ""
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise ResultsError(f"{where}: 'version' must be a string")
            err = row.get("error") or ""
            if not isinstance(err, str):
                raise ResultsError(f"{where}: 'error' must be a string or null")
            sc = row["score"]
            if sc is None:
                if not err:
                    raise ResultsError(f"{where}: 'score' is null but no 'error' says why")
                val = math.nan
            else:
                if isinstance(sc, bool) or not isinstance(sc, (int, float)):
                    raise ResultsError(f"{where}: 'score' must be a number in [0, 1], got {sc!r}")
                val = float(sc)
                if math.isnan(val) or math.isinf(val):
                    raise ResultsError(f"{where}: 'score' is {val}; use null with an 'error' for a failed attempt")
                if not 0.0 <= val <= 1.0:
                    raise ResultsError(f"{where}: 'score' {val} is outside [0, 1]")
                if err:
                    raise ResultsError(f"{where}: has both a score and an error; a failed attempt has score null")
            bench.append(b)
            version.append(str(v))
            sample.append(str(s))
            attempt.append(a)
            score.append(val)
            error.append(err)
        # Fixed-width unicode, not objects: sorting and grouping a million ids is 3x faster.
        table = cls(
            np.array(bench, dtype=str),
            np.array(version, dtype=str),
            np.array(sample, dtype=str),
            np.array(attempt, dtype=np.int64),
            np.array(score, dtype=np.float64),
            np.array(error, dtype=str),
        )
        table.check_unique(source)
        return table

    def check_unique(self, source: str = "results") -> None:
        if len(self) < 2:
            return
        order = np.lexsort((self.attempt, self.sample_id, self.benchmark))
        b, q, a = self.benchmark[order], self.sample_id[order], self.attempt[order]
        same = (b[1:] == b[:-1]) & (q[1:] == q[:-1]) & (a[1:] == a[:-1])
        if not same.any():
            return
        pairs = np.stack([order[:-1][same], order[1:][same]], axis=1)
        pairs.sort(axis=1)
        first, second = (int(x) for x in pairs[np.argmin(pairs[:, 1])])
        # Name the duplicate a person meets first when reading the file top to bottom.
        dup_of = int(np.flatnonzero((self.benchmark == self.benchmark[second]) & (self.sample_id == self.sample_id[second])
                                    & (self.attempt == self.attempt[second]))[0])
        raise ResultsError(
            f"{source}: row {second + 1}: duplicate (benchmark, sample_id, attempt) = "
            f"({self.benchmark[second]}, {self.sample_id[second]}, {int(self.attempt[second])}); "
            f"first seen at row {min(first, dup_of) + 1}"
        )

    def benchmarks(self) -> list[str]:
        return [str(b) for b in np.unique(self.benchmark)]

    def select(self, mask: np.ndarray) -> SampleTable:
        return SampleTable(self.benchmark[mask], self.version[mask], self.sample_id[mask], self.attempt[mask],
                           self.score[mask], self.error[mask])

    def split_by_benchmark(self) -> dict[str, SampleTable]:
        """One pass over the rows instead of one per benchmark (a policy may name hundreds)."""
        if len(self) == 0:
            return {}
        names, inverse = np.unique(self.benchmark, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(names.shape[0] + 1))
        return {
            str(name): self.select(order[bounds[i]:bounds[i + 1]]) for i, name in enumerate(names)
        }

    def for_benchmark(self, benchmark_id: str) -> SampleTable:
        return self.select(self.benchmark == benchmark_id)

    def without_benchmark(self, benchmark_id: str) -> SampleTable:
        return self.select(self.benchmark != benchmark_id)

    def with_errors_scored(self, score: float) -> SampleTable:
        """The same rows with every errored attempt given `score` and its error cleared.

        What the rule-out test reads (policy.conformance): an attempt that errored might
        have succeeded, so the bound that rules a threshold out counts it at its worst.
        """
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"score {score} is outside [0, 1]")
        failed = np.isnan(self.score)
        if not failed.any():
            return self
        return SampleTable(self.benchmark, self.version, self.sample_id, self.attempt,
                           np.where(failed, score, self.score), np.where(failed, "", self.error))

    def attempts_per_question(self) -> tuple[np.ndarray, np.ndarray]:
        """(question ids, attempts recorded for each): every row is an attempt, errored or not."""
        ids, counts = np.unique(self.sample_id, return_counts=True)
        return ids, counts

    def concat(self, other: SampleTable) -> SampleTable:
        table = SampleTable(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in ROW_FIELDS))
        table.check_unique()
        return table

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for i in range(len(self)):
            sc = float(self.score[i])
            out.append({
                "benchmark": str(self.benchmark[i]),
                "version": str(self.version[i]),
                "sample_id": str(self.sample_id[i]),
                "attempt": int(self.attempt[i]),
                "score": None if math.isnan(sc) else sc,
                "error": str(self.error[i]) or None,
            })
        return out

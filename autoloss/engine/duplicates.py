"""The duplicate check, an engine service keyed by the representation's fingerprint.

Two candidates with one fingerprint train identically, so only the first is evaluated: the owner of
a fingerprint is the first candidate that had it (the baseline included); every later one, in the
same or any later generation and after a resume, is a duplicate of the owner (recorded with the
owner's id) and goes no further. The set is read from the store once and then kept in memory.
"""

from __future__ import annotations

from autoloss.engine.protocols import Verdict
from autoloss.engine.store import CandidateRow, RunStore

GATE = "equivalence"


class Duplicates:
    def __init__(self, store: RunStore, baseline_generation: int):
        self.owners: dict[str, CandidateRow] = {}
        passed = {v.candidate_id for v in store.verdicts(gate=GATE) if v.passed}
        for row in store.candidates():
            if row.fingerprint and (row.id in passed or row.generation == baseline_generation):
                self.owners.setdefault(row.fingerprint, row)

    def claim(self, row: CandidateRow) -> None:
        """Make ``row`` the owner of its fingerprint unless one exists (the baseline's own claim)."""
        if row.fingerprint:
            self.owners.setdefault(row.fingerprint, row)

    def check(self, row: CandidateRow, fingerprint: str | None) -> Verdict:
        if fingerprint is None:
            return Verdict(GATE, False, "no fingerprint: the candidate cannot be run on the probe inputs")
        owner = self.owners.setdefault(fingerprint, row)
        if owner.id == row.id:
            return Verdict(GATE, True, f"new function (fingerprint {fingerprint})", {"fingerprint": fingerprint})
        where = "the baseline" if owner.generation < 0 else f"generation {owner.generation + 1}"
        return Verdict(GATE, False, f"trains like candidate {owner.id} of {where} ({owner.genotype}): not evaluated again",
                       {"fingerprint": fingerprint, "duplicate_of": owner.id, "duplicate_genotype": owner.genotype})

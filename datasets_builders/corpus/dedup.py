"""Exact and near-duplicate detection for corpus documents; near duplicates through datasketch's MinHash LSH."""

from __future__ import annotations

import hashlib
import re

from datasketch import MinHash, MinHashLSH

from datasets_builders.decontamination import normalized_words

_WORD = re.compile(r"\w+")


def exact_key(text: str) -> str:
    """Equal for texts with the same words, whatever their case, spacing and punctuation."""
    return hashlib.sha256(normalized_words(text).encode()).hexdigest()


class NearDuplicateIndex:
    """MinHash signatures of word shingles in an LSH index: a document whose estimated Jaccard similarity with an
    indexed one reaches ``threshold`` is a near duplicate of it, and is not indexed.

    LSH only proposes candidates; each is confirmed on its estimated similarity. The banding favours recall
    (16 bands x 8 rows find a pair at 0.8 with probability 0.95): a missed duplicate costs more than a check.
    """

    def __init__(
        self, threshold: float = 0.8, num_perm: int = 128, bands: int = 16, shingle: int = 5, seed: int = 1
    ) -> None:
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.shingle = threshold, shingle
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, num_perm // bands))
        self._template = MinHash(num_perm=num_perm, seed=seed)  # its permutations are shared by every signature
        self.signatures: list[MinHash] = []
        self.ids: list[str] = []

    def describe(self) -> str:
        """The method as the card names it."""
        return (
            f"MinHash LSH (datasketch) on word {self.shingle}-grams, {len(self._template.hashvalues)} permutations, "
            f"{self.lsh.b} bands x {self.lsh.r} rows"
        )

    def signature(self, text: str) -> MinHash:
        words = _WORD.findall(text.lower())
        k = self.shingle
        shingles = {" ".join(words[i : i + k]).encode() for i in range(max(1, len(words) - k + 1))}
        template = self._template
        signature = MinHash(
            num_perm=len(template.hashvalues), seed=template.seed, permutations=template.permutations,
            scheme=template.scheme,
        )  # fmt: skip
        signature.update_batch(list(shingles))
        return signature

    def add(self, doc_id: str, text: str) -> str | None:
        """Index a document unless it nearly duplicates one already indexed; then return that one's id."""
        signature = self.signature(text)
        for candidate in sorted(self.lsh.query(signature)):  # keys are insertion order: the earliest match wins
            if signature.jaccard(self.signatures[candidate]) >= self.threshold:
                return self.ids[candidate]
        self.lsh.insert(len(self.ids), signature)
        self.ids.append(doc_id)
        self.signatures.append(signature)
        return None

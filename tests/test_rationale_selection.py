"""Which sampled rationales of one question are kept: distinct ones that passed the filters, at most `keep`."""

from __future__ import annotations

from datasets_builders.rationale_selection import SelectionSettings, select_rationales

A = "Tom has 3 bags of 4 apples, so 3 * 4 = 12 apples. The answer is 12."
A_RESPACED = "tom has 3 bags of 4 apples,  so 3 * 4 = 12 apples! The answer is 12"
A_NEAR = "Tom has 3 bags of 4 apples, so 3 * 4 = 12 apples in all. The answer is 12."
B = "Each bag holds 4 apples and there are 3 bags; multiplying gives 12. The answer is 12."
C = "Four apples in every one of the three bags make twelve apples. The answer is 12."


def test_exact_and_near_duplicates_are_dropped_and_filter_reasons_pass_through():
    verdicts = select_rationales(
        [(A, None), (A_RESPACED, None), (A_NEAR, None), ("", "too_short"), (B, None)], SelectionSettings()
    )
    assert verdicts == [None, "duplicate", "near_duplicate", "too_short", None]


def test_a_rationale_failing_a_filter_does_not_block_a_later_copy():
    assert select_rationales([(A, "inconsistent"), (A, None)], SelectionSettings()) == ["inconsistent", None]


def test_keep_caps_the_distinct_rationales_in_sample_order():
    candidates = [(A, None), (A, None), (B, None), (C, None)]
    assert select_rationales(candidates, SelectionSettings(keep=2)) == [None, "duplicate", None, "over_keep"]
    assert select_rationales(candidates, SelectionSettings(keep=0)) == [None, "duplicate", None, None]


def test_the_similarity_threshold_decides_near_duplicates():
    candidates = [(A, None), (A_NEAR, None)]
    assert select_rationales(candidates, SelectionSettings(near_duplicate=0.99)) == [None, None]
    assert select_rationales(candidates, SelectionSettings(near_duplicate=0.5)) == [None, "near_duplicate"]

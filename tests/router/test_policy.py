"""The router's policies on their own: reproducible draws, Thompson sampling learning the better type, free slots."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from producers.router_policy import Evidence, Prior, by_free_slots, rng_for, thompson

TYPES = ("data_analyst", "qa_tester", "web_developer")


def test_the_same_state_and_rollout_id_give_the_same_choice_and_draws():
    evidence = {"data_analyst": Evidence(3, 1), "qa_tester": Evidence(1, 3)}
    first = thompson(TYPES, evidence, "ro-42", Prior(1, 1))
    again = thompson(list(reversed(TYPES)), dict(evidence), "ro-42", Prior(1, 1))  # order of candidates is irrelevant
    assert first == again
    assert list(first.samples) == sorted(TYPES) and all(0 <= v <= 1 for v in first.samples.values())
    assert first.agent_type == max(first.samples, key=first.samples.__getitem__)
    # Another id draws otherwise: over many ids, every type is chosen at least once under a flat posterior.
    assert {thompson(TYPES, {}, f"ro-{i}").agent_type for i in range(60)} == set(TYPES)
    assert rng_for("ro-1").random() == rng_for("ro-1").random() != rng_for("ro-2").random()


def test_thompson_concentrates_on_the_truly_better_type_of_a_synthetic_stream():
    truth = {"data_analyst": 0.8, "qa_tester": 0.5, "web_developer": 0.3}
    world = random.Random(1)
    seen = {t: [0.0, 0.0] for t in TYPES}
    picks: list[str] = []
    for i in range(600):
        evidence = {t: Evidence(s, f) for t, (s, f) in seen.items()}
        chosen = thompson(TYPES, evidence, f"ro-{i}").agent_type
        reward = 1.0 if world.random() < truth[chosen] else 0.0
        seen[chosen][0] += reward
        seen[chosen][1] += 1 - reward
        picks.append(chosen)
    late = Counter(picks[-200:])
    assert late["data_analyst"] >= 180, late  # >= 90 % of the last 200 go to the best type
    assert Counter(picks[:30])["data_analyst"] < 30  # while it started by exploring the others


def test_fractional_rewards_count_as_partial_successes():
    # A type always rewarded 0.9 beats one always rewarded 0.6 once both have evidence.
    evidence = {"qa_tester": Evidence(0.9 * 50, 0.1 * 50), "web_developer": Evidence(0.6 * 50, 0.4 * 50)}
    picks = Counter(thompson(("qa_tester", "web_developer"), evidence, f"ro-{i}").agent_type for i in range(200))
    assert picks["qa_tester"] > 190, picks


def test_a_strong_prior_holds_back_early_evidence():
    evidence = {"qa_tester": Evidence(2, 0), "web_developer": Evidence(0, 2)}
    weak = Counter(thompson(("qa_tester", "web_developer"), evidence, f"ro-{i}").agent_type for i in range(400))
    strong = Counter(
        thompson(("qa_tester", "web_developer"), evidence, f"ro-{i}", Prior(100, 100)).agent_type for i in range(400)
    )
    assert weak["qa_tester"] > 300 and 150 < strong["qa_tester"] < 250, (weak, strong)


def test_off_takes_the_most_free_slots_and_spreads_ties_by_rollout_id():
    choice = by_free_slots(TYPES, {"data_analyst": 1, "qa_tester": 4, "web_developer": 2}, "ro-1")
    assert choice.agent_type == "qa_tester"
    assert choice.samples == {"data_analyst": 1.0, "qa_tester": 4.0, "web_developer": 2.0}
    ties = Counter(by_free_slots(TYPES, {}, f"ro-{i}").agent_type for i in range(300))
    assert set(ties) == set(TYPES) and min(ties.values()) > 70, ties
    assert by_free_slots(TYPES, {}, "ro-7") == by_free_slots(TYPES, {}, "ro-7")


def test_no_candidate_is_refused():
    with pytest.raises(ValueError, match="at least one candidate"):
        thompson((), {}, "ro-1")

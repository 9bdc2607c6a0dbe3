"""Re-mixing stored components equals re-embedding under the new mixing, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.bond import CombinationBond, DisplacementBond
from bonds.errors import MixingError
from bonds.remix import remix_scores, remix_vectors
from tests.bonds.spaces import displacement, encoder_space, parallel_combination, projector

TEXTS = ["a dog barks", "a red car", "birds at dawn", "a cat sleeps on the sofa"]
MIXINGS = [
    None,
    {"preset": "versatile"},
    {"factors": {"clap": {"text": 0.9, "audio": 0.05}}},
    {"off": ["clap/clap_m"], "factors": {"clap": {"text": 0.5}}},
    {"weights": {"clap": {"clap_g": 3.0, "clap_m": 0.5}}},
    {"off": ["clap"]},
]


@pytest.mark.parametrize("mixing", MIXINGS)
def test_remixed_vectors_equal_re_embedding(mixing):
    _, _, _, bond = parallel_combination()
    stored = bond.components("text", TEXTS)
    resolved = bond.resolve(mixing)
    plan = bond.plan("text", resolved)
    rebuilt = remix_vectors(plan, stored.keys, stored.leaves, stored.gram)
    assert np.allclose(rebuilt, bond.embed("text", TEXTS, mixing), atol=1e-5)
    query = bond.embed("text", ["a barking dog"], mixing)[0]
    scores = remix_scores(query, plan, stored.keys, stored.leaves, stored.gram)
    assert np.allclose(scores, bond.embed("text", TEXTS, mixing) @ query, atol=1e-5)


def test_remix_over_a_sequential_space_with_displacement_first():
    _, _, displaced = displacement(f=0.2)
    clap = encoder_space("clap", 8, 1, ("text", "audio"))
    top = CombinationBond("clap", displaced, {"clap": clap}, {"clap": projector(8, 10, seed=9)}, factors={"text": 0.4})
    stored = top.components("text", TEXTS)
    for mixing in [None, {"factors": {"internvl": {"text": 0.9}, "clap": {"text": 0.1}}}, {"off": ["internvl"]}]:
        plan = top.plan("text", top.resolve(mixing))
        assert np.allclose(remix_vectors(plan, stored.keys, stored.leaves, stored.gram),
                           top.embed("text", TEXTS, mixing), atol=1e-5)


@pytest.mark.parametrize("inner_text", [0.0, 0.3, 1.0])
def test_displacement_of_a_mixed_space_remixes_around_the_collections_mixing(inner_text):
    """The displaced (projected) mix is a leaf: components are taken under the collection's own inner
    factors, so that mixing and any mixing that changes only the outer bond re-mix exactly; changing the
    inner factors cannot, and says why."""
    _, _, _, combined = parallel_combination()
    expert = encoder_space("internvl", 10, 3, ("text", "image"))
    top = DisplacementBond("internvl", combined, expert, projector(16, 10, seed=3), factors={"text": 0.5})
    collection_mixing = {"factors": {"clap": {"text": inner_text}}}
    stored = top.components("text", TEXTS, collection_mixing)
    for mixing in [collection_mixing, {"factors": {"clap": {"text": inner_text}, "internvl": {"text": 0.9}}},
                   {"factors": {"clap": {"text": inner_text}}, "off": ["internvl"]}]:
        plan = top.plan("text", top.resolve(mixing))
        assert np.allclose(remix_vectors(plan, stored.keys, stored.leaves, stored.gram),
                           top.embed("text", TEXTS, mixing), atol=1e-5)
    other = top.plan("text", top.resolve({"factors": {"clap": {"text": 0.65}}}))
    with pytest.raises(MixingError, match="re-index"):
        remix_vectors(other, stored.keys, stored.leaves, stored.gram)


def test_an_expert_weighted_zero_by_default_is_still_stored():
    base = encoder_space("base", 16, 0)
    e1, e2 = encoder_space("e1", 8, 1, ("text",)), encoder_space("e2", 12, 2, ("text",))
    bond = CombinationBond("c", base, {"e1": e1, "e2": e2},
                           {"e1": projector(8, 16, seed=4), "e2": projector(12, 16, seed=5)},
                           factors={"text": 0.5}, weights={"e2": 0.0})
    stored = bond.components("text", TEXTS)
    for mixing in [None, {"weights": {"c": {"e2": 1.0}}}, {"weights": {"c": {"e1": 0.0, "e2": 2.0}}}]:
        plan = bond.plan("text", bond.resolve(mixing))
        assert np.allclose(remix_vectors(plan, stored.keys, stored.leaves, stored.gram),
                           bond.embed("text", TEXTS, mixing), atol=1e-5)


def test_ranking_changes_with_factors():
    """A sanity check that re-mixing is not a no-op: scores under two mixings differ."""
    _, _, _, bond = parallel_combination()
    stored = bond.components("text", TEXTS)
    query = bond.embed("text", ["a barking dog"])[0]
    a = remix_scores(query, bond.plan("text", bond.resolve({"factors": {"clap": {"text": 0.0}}})), stored.keys,
                     stored.leaves, stored.gram)
    b = remix_scores(query, bond.plan("text", bond.resolve({"factors": {"clap": {"text": 1.0}}})), stored.keys,
                     stored.leaves, stored.gram)
    assert not np.allclose(a, b, atol=1e-3)

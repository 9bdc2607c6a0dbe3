"""Every bond formula against an independent numpy reference (method.md), and its invariants."""

from __future__ import annotations

import numpy as np
import pytest

from bonds.bond import CombinationBond, DisplacementBond
from bonds.errors import DimensionError, MixingError, ModalityError
from bonds.reference import pool
from tests.bonds.spaces import displacement, encoder_space, parallel_combination, projector

TEXTS = ["a dog barks at the mailman", "a red car on the road", "birds sing at dawn"]
TOL = 1e-5


def n(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def head_reference(state: dict, prefix: str, x: np.ndarray) -> np.ndarray:
    """One FreeBind head in numpy from its state dict: Linear, BN(eval), ReLU, Linear, BN(eval), L2."""
    p = {k[len(prefix):]: v.detach().double().numpy() for k, v in state.items() if k.startswith(prefix)}

    def bn(h, i):
        return (h - p[f"{i}.running_mean"]) / np.sqrt(p[f"{i}.running_var"] + 1e-5) * p[f"{i}.weight"] + p[f"{i}.bias"]

    h = np.maximum(bn(x @ p["0.weight"].T + p["0.bias"], 1), 0.0)
    return n(bn(h @ p["3.weight"].T + p["3.bias"], 4))


def heads_reference(mixture, x) -> np.ndarray:
    """`(heads, n, d)`: every head's unit output."""
    state = mixture.state_dict()
    return np.stack([head_reference(state, f"heads.{h}.mlps.", x) for h in mixture.heads])


def mixture_mean_reference(mixture, x) -> np.ndarray:
    return heads_reference(mixture, x).mean(axis=0)


def test_projector_matches_numpy_reference():
    mixture = projector(16, 8)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    ours = mixture.project(x)
    assert np.allclose(ours, n(mixture_mean_reference(mixture, x)), atol=TOL)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("f", [0.0, 0.1, 0.5, 0.8, 1.0])
def test_combination_parallel_matches_reference(f):
    base, clap_g, clap_m, bond = parallel_combination()
    got = bond.embed("text", TEXTS, {"factors": {"clap": {"text": f}}})
    h_g = heads_reference(bond.projectors_by_expert["clap_g"], clap_g.embed("text", TEXTS))  # 3 heads
    h_m = heads_reference(bond.projectors_by_expert["clap_m"], clap_m.embed("text", TEXTS))  # 1 head
    pooled = n(np.concatenate([h_g, h_m]).mean(axis=0))  # one mean over all 4 heads (method.md)
    want = n((1 - f) * base.embed("text", TEXTS) + f * pooled)
    assert np.allclose(got, want, atol=TOL)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_combination_invariants_f0_and_f1():
    base, _, _, bond = parallel_combination()
    assert np.allclose(bond.embed("text", TEXTS, {"factors": {"clap": {"text": 0.0}}}), base.embed("text", TEXTS),
                       atol=TOL)
    projected_only = bond.embed("text", TEXTS, {"factors": {"clap": {"text": 1.0}}})
    assert np.allclose(projected_only, bond.embed("text", TEXTS, {"off": [], "factors": {"clap": {"text": 1.0}}}))
    assert not np.allclose(projected_only, base.embed("text", TEXTS), atol=1e-3)


@pytest.mark.parametrize("heads_2", [("mix", "A"), ("mix",)])
def test_parallel_experts_pool_all_their_heads_in_one_mean(heads_2):
    """method.md: "Parallel experts pool all their projectors' outputs in one mean", whatever each
    expert's head count (a partial import can give one expert fewer heads than the other)."""
    base = encoder_space("base", 16, 0)
    e1, e2 = encoder_space("e1", 8, 1, ("text",)), encoder_space("e2", 8, 2, ("text",))
    p1, p2 = projector(8, 16, heads=("mix", "A", "T"), seed=4), projector(8, 16, heads=heads_2, seed=5)
    bond = CombinationBond("c", base, {"e1": e1, "e2": e2}, {"e1": p1, "e2": p2}, factors={"text": 1.0})
    h1, h2 = heads_reference(p1, e1.embed("text", TEXTS)), heads_reference(p2, e2.embed("text", TEXTS))
    assert np.allclose(bond.embed("text", TEXTS), n(np.concatenate([h1, h2]).mean(axis=0)), atol=TOL)
    assert np.allclose(bond.embed("text", TEXTS), pool([h1, h2]), atol=TOL)
    weighted = bond.embed("text", TEXTS, {"weights": {"c": {"e1": 0.25, "e2": 2.0}}})
    assert np.allclose(weighted, n(0.25 * h1.sum(0) + 2.0 * h2.sum(0)), atol=TOL)
    assert np.allclose(weighted, pool([h1, h2], [0.25, 2.0]), atol=TOL)


def test_expert_weights_and_switching_experts_off():
    base, clap_g, _, bond = parallel_combination()
    only_g = bond.embed("text", TEXTS, {"off": ["clap/clap_m"]})
    weighted = bond.embed("text", TEXTS, {"weights": {"clap": {"clap_m": 0.0}}})
    p_g = mixture_mean_reference(bond.projectors_by_expert["clap_g"], clap_g.embed("text", TEXTS))
    want = n(0.7 * base.embed("text", TEXTS) + 0.3 * n(p_g))
    assert np.allclose(only_g, want, atol=TOL) and np.allclose(weighted, want, atol=TOL)


@pytest.mark.parametrize("scale", [1e39, 1e300, 1e-300, 5e-324])
def test_pooling_weights_at_the_float64_limits_give_the_vectors_of_their_ratio(scale):
    """Weights only set the experts' ratio: scaled to 1e39 (finite in float64, inf in the float32 vectors it
    multiplied) they once gave NaN vectors; scaled to 5e-324 they underflowed to zero vectors (issue 19, D3)."""
    _, _, _, bond = parallel_combination()
    want = bond.embed("text", TEXTS, {"weights": {"clap": {"clap_g": 1.0, "clap_m": 0.5}}})
    got = bond.embed("text", TEXTS, {"weights": {"clap": {"clap_g": scale, "clap_m": scale / 2 or scale}}})
    assert np.isfinite(got).all() and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=TOL)
    if scale / 2:  # 5e-324 / 2 is 0 in float64: only the finite, unit answer is asked of it
        assert np.allclose(got, want, atol=TOL)
    assert np.isfinite(pool([np.ones((2, 3, 4)), np.ones((2, 3, 4))], [1e308, 1e308])).all()


def test_combination_brings_a_modality_the_base_lacks():
    base = encoder_space("base", 16, 0, ("text", "image"))
    clap = encoder_space("clap", 8, 1, ("text", "audio"))
    bond = CombinationBond("clap", base, {"clap": clap}, {"clap": projector(8, 16)}, factors={"text": 0.5})
    assert set(bond.modalities) == {"text", "image", "audio"}
    audio_items = [_tone(440.0), _tone(880.0)]
    got = bond.embed("audio", audio_items)
    want = n(mixture_mean_reference(bond.projectors_by_expert["clap"], clap.embed("audio", audio_items)))
    assert np.allclose(got, want, atol=TOL)
    assert np.allclose(bond.embed("image", [_image()]), base.embed("image", [_image()]))  # base-only: unchanged
    with pytest.raises(ModalityError, match="switches off"):
        bond.embed("audio", audio_items, {"off": ["clap"]})


@pytest.mark.parametrize("f", [0.0, 0.2, 0.7, 1.0])
def test_displacement_matches_reference(f):
    base, expert, bond = displacement()
    got = bond.embed("text", TEXTS, {"factors": {"internvl": {"text": f}}})
    projected = n(mixture_mean_reference(bond.projector, base.embed("text", TEXTS)))
    want = n(f * projected + (1 - f) * expert.embed("text", TEXTS))
    assert np.allclose(got, want, atol=TOL)
    assert got.shape == (3, 10)


def test_displacement_base_only_and_expert_only_modalities():
    base, expert, bond = displacement()
    audio = [_tone(300.0)]
    want = n(mixture_mean_reference(bond.projector, base.embed("audio", audio)))
    assert np.allclose(bond.embed("audio", audio), want, atol=TOL)  # only in base: always projected
    only_expert = DisplacementBond("d", encoder_space("b2", 16, 0, ("text",)), expert, projector(16, 10))
    assert np.allclose(only_expert.embed("image", [_image()]), expert.embed("image", [_image()]))


def test_switching_off_a_displacements_expert_keeps_only_the_projected_base():
    base, expert, bond = displacement(f=0.2)
    counter = CountingEncoder(expert)
    got = bond.embed("text", TEXTS, {"off": ["internvl/internvl"]})
    assert np.allclose(got, n(mixture_mean_reference(bond.projector, base.embed("text", TEXTS))), atol=TOL)
    assert counter.calls == []  # an expert that is off costs nothing
    assert np.allclose(got, bond.embed("text", TEXTS, {"factors": {"internvl": {"text": 1.0}}}), atol=TOL)
    with pytest.raises(ModalityError, match="only through expert 'internvl'"):
        DisplacementBond("d", encoder_space("b2", 16, 0, ("text",)), expert, projector(16, 10)).embed(
            "image", [_image()], {"off": ["d/internvl"]})
    # the whole bond off: the expert alone, as before
    assert np.allclose(bond.embed("text", TEXTS, {"off": ["internvl"]}), expert.embed("text", TEXTS), atol=TOL)


def test_default_weights_are_part_of_the_resolved_mixing_and_the_fingerprint():
    base = encoder_space("base", 16, 0)
    e1, e2 = encoder_space("e1", 8, 1, ("text",)), encoder_space("e2", 8, 2, ("text",))

    def bond(weights):
        return CombinationBond("c", base, {"e1": e1, "e2": e2},
                               {"e1": projector(8, 16, seed=4), "e2": projector(8, 16, seed=5)},
                               factors={"text": 0.5}, weights=weights)

    even, lopsided = bond(None), bond({"e2": 3.0})
    assert even.resolve(None).weights == {"c": {"e1": 1.0, "e2": 1.0}}
    assert lopsided.resolve({"weights": {"c": {"e1": 2.0}}}).weights == {"c": {"e1": 2.0, "e2": 3.0}}
    assert not np.allclose(even.embed("text", TEXTS), lopsided.embed("text", TEXTS), atol=1e-3)
    assert even.fingerprint() != lopsided.fingerprint()  # different vectors are never labelled comparable
    assert lopsided.fingerprint() == lopsided.fingerprint({"weights": {"c": {"e2": 3.0}}})


def test_sequential_bond_equals_bonds_applied_one_after_another():
    """InternVL_IB++ shape: displacement first, then a combination on top of the displaced space."""
    base, expert, displaced = displacement(f=0.2)
    clap = encoder_space("clap", 8, 1, ("text", "audio"))
    top = CombinationBond("clap", displaced, {"clap": clap}, {"clap": projector(8, 10, seed=9)}, factors={"text": 0.4})
    got = top.embed("text", TEXTS)
    step1 = displaced.embed("text", TEXTS)  # the first bond on its own
    step2 = n(
        0.6 * step1 + 0.4 * n(mixture_mean_reference(top.projectors_by_expert["clap"], clap.embed("text", TEXTS))))
    assert np.allclose(got, step2, atol=TOL)
    assert [b.bond_name for b in top.bonds()] == ["internvl", "clap"]
    # both bonds are controlled by one mixing
    changed = top.embed("text", TEXTS, {"factors": {"internvl": {"text": 0.0}, "clap": {"text": 0.4}}})
    step1b = expert.embed("text", TEXTS)
    projected = mixture_mean_reference(top.projectors_by_expert["clap"], clap.embed("text", TEXTS))
    assert np.allclose(changed, n(0.6 * step1b + 0.4 * n(projected)), atol=TOL)


class CountingEncoder:
    """Wraps an encoder space's encoder and counts its calls."""

    def __init__(self, space):
        self.inner, self.calls = space.encoder, []
        space.encoder = self
        self.name, self.dim, self.modalities = self.inner.name, self.inner.dim, self.inner.modalities

    def encode(self, modality, items):
        self.calls.append(modality)
        return self.inner.encode(modality, items)


def test_each_encoder_runs_once_and_off_experts_not_at_all():
    base, clap_g, clap_m, bond = parallel_combination()
    counters = {s.name: CountingEncoder(s) for s in (base, clap_g, clap_m)}
    bond.embed("text", TEXTS)
    assert {k: len(c.calls) for k, c in counters.items()} == {"base": 1, "clap_g": 1, "clap_m": 1}
    bond.embed("text", TEXTS, {"off": ["clap"]})
    bond.embed("text", TEXTS, {"factors": {"clap": {"text": 0.0}}})
    bond.embed("text", TEXTS, {"off": ["clap/clap_m"]})
    assert len(counters["clap_m"].calls) == 1 and len(counters["clap_g"].calls) == 2
    bond.embed("text", TEXTS, {"factors": {"clap": {"text": 1.0}}})
    assert len(counters["base"].calls) == 4  # f = 1: the base side is not needed


def test_presets_and_factor_overrides():
    _, _, _, bond = parallel_combination()
    resolved = bond.resolve({"preset": "at_expertise", "factors": {"clap": {"text": 0.2}}})
    assert resolved.factors == {"clap": {"text": 0.2, "audio": 0.8}}
    assert bond.fingerprint({"preset": "versatile"}) == bond.fingerprint(
        {"factors": {"clap": {"text": 0.1, "audio": 0.5}}})
    assert bond.fingerprint({"preset": "versatile"}) != bond.fingerprint({"preset": "at_expertise"})


@pytest.mark.parametrize(
    "mixing, message",
    [
        ({"factors": {"nope": {"text": 0.1}}}, "valid bonds: clap"),
        ({"factors": {"clap": {"image": 0.1}}}, "valid: text, audio"),
        ({"factors": {"clap": {"text": 1.5}}}, r"in \[0, 1\]"),
        ({"factors": {"clap": {"text": float("nan")}}}, r"in \[0, 1\]"),
        ({"preset": "fast"}, "valid presets: versatile, at_expertise"),
        ({"off": ["clap/none"]}, "valid: clap_g, clap_m"),
        ({"weights": {"clap": {"clap_g": -1}}}, ">= 0"),
        ({"off": ["clap/"]}, "valid: clap_g, clap_m"),
        ({"bogus": 1}, "invalid mixing"),
    ],
)
def test_bad_mixings_name_the_valid_choices(mixing, message):
    _, _, _, bond = parallel_combination()
    with pytest.raises(MixingError, match=message):
        bond.embed("text", TEXTS, mixing)


def test_pooling_weights_of_a_displacement_bond_are_refused():
    _, _, bond = displacement()
    with pytest.raises(MixingError, match="only combination bonds"):
        bond.embed("text", TEXTS, {"weights": {"internvl": {"internvl": 2.0}}})


def test_dimension_mismatch_is_refused():
    base = encoder_space("base", 16, 0)
    with pytest.raises(DimensionError, match="8->16"):
        CombinationBond("c", base, {"e": encoder_space("e", 12, 1)}, {"e": projector(8, 16)})


def test_fingerprint_is_stable_and_space_specific():
    _, _, _, bond_a = parallel_combination()
    _, _, _, bond_b = parallel_combination()
    assert bond_a.fingerprint() == bond_b.fingerprint()  # same weights (seeded), same mixing
    _, _, other = displacement()
    assert other.space_id() != bond_a.space_id()


def _tone(freq: float):
    from bonds.encoders import Audio

    t = np.arange(16000) / 16000.0
    return Audio(np.sin(2 * np.pi * freq * t).astype(np.float32), 16000)


def _image():
    from PIL import Image

    return Image.fromarray((np.arange(48 * 48 * 3) % 251).astype(np.uint8).reshape(48, 48, 3))

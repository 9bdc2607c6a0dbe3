"""Space description files: one YAML or JSON file describes a whole served space.

    format_version: 1
    name: starter_e5
    encoders:                      # encoder spaces, by name: registry kind + options
      starter: {kind: starter, options: {topk: 10}}
      e5: {kind: e5}
    base: starter
    bonds:                         # applied in order, each on top of the space before it
      - {name: e5, kind: combination, experts: {e5: {checkpoint: checkpoints/e5_into_starter}},
         factors: {text: 0.1}}
    presets: {english: {e5: {text: 0.1}}, multilingual: {e5: {text: 0.7}}}
    default_preset: english

A displacement bond names one `expert` and one `checkpoint`. Relative checkpoint paths are relative to the
file; encoder options are passed as written. `${models_root}` in any string is replaced by the models root
given at load time (made absolute first). The file is checked against a schema before anything loads:
unknown or repeated keys, factors outside [0, 1], weights that are not finite numbers >= 0, a repeated bond
name, presets of a space without bonds are errors naming the file and the place. Names resolve through the
registries; a missing checkpoint or a dimension that does not fit fails with a clear error.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from bonds.bond import CombinationBond, DisplacementBond
from bonds.checkpoint import load_bond_checkpoint
from bonds.encoders import ENCODERS, create_encoder, list_encoders
from bonds.errors import DescriptionError, FreeBindError, UnknownNameError
from bonds.space import EncoderSpace, Space

FORMAT_VERSION = 1
log = logging.getLogger(__name__)
SHIPPED_DIR = Path(__file__).parent / "spaces"
MODELS_ROOT_TOKEN = "${models_root}"


# --- the schema ------------------------------------------------------------------------------------------
Factor = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]  # no '/': mixings write bond/expert


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderSpec(_Strict):
    kind: str
    options: dict[str, Any] = Field(default_factory=dict)


class ExpertSpec(_Strict):
    checkpoint: str
    weight: float = Field(1.0, ge=0.0, allow_inf_nan=False)


class BondSpec(_Strict):
    name: Name
    kind: Literal["displacement", "combination"]
    expert: str | None = None
    checkpoint: str | None = None
    experts: dict[str, ExpertSpec] | None = None
    factors: dict[str, Factor] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape_of_its_kind(self) -> BondSpec:
        if self.kind == "displacement" and (self.expert is None or self.checkpoint is None or self.experts is not None):
            raise ValueError("a displacement bond has `expert` and `checkpoint` (and no `experts`)")
        if self.kind == "combination" and (not self.experts or self.expert is not None or self.checkpoint is not None):
            raise ValueError("a combination bond has `experts` (at least one: name -> {checkpoint, weight})")
        return self


class DescriptionSpec(_Strict):
    format_version: StrictInt = FORMAT_VERSION
    name: Name | None = None
    encoders: dict[str, EncoderSpec]
    base: str
    bonds: list[BondSpec] = Field(default_factory=list)
    presets: dict[str, dict[str, dict[str, Factor]]] = Field(default_factory=dict)
    default_preset: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DescriptionSpec:
        names = [b.name for b in self.bonds]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"bond names must be unique (mixings name bonds); repeated: {', '.join(repeated)}")
        if (self.presets or self.default_preset) and not self.bonds:
            raise ValueError("presets set bond factors, and this space has no bonds")
        if self.default_preset is not None and self.default_preset not in self.presets:
            raise ValueError(
                f"default_preset {self.default_preset!r} is not one of the presets "
                f"({', '.join(self.presets) or 'none'})")
        return self


def validate_description(data: Any, path: Path) -> DescriptionSpec:
    """The description checked against the schema; a DescriptionError naming the file, the place and the problem."""
    try:
        return DescriptionSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()[:5]]
        raise DescriptionError(f"{path}: " + "; ".join(problems)) from None


def list_spaces(extra_dirs: list[Path] | None = None) -> dict[str, str]:
    """Shipped (and extra) description files by space name."""
    found: dict[str, str] = {}
    for folder in [SHIPPED_DIR, *(extra_dirs or [])]:
        for path in sorted(Path(folder).glob("*.y*ml")) + sorted(Path(folder).glob("*.json")):
            found.setdefault(path.stem, str(path))
    return found


def resolve_space_path(name_or_path: str | Path, extra_dirs: list[Path] | None = None) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") and path.is_file():
        return path
    shipped = list_spaces(extra_dirs)
    if str(name_or_path) in shipped:
        return Path(shipped[str(name_or_path)])
    valid = ", ".join(shipped) or "(none)"
    raise UnknownNameError(f"unknown space {str(name_or_path)!r}: not a description file; shipped spaces: {valid}")


def read_description(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_no_repeated_keys)
        else:
            data = _load_yaml(text)
    except Exception as exc:
        raise DescriptionError(f"{path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise DescriptionError(f"{path}: a description must be a mapping at the top level")
    if data.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise DescriptionError(f"{path}: format_version {data.get('format_version')!r} not supported")
    return data


def _no_repeated_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:  # the parsers would keep the last one silently
        raise ValueError(f"key {repeated[0]!r} appears twice in one mapping")
    return dict(pairs)


def _load_yaml(text: str) -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            self.flatten_mapping(node)
            _no_repeated_keys([(self.construct_object(k, deep=deep), None) for k, _ in node.value])
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _substitute(value: Any, models_root: str | None, where: str) -> Any:
    if isinstance(value, str) and MODELS_ROOT_TOKEN in value:
        if models_root is None:
            raise DescriptionError(
                f"{where} uses {MODELS_ROOT_TOKEN} but no models root was given (FREEBIND_MODELS_ROOT)")
        return value.replace(MODELS_ROOT_TOKEN, str(models_root))
    if isinstance(value, dict):
        return {k: _substitute(v, models_root, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, models_root, where) for v in value]
    return value


def load_space(
    name_or_path: str | Path,
    *,
    models_root: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    encoder_cache: MutableMapping[str, Any] | None = None,
    extra_dirs: list[Path] | None = None,
    encoders: Mapping[str, Any] | None = None,
) -> Space:
    """Build the space a description file describes. `encoder_cache` shares encoders between spaces;
    `encoders` (name -> Encoder) stand in for the description's encoders of those names, unbuilt (training
    scores a served space from vectors it has: training.space_side).

    `device` and `dtype` are defaults for every encoder that takes them (an encoder's own options win);
    neither is part of a space's identity, so vectors compare across devices and precisions (within the
    tested parity)."""
    path = resolve_space_path(name_or_path, extra_dirs)
    raw = read_description(path)
    validate_description(raw, path)
    # absolute first: a relative root would mean the cwd in encoder options and the file's folder in checkpoints
    root = None if models_root is None else str(Path(models_root).resolve())
    data = _substitute(raw, root, str(path))
    cache = encoder_cache if encoder_cache is not None else {}
    try:
        return _build(data, path, {"device": device, "dtype": dtype}, cache, dict(encoders or {}))
    except FreeBindError as exc:
        if isinstance(exc, DescriptionError) and str(path) in exc.message:
            raise
        raise type(exc)(f"{path}: {exc}") from None


# where and how precisely an encoder runs: not what its vectors mean (parity to float32 is tested)
_PLACEMENT = ("device", "dtype")


def _encoder_space(name: str, spec: Mapping[str, Any], defaults: Mapping[str, str | None], cache) -> EncoderSpace:
    kind = spec["kind"]
    options = dict(spec.get("options") or {})
    key = json.dumps([kind, options, defaults], sort_keys=True, default=str)
    if key not in cache:
        list_encoders()  # registers the optional kinds, so their signature (device?) is known on first use too
        factory = ENCODERS.get(kind) if kind in ENCODERS else None
        build_options = dict(options)
        accepted = inspect.signature(factory).parameters if factory is not None else {}
        for option, value in defaults.items():
            if value is not None and option in accepted:
                build_options.setdefault(option, value)
        started = time.perf_counter()
        log.info("loading encoder %s (%s)", name, kind)  # a line per model: loading takes seconds to minutes
        try:
            cache[key] = create_encoder(kind, **build_options)
        except TypeError as exc:  # an option the encoder does not take
            raise DescriptionError(f"encoder {name!r} (kind {kind!r}): {exc}") from None
        log.info("loaded encoder %s in %.1fs", name, time.perf_counter() - started)
    identity = {"kind": kind, "options": {k: v for k, v in options.items() if k not in _PLACEMENT}}
    return EncoderSpace(cache[key], name=name, identity=identity)


def _checkpoint(folder: str, root: Path) -> Path:
    path = Path(folder)
    return path if path.is_absolute() else (root / path)


def _build(data: Mapping[str, Any], path: Path, defaults: Mapping[str, str | None], cache,
           given: Mapping[str, Any]) -> Space:
    """The space of a description that passed `validate_description` (keys and bond kinds are not re-checked);
    `given` encoders replace the description's of the same name."""
    root = path.parent
    encoders_spec = data["encoders"]
    built: dict[str, Space] = {}

    def named(name: str, where: str) -> Space:
        """Encoders are built when a bond first uses them: an unused entry costs no memory."""
        if name not in encoders_spec:
            raise DescriptionError(f"{where} names unknown encoder {name!r}; valid: {', '.join(encoders_spec)}")
        if name not in built and name in given:
            built[name] = EncoderSpace(given[name], name=name, identity={"given": encoders_spec[name]["kind"]})
        if name not in built:
            built[name] = _encoder_space(name, encoders_spec[name], defaults, cache)
        return built[name]

    space = named(data["base"], "base")
    bond_specs = list(data.get("bonds") or [])
    for i, bond in enumerate(bond_specs):
        where = f"bonds[{i}]"
        name, kind = bond["name"], bond["kind"]
        last = i == len(bond_specs) - 1
        presets = data.get("presets") if last else None
        default_preset = data.get("default_preset") if last else None
        if kind == "displacement":
            expert = named(bond["expert"], f"{where}.expert")
            projector, _ = load_bond_checkpoint(
                _checkpoint(bond["checkpoint"], root), kind="displacement",
                d_in=space.dim, d_out=expert.dim, device=defaults["device"] or "cpu",
            )
            space = DisplacementBond(name, space, expert, projector, bond.get("factors"), presets, default_preset,
                                     expert_name=bond["expert"])
            _check_factor_modalities(space, bond, where)
        else:  # combination, the schema's only other kind
            experts, projectors, weights = {}, {}, {}
            for expert_name, spec in bond["experts"].items():
                expert = named(expert_name, f"{where}.experts")
                experts[expert_name] = expert
                projectors[expert_name], _ = load_bond_checkpoint(
                    _checkpoint(spec["checkpoint"], root),
                    kind="combination", d_in=expert.dim, d_out=space.dim, device=defaults["device"] or "cpu",
                )
                weights[expert_name] = float(spec.get("weight", 1.0))
            space = CombinationBond(name, space, experts, projectors, bond.get("factors"), weights, presets,
                                    default_preset)
            _check_factor_modalities(space, bond, where)
    space.name = data.get("name", path.stem)
    if not bond_specs:
        space.presets = {}
    _check_presets(space)
    return space


def _check_factor_modalities(bond: Any, spec: Mapping[str, Any], where: str) -> None:
    """A factor of a modality the bond does not mix would be silently 0."""
    unknown = sorted(set(spec.get("factors") or {}) - set(bond.shared))
    if unknown:
        raise DescriptionError(f"{where}.factors names {', '.join(map(repr, unknown))}; bond {bond.bond_name!r} mixes "
                               f"{', '.join(bond.shared) or 'no modality'} (modalities both its sides embed)")


def _check_presets(space: Space) -> None:
    """Resolve every preset once at load, so a bad preset fails at start-up, not on a request."""
    for preset in getattr(space, "presets", {}) or {}:
        space.resolve({"preset": preset})
    if space.default_preset is not None:
        space.resolve(None)

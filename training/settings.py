"""The settings of a meta-training run: ``TrainSettings``, checked when made, before TensorFlow loads.

``TrainSettings`` (frozen) names every setting with its default and refuses, in one line naming what was
passed and what is allowed, any value that cannot run, without loading data: a bad data spec, algorithm,
strategy, backbone, head or augmentation, a count below 1. ``to_json`` / ``from_json`` round-trip it (the run
file ``out/checkpoints/run.json`` is its JSON). ``resolve(out, settings, resume)`` fills what depends on the
data (augmentation, rotations); a resumed run keeps the settings saved in its run file (``steps`` may only
grow, ``strategy`` may change). ``ways`` left unset is decided once the training data is loaded
(``default_ways``). The CLI takes its choices and defaults from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from metalite.common.files import replace_refusal
from metalite.runtime.head import ACTIVATIONS

from .augment import DEFAULT as DEFAULT_AUGMENT
from .augment import Augment
from .datakind import survey
from .datasets import parse_spec
from .errors import DataError, ModelDirError, SettingsError, StrategyError

ALGORITHMS = ("protonet", "anil", "fomaml", "reptile")
DEFAULT_HPARAMS = {
    "protonet": {"lr": 1e-3, "scale": 1.0, "inner_steps": 0, "inner_lr": 0.1},
    "anil": {"lr": 1e-3, "scale": 1.0, "inner_steps": 5, "inner_lr": 0.1, "first_order": False},
    "fomaml": {"lr": 1e-3, "scale": 1.0, "inner_steps": 5, "inner_lr": 0.01},
    "reptile": {"lr": 1.0, "scale": 1.0, "inner_steps": 5, "inner_lr": 1e-3, "inner_batch": 0},
}
STRATEGIES = ("default", "mirrored", "multiworker")
SUPPORTED_ALGORITHMS = ("protonet", "anil")  # of a distributed strategy (docs/distributed.md)
# The measured recipe (docs/accuracy.md): 60-way episodes (or as many classes as the data has), rotations as
# new classes on Omniglot (None = on for omniglot: data), half the episodes within one alphabet, augmentation.
MAX_DEFAULT_WAYS = 60
RUN_FILE = "run.json"  # in out/checkpoints: the settings of the run, for --resume


def check_supported(strategy: str, algorithm: str) -> None:
    """Raise StrategyError unless ``algorithm`` can be trained under ``strategy``."""
    if strategy not in STRATEGIES:
        raise StrategyError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy != "default" and algorithm not in SUPPORTED_ALGORITHMS:
        raise StrategyError(
            f"--strategy {strategy} supports {' and '.join(SUPPORTED_ALGORITHMS)} only: {algorithm} "
            f"runs an eager inner loop that moves the shared weights; use --strategy default"
        )


def hparams_of(algorithm: str, hparams: dict | None = None) -> dict:
    """The algorithm's default hyper-parameters updated with the run's own."""
    return {**DEFAULT_HPARAMS[algorithm], **(hparams or {})}


def resolve(out, settings, resume: bool = False) -> TrainSettings:
    """``settings`` (a ``TrainSettings`` or a dict of its fields, None values meaning the default) with what
    depends on the data filled in, or the run saved in ``out`` for ``resume`` (``steps`` and ``strategy`` of
    ``settings`` may override it)."""
    given = settings.to_json() if isinstance(settings, TrainSettings) else dict(settings)
    if resume:
        run_file = Path(out) / "checkpoints" / RUN_FILE
        if not run_file.exists():
            raise ModelDirError(f"{out}: nothing to resume (no checkpoints/{RUN_FILE})")
        try:
            saved = TrainSettings.from_json(json.loads(run_file.read_text()))
        except ValueError as e:
            raise ModelDirError(f"{run_file}: corrupt JSON ({e})") from None
        return replace(
            saved,
            steps=max(given.get("steps") or 0, saved.steps),
            **({"strategy": given["strategy"]} if given.get("strategy") else {}),
        )
    s = TrainSettings(**{k: v for k, v in given.items() if v is not None})
    return replace(
        s,
        augment=default_augment(s.data) if s.augment is None else s.augment,
        rotations=parse_spec(s.data)[0] == "omniglot" if s.rotations is None else s.rotations,
    )


def default_augment(spec: str) -> dict:
    """The augmentation that fits the data: the measured default for drawings (glyphs, Omniglot, a folder of ink
    on paper), none for a folder of photos (``datakind``)."""
    kind, paths = parse_spec(spec)
    found = survey(paths[0]) if kind == "folder" else None
    return found.augment() if found is not None else dict(DEFAULT_AUGMENT)


def default_ways(s: TrainSettings, train_data) -> int:
    """``s.ways``, or when unset as many training classes as can fill an episode, at most MAX_DEFAULT_WAYS."""
    if s.ways is not None:
        return int(s.ways)
    return max(2, min(MAX_DEFAULT_WAYS, int((train_data.counts() >= s.shots + s.queries).sum())))


BACKBONES = ("conv4", "dsconv")
POOLS = ("valid", "same")  # conv4 max-pool padding (models._conv4)
COUNTS = (
    "image_size",
    "shots",
    "queries",
    "steps",
    "val_every",
    "val_episodes",
    "val_ways",
    "val_shots",
    "checkpoint_every",
)  # each at least 1


DEFAULT_BACKBONE = {"kind": "conv4", "filters": 64, "embedding_dim": 64}
DEFAULT_HEAD = {"hidden": [64], "activation": "linear"}


def _default_backbone() -> dict:
    return dict(DEFAULT_BACKBONE)


def _default_head() -> dict:
    return {**DEFAULT_HEAD, "hidden": list(DEFAULT_HEAD["hidden"])}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of a meta-training run, with its default; ``__post_init__`` refuses what cannot run.

    ``augment`` None and ``rotations`` None mean "as fits the data" (``resolve`` decides: the measured
    augmentation for drawings, none for photos; rotations for Omniglot); ``ways`` None means as many classes
    as fill an episode, up to MAX_DEFAULT_WAYS; ``channels`` None as the data has them (1 gray, 3 RGB).
    Validation is 20-way (or as many classes as the val split holds): 5-way 1-shot sits at ~98% on Omniglot
    from the first thousand episodes, so the model kept as "best" would be chosen by noise.
    """

    data: str = "glyphs"
    algorithm: str = "protonet"
    backbone: dict = field(default_factory=_default_backbone)
    head: dict = field(default_factory=_default_head)
    image_size: int = 28
    ways: int | None = None
    shots: int = 1
    queries: int = 5
    steps: int = 12000
    seed: int = 0
    rotations: bool | None = None
    within_alphabet: float = 0.5  # fraction of episodes drawn within one alphabet/group
    augment: dict | None = None
    hparams: dict = field(default_factory=dict)
    val_every: int = 1000
    val_episodes: int = 200
    val_ways: int = 20
    val_shots: int = 1
    checkpoint_every: int = 1000
    strategy: str = "default"
    channels: int | None = None
    split_seed: int = (
        0  # which classes (alphabets) are held out: another seed is another fold of the same data
    )
    init: str | None = (
        None  # a float model directory a fine-tuning run starts from (``metalite fleet update``)
    )
    # keep the init model's BatchNorm layers as they are (``models.freeze_batchnorm``)
    freeze_bn: bool = False

    def __post_init__(self):
        parse_spec(self.data)  # DataError naming the spec
        if self.algorithm not in ALGORITHMS:
            raise SettingsError(
                f"unknown algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}"
            )
        check_supported(self.strategy, self.algorithm)
        if self.augment is not None:
            try:
                Augment(**self.augment)
            except (TypeError, ValueError) as e:
                raise DataError(f"augmentation {self.augment}: {e}") from None
        if self.channels not in (None, 1, 3) or isinstance(self.channels, bool):
            raise SettingsError(f"--channels must be 1 (gray) or 3 (RGB), got {self.channels}")
        for key in COUNTS:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
                raise SettingsError(f"--{key.replace('_', '-')} must be an integer, got {v!r}")
            if int(v) < 1:
                raise SettingsError(f"--{key.replace('_', '-')} must be at least 1, got {v}")
            object.__setattr__(self, key, int(v))
        if self.ways is not None and not (_is_int(self.ways) and self.ways >= 2):
            raise SettingsError(f"--ways must be an integer of at least 2, got {self.ways!r}")
        for key in ("seed", "split_seed"):
            if not _is_int(getattr(self, key)):
                raise SettingsError(
                    f"--{key.replace('_', '-')} must be an integer, got {getattr(self, key)!r}"
                )
        if isinstance(self.within_alphabet, bool):  # older runs stored a bool
            object.__setattr__(self, "within_alphabet", float(self.within_alphabet))
        if not (isinstance(self.within_alphabet, (int, float)) and 0 <= self.within_alphabet <= 1):
            raise SettingsError(
                f"--within-alphabet must be a fraction in [0, 1], got {self.within_alphabet!r}"
            )
        object.__setattr__(self, "within_alphabet", float(self.within_alphabet))
        if not isinstance(self.freeze_bn, bool):
            raise SettingsError(f"freeze_bn must be true or false, got {self.freeze_bn!r}")
        if self.rotations not in (None, True, False):
            raise SettingsError(f"rotations must be true, false or null, got {self.rotations!r}")
        self._check_model()
        if not isinstance(self.hparams, dict) or set(self.hparams) - set(
            DEFAULT_HPARAMS[self.algorithm]
        ):
            raise SettingsError(
                f"hparams {self.hparams!r}: {self.algorithm} takes "
                f"{', '.join(DEFAULT_HPARAMS[self.algorithm])}"
            )

    def _check_model(self) -> None:
        """Backbone and head configs: what they give is checked, what they leave out takes the defaults."""
        b, h = self.backbone, self.head
        if not isinstance(b, dict) or b.get("kind", DEFAULT_BACKBONE["kind"]) not in BACKBONES:
            raise SettingsError(f"backbone {b!r}: kind must be one of {', '.join(BACKBONES)}")
        if b.get("pool", "valid") not in POOLS:
            raise SettingsError(f"backbone pool {b['pool']!r}: must be one of {', '.join(POOLS)}")
        for key in ("filters", "embedding_dim"):
            if key in b and not (_is_int(b[key]) and b[key] >= 1):
                raise SettingsError(
                    f"backbone {key} must be an integer of at least 1, got {b[key]!r}"
                )
        hidden = h.get("hidden", DEFAULT_HEAD["hidden"]) if isinstance(h, dict) else None
        if not isinstance(hidden, list) or not all(_is_int(u) and u >= 1 for u in hidden):
            raise SettingsError(f"head {h!r}: hidden must be a list of widths of at least 1")
        if h.get("activation", DEFAULT_HEAD["activation"]) not in ACTIVATIONS:
            raise SettingsError(
                f"head activation {h.get('activation')!r}; choose one of {', '.join(ACTIVATIONS)}"
            )

    def __getitem__(self, key: str):
        """``s["steps"]`` reads like ``s.steps`` (a run's settings were a dict before they had a type)."""
        if key not in _FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def replace(self, **changes) -> TrainSettings:
        """A copy with ``changes``, checked again."""
        return replace(self, **changes)

    @property
    def full_hparams(self) -> dict:
        """The algorithm's default hyper-parameters updated with the run's own."""
        return hparams_of(self.algorithm, self.hparams)

    def to_json(self) -> dict:
        """Every field as JSON-ready values (the run file's content)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, d: dict) -> TrainSettings:
        """The settings ``to_json`` wrote (fields it lacks take their defaults: older run files)."""
        if not isinstance(d, dict):
            raise SettingsError(f"run settings must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - _FIELDS)
        if unknown:
            raise SettingsError(
                f"unknown run settings {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
            )
        return cls(**d)


_FIELDS = frozenset(f.name for f in fields(TrainSettings))


def check_out(out, resume: bool = False, overwrite: bool = True) -> None:
    """Refuse an ``--out`` that is a file, a directory metalite did not write, or (unless ``overwrite``, the CLI's
    ``--force``) an existing model directory; a resumed run continues its own directory."""
    if resume:
        if Path(out).exists() and not Path(out).is_dir():
            raise ModelDirError(f"{out}: exists and is not a directory")
        return
    refusal = replace_refusal(out, overwrite, "config.json", "model directory")
    if refusal:
        raise ModelDirError(
            refusal
            + ("" if overwrite or "--force" not in refusal else " (or --resume to continue it)")
        )

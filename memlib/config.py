"""One validated configuration per run.

``RunConfig`` holds every setting of a training run with a typed, commented default. Defaults are the
paper's Sec. 5 setting (ResNet-18, CIFAR-10, l-inf 8/255, PGD-10 with alpha 2/255, SGD 0.1, decay at
100/150 of 200 epochs, weight decay 5e-4, batch 128). Where a default follows the authors' public code
rather than the text, the comment says so (see REFERENCE_FACTS in the project's shared paper folder).

Unknown keys and invalid values raise ``ConfigError`` with one line, before any data is read or any
model is built. Numbers may be written as fractions (``eps: 8/255``) in YAML files and on the command line.

The training methods are not listed here: ``METHODS`` is a registry that ``memlib.methods`` fills, one entry
per method, naming the RunConfig keys that are the method's own settings and the function that checks them
(see ``MethodRegistry``). ``RunConfig.validate`` checks the general keys itself and runs every registered
method's checks.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import math
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from memlib.models import MODEL_NAMES, canonical_model_name


class MemlibError(Exception):
    """Base class of every error memlib reports to a user as one line."""


class ConfigError(MemlibError, ValueError):
    """An unknown key or an invalid value in a run configuration."""


DATASETS = ("cifar10", "cifar100", "svhn")
DATA_SOURCES = ("auto", "torchvision", "imagefolder")
NORMS = ("linf", "l2")
TRAIN_ATTACKS = ("pgd", "fgsm")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("multistep", "step", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
# Keys naming another run's checkpoint: the identity keeps "<run dir name>/<file>" (the run dir name carries
# that run's config hash), so it does not depend on where the project lives.
WEIGHT_KEYS = ("init_from", "kd_teacher", "kd_std_teacher")
# Keys that do not change what a run computes; they are left out of the run's identity.
NON_IDENTITY_KEYS = ("out_dir", "device", "progress", "name", "data_dir", "data_path", "force")


@dataclass
class RunConfig:
    # --- identity and bookkeeping -------------------------------------------------------------
    name: str = ""  # label used in the run directory name (does not change the run's identity)
    out_dir: str = "runs"  # parent folder of run directories
    seed: int = 0  # model init, shuffling, augmentation, attack random starts
    data_seed: int = 0  # subset choice and label noise (kept apart so two seeds can share the data)
    device: str = "auto"  # auto: CUDA when present, else CPU
    progress: bool = True  # tqdm progress bars with ETA

    # --- data ---------------------------------------------------------------------------------
    dataset: str = "cifar10"  # cifar10 | cifar100 | svhn
    data_source: str = "auto"  # auto: torchvision files if present, else the offline ImageFolder copy, else download
    data_dir: str = "data"  # torchvision root and uint8 cache folder
    data_path: str = ""  # ImageFolder root ({train,test}/<class>/*); empty: look for the offline CIFAR-10 copy
    download: bool = True  # let torchvision download when the files are missing
    train_subset: int = 0  # class-balanced number of training examples; 0 = all
    test_subset: int = 0  # class-balanced number of test examples used for per-epoch evaluation; 0 = all
    noise_rate: float = 0.0  # symmetric label noise r: labels redrawn from P = r/C*ones + (1-r)*I (1.0 = random labels)
    augment: bool = True  # random crop 32 (pad 4) + horizontal flip, per example, on the device

    # --- model --------------------------------------------------------------------------------
    model: str = "resnet18"  # resnet18 | preact_resnet18 | wrn-D-K (e.g. wrn-28-10) | vgg16 | densenet121 | dla
    width: float = 1.0  # channel multiplier (1.0 = published size; the CPU tiers use e.g. 0.125)
    dropout: float = 0.0  # in-block dropout for WRN, before the classifier otherwise
    normalize: bool = False  # per-channel normalization layer inside the model (the authors use none)
    init_from: str = ""  # start from the weights of another run's checkpoint (e.g. <run dir>/final.pt; App. A.3)

    # --- adversarial training -----------------------------------------------------------------
    method: str = "pgd_at"  # standard | pgd_at | trades | mix | pgd_at_te | trades_te | pgd_at_sat | kd_swa |
    # coteaching (see memlib.methods)
    norm: str = "linf"  # threat model: linf | l2
    eps: float = 8 / 255  # perturbation budget
    alpha: float = 2 / 255  # attack step size
    steps: int = 10  # attack steps during training
    train_attack: str = "pgd"  # pgd | fgsm (FGSM with random init, "fast AT"; uses alpha as its step)
    clamp_start: bool = True  # put x + the attack's random start into [0, 1] before its first step. The authors
    # do so in their Sec. 3 PGD-AT only, not in PGD+TE or TRADES; the paper tier sets theirs (this default keeps
    # the identity of runs made before the key existed)
    trades_beta: float = 6.0  # beta of TRADES, Eq. 3
    label_smoothing: float = 0.0  # smoothing of the one-hot targets in the training CE (PGD-AT+LS uses e.g. 0.1)
    gamma_ramp_epochs: int = 50  # Eq. 6: gamma grows linearly from 0 (epoch 1) to 1 over this many epochs
    te_momentum: float = 0.9  # Eq. 7: eta, momentum of the per-example soft labels
    te_weight: float = 300.0  # Eq. 7: weight of the TE term, mean over classes (code: 300; paper: w=30 with a sum)
    te_start: int = 90  # first epoch of soft-label updates and of the sigmoid ramp-up (code: 90)
    te_end: int = 150  # epoch at which the ramp-up reaches full weight (code: 150)
    sat_momentum: float = 0.9  # SAT (pgd_at_sat): alpha, momentum of the per-example targets (SAT code: 0.9)
    sat_start: int = 70  # SAT: first epoch of target updates, PGD-AT before (SAT's TRADES+SAT script: 70 of 100)
    kd_teacher: str = ""  # KD-SWA: robust teacher, another run's checkpoint (e.g. <PGD-AT run dir>/best.pt)
    kd_std_teacher: str = ""  # KD-SWA: optional standard-trained teacher checkpoint (Chen et al.'s second teacher)
    kd_weight: float = 0.6  # KD-SWA: weight of the robust teacher's KD term (Chen et al.'s code: coef_kd2 0.6)
    kd_std_weight: float = 0.1  # KD-SWA: weight of the standard teacher's term, when there is one (code: coef_kd1 0.1)
    kd_temperature: float = 2.0  # KD-SWA: softmax temperature T of the distillation terms (Chen et al.'s code: 2)
    swa_start: int = 106  # KD-SWA: first epoch averaged into the SWA model (Chen: 5 epochs after the 1st lr decay)
    coteach_forget_rate: float = 0.2  # Co-teaching: tau, final fraction of each batch dropped (Han et al.'s code: 0.2)
    coteach_gradual: int = 10  # Co-teaching: T_k, epochs over which the forget rate ramps from 0 to tau (Han et al.)

    # --- optimization -------------------------------------------------------------------------
    epochs: int = 200  # training epochs (CIFAR: 200; SVHN: 80)
    batch_size: int = 128  # training batch size
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1  # initial learning rate (SVHN: 0.01 with cosine)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum (SGD only)
    weight_decay: float = 5e-4  # L2 weight decay (Sec. 3 code: 0)
    lr_schedule: str = "multistep"  # multistep | step | cosine | constant
    lr_milestones: list[int] = field(default_factory=lambda: [100, 150])  # multistep: epochs after which lr decays
    lr_decay: float = 0.1  # multistep/step: factor per decay
    lr_step_every: int = 100  # step: decay every this many epochs (Sec. 3 code: 100)

    # --- per-epoch evaluation -----------------------------------------------------------------
    eval_steps: int = 10  # PGD-k (CE, random start) used for the robust accuracies logged each epoch
    eval_clamp_start: bool = True  # clamp_start for the evaluation attacks (per epoch and memlib.evaluate); the
    # authors' evaluation does not clamp
    train_eval_subset: int = 0  # training examples (fixed, class-balanced) for train natural/robust acc; 0 = all
    eval_every: int = 1  # evaluate every k epochs (and always at the last); best checkpoint among evaluated epochs
    eval_batch_size: int = 512  # batch size of evaluation attacks
    amp: bool = True  # bfloat16 autocast on CUDA (on the CPU only with cpu_amp)
    cpu_amp: bool = False  # bfloat16 autocast on the CPU too: ~1.8x faster where the CPU has AMX/AVX512-BF16
    # (benchmarks/README.md), slower where it has neither; it changes the numbers, so it is off by default
    channels_last: bool = True  # channels_last memory format on CUDA, and on a CPU (with several threads only
    # together with fold_bn; memlib.runs.uses_channels_last)
    fold_bn: bool = True  # attacks and evaluation run the eval-mode model with each BatchNorm folded into the
    # convolution before it: the same function up to float rounding, 1.3x (1 thread) to 1.75x (2 threads) faster
    # PGD-AT on the CPU (runs made before this key existed computed it unfolded; fold_bn: false reproduces them)
    cuda_graphs: bool = True  # CUDA + SGD: record the training step as a CUDA graph each epoch and replay it
    # (same kernels; the eager step at batch 128 is bound by kernel launches); False: eager steps
    snapshot_epochs: list[int] = field(default_factory=list)  # also keep the weights after these epochs as
    # epoch_<k>.pt (0 = the initialization), for analyses along training (Figs. 3, 4b, A.9)

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # fractions like "8/255" and YAML strings work everywhere
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("data_source", self.data_source, DATA_SOURCES)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("train_attack", self.train_attack, TRAIN_ATTACKS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("method", self.method, METHODS)  # the registered methods (memlib.methods fills METHODS)
        if canonical_model_name(self.model) != self.model:  # the models layer knows the names
            bad(f"unknown model {self.model!r}; choose one of: {MODEL_NAMES}")
        if not (0 < self.eps <= 1):
            bad(f"eps must be in (0, 1] (inputs live in [0, 1]); got {self.eps}")
        if not self.alpha > 0:
            bad(f"alpha (attack step size) must be > 0; got {self.alpha}")
        for key in ("steps", "eval_steps", "eval_every", "epochs", "batch_size", "eval_batch_size", "lr_step_every"):
            if getattr(self, key) < 1:
                bad(f"{key} must be >= 1; got {getattr(self, key)}")
        for key in ("seed", "data_seed"):  # torch and numpy take seeds in [0, 2**63); data_seed + 3 is used too
            if not (0 <= getattr(self, key) < 2 ** 62):
                bad(f"{key} must be in [0, 2**62); got {getattr(self, key)}")
        for key in ("train_subset", "test_subset", "train_eval_subset"):
            if getattr(self, key) < 0:
                bad(f"{key} must be >= 0 (0 = all); got {getattr(self, key)}")
        if not (0.0 <= self.noise_rate <= 1.0):
            bad(f"noise_rate must be in [0, 1]; got {self.noise_rate}")
        if not (0.0 <= self.dropout < 1.0):
            bad(f"dropout must be in [0, 1); got {self.dropout}")
        if not (0.0 <= self.label_smoothing < 1.0):
            bad(f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        if not self.width > 0:
            bad(f"width must be > 0; got {self.width}")
        if not self.lr > 0:
            bad(f"lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            bad(f"weight_decay must be >= 0; got {self.weight_decay}")
        if not (0.0 <= self.momentum < 1.0):
            bad(f"momentum must be in [0, 1); got {self.momentum}")
        if not (0 < self.lr_decay <= 1):
            bad(f"lr_decay must be in (0, 1]; got {self.lr_decay}")
        if any(e < 0 or e > self.epochs for e in self.snapshot_epochs):
            bad(f"snapshot_epochs must lie in 0..epochs ({self.epochs}); got {self.snapshot_epochs}")
        if any(m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            bad(f"lr_milestones must be increasing epochs >= 1; got {self.lr_milestones}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            bad("nesterov needs optimizer=sgd with momentum > 0")
        for key in ("eps", "alpha", "lr", "noise_rate", "width", "weight_decay"):
            if not math.isfinite(getattr(self, key)):
                bad(f"{key} must be finite; got {getattr(self, key)}")
        METHODS.check(self)  # every method's own settings (they are keys of every config, whatever its method)

    def method_settings(self) -> dict:
        """The settings of this config's method (the keys its registration names) and their values."""
        return {key: getattr(self, key) for key in METHODS[self.method].settings}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        if not isinstance(values, dict):
            raise ConfigError(f"a run config must be a mapping of keys to values; got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                hint = difflib.get_close_matches(str(key), list(known), n=1)
                raise ConfigError(f"unknown config key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | dict | None = None) -> "RunConfig":
        """Read a YAML file (or nothing) and apply ``key=value`` overrides."""
        values: dict = {}
        if path is not None:
            path = Path(path)
            values = read_yaml(path, "config keys")
        values = dict(values)
        values.update(parse_overrides(overrides))
        return cls.from_dict(values)

    def replace(self, **changes) -> "RunConfig":
        values = self.to_dict()
        values.update(changes)
        return RunConfig.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self, data_source: str) -> dict:
        """The settings that determine what a run computes and differ from their defaults, plus the resolved
        data source. Leaving defaults out means a new config key (added with a default that keeps the old
        behaviour) does not change the identity of existing runs; defaults are therefore never changed."""
        values = {}
        for f in dataclasses.fields(self):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            value = getattr(self, f.name)
            if f.name not in NON_IDENTITY_KEYS and value != default:
                values[f.name] = "/".join(Path(value).parts[-2:]) if f.name in WEIGHT_KEYS else value
        values["resolved_data_source"] = data_source
        return values

    def run_id(self, data_source: str) -> str:
        blob = json.dumps(self.identity(data_source), sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        label = self.name or f"{self.dataset}-{self.model}-{self.method}"
        return f"{_slug(label)}-{digest}"


# --- the training methods' settings ----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class MethodSettings:
    """What the configuration knows of a training method: its name, the RunConfig keys that are its own
    settings, and the functions that check their values (each takes the RunConfig and raises ``ConfigError``
    with one line). ``memlib.methods.MethodSpec`` extends it with the loss and what the training loop sets up."""

    name: str
    settings: tuple[str, ...] = ()
    checks: tuple[Callable[["RunConfig"], None], ...] = ()


class MethodRegistry(Mapping):
    """Method name -> its registration (a ``MethodSettings``), in registration order; ``METHODS`` is the one
    instance. ``memlib.methods`` fills it as it is imported (its ``@method(...)`` decorator calls ``register``),
    so a method's settings and checks are written next to its loss; config sits below methods in the layers and
    never imports it by name. The first read loads the built-in methods (``importlib``, once, unless
    ``memlib.methods`` is already being imported), so a config made before anything imported memlib.methods is
    validated all the same. A method registered at run time (a test's toy method, a notebook's experiment) is
    known in this process only: worker processes (``train_many(jobs=...)``) see the built-in methods."""

    BUILTIN = "memlib.methods"

    def __init__(self) -> None:
        self._entries: dict[str, MethodSettings] = {}

    def register(self, entry: MethodSettings) -> None:
        """Add a method; its name must be new and its settings RunConfig keys (a ``ConfigError`` otherwise)."""
        if not entry.name or not isinstance(entry.name, str):
            raise ConfigError(f"a method needs a name; got {entry.name!r}")
        if entry.name in self._entries:
            raise ConfigError(f"method {entry.name!r} is registered already; unregister it first")
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        unknown = [key for key in entry.settings if key not in fields]
        if unknown:
            raise ConfigError(f"method {entry.name!r}: its settings {', '.join(unknown)} are not RunConfig keys; "
                              f"add them to RunConfig (with defaults that keep existing runs' identities)")
        self._entries[entry.name] = entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def check(self, cfg: "RunConfig") -> None:
        """Run each registered method's checks (a check shared by several methods once), in registration order."""
        seen: set[int] = set()
        for entry in self.values():
            for check in entry.checks:
                if id(check) not in seen:
                    seen.add(id(check))
                    check(cfg)

    def _loaded(self) -> dict[str, MethodSettings]:
        if self.BUILTIN not in sys.modules:  # in sys.modules while it is being imported: its entries are coming
            importlib.import_module(self.BUILTIN)
        return self._entries

    def __getitem__(self, name: str) -> MethodSettings:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"MethodRegistry({', '.join(self)})"


METHODS = MethodRegistry()


def read_yaml(path: str | Path, what: str = "keys") -> dict:
    """A YAML file that must hold a non-empty mapping of ``what`` to values, read with one-line errors: a
    missing file or folder, non-UTF-8 bytes, a syntax error (with its line and column), duplicate keys, an empty
    file (which would silently mean "every default": a 200-epoch full-size run) or another type of document."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          f"save it as UTF-8") from None
    try:
        values = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        line = text.splitlines()[mark.line] if mark is not None and mark.line < len(text.splitlines()) else ""
        hint = "; indent with spaces, YAML forbids tabs" if "\t" in line else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}{hint}") from None
    if values is None:
        raise ConfigError(f"{path} is empty; write the {what} to set (see memlib/config.py), or {{}} for every "
                          f"default")
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of {what} to values; it holds a {type(values).__name__}")
    return values


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice; keep one",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_overrides(overrides: list[str] | dict | None) -> dict:
    """``["eps=8/255", "epochs=3"]`` -> ``{"eps": "8/255", "epochs": 3}`` (values parsed as YAML)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _check_choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(choices)}")


def _coerce(key: str, value, typ):
    """Convert YAML/CLI values to the field's type; fractions like '8/255' become floats."""
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            raise TypeError
        if typ is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, (int, str)):
                return int(value)
            raise TypeError
        if typ is float:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, str) and "/" in value:
                num, den = value.split("/", 1)
                return float(num) / float(den)
            return float(value)
        if typ is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin in (list, types.GenericAlias) or origin is list:
            (inner,) = typing.get_args(typ)
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                value = [value]
            return [_coerce(key, v, inner) for v in value]
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    tname = getattr(typ, "__name__", str(typ))
    raise ConfigError(f"config key {key!r} expects {tname}; got {value!r}")


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return keep.strip("-") or "run"


# --- notebook parameters -----------------------------------------------------------------------------------

NOTEBOOK_TIERS = ("smoke", "quick", "paper")  # params/<notebook>/<tier>.yaml (memlib.report.TIERS)
_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def check_notebook_parameters(namespace: dict, notebook: str) -> None:
    """Check, in the cell right after a notebook's ``parameters`` cell, the parameters it now holds (its own
    defaults plus any that papermill or a user injected): every name must be a parameter of the notebook, every
    value of its declared type (an int where a float is declared; anything where the default is None), numbers
    finite and >= 0 (``jobs`` >= 1), ``tier`` one of smoke/quick/paper, ``base`` and ``*_base`` dicts valid
    RunConfig values. Raises ``ConfigError`` with one line, before any compute: papermill itself only warns
    about an unknown parameter and runs to the end."""
    declared, kinds, bound = _notebook_declarations(notebook)
    project = _find_notebook(notebook).resolve().parent.parent
    namespace.update(resolve_bases({k: namespace[k] for k in declared if k in namespace}, project))  # base names
    unknown = sorted(k for k in namespace if not k.startswith("_") and k not in declared and k not in bound
                     and k not in ("In", "Out", "get_ipython", "exit", "quit", "open")  # IPython's own
                     and not isinstance(namespace[k], types.ModuleType))
    if unknown:
        hint = difflib.get_close_matches(unknown[0], list(declared), n=1)
        raise ConfigError(f"notebook {notebook}: unknown parameter(s) {', '.join(unknown)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; its parameters: {', '.join(declared)}") from None
    for name in declared:
        if name not in namespace or kinds.get(name) is None:
            continue
        value, typ = namespace[name], kinds[name]
        ok = isinstance(value, (int, float) if typ is float else (list, tuple) if typ is list else typ) and \
            (typ is bool or not isinstance(value, bool))
        if not ok:
            hint = " (papermill -p passes text: give lists and dicts with -y or -f)" if typ in (list, dict) else ""
            raise ConfigError(f"notebook {notebook}: parameter {name} expects {typ.__name__}; got {value!r} "
                              f"({type(value).__name__}){hint}") from None
        low = 1 if name == "jobs" else 0
        if typ in (int, float) and not (math.isfinite(value) and value >= low):
            raise ConfigError(f"notebook {notebook}: parameter {name} must be a finite number >= {low}; "
                              f"got {value!r}") from None
    if "tier" in namespace and namespace["tier"] not in NOTEBOOK_TIERS:
        raise ConfigError(f"notebook {notebook}: unknown tier {namespace['tier']!r}; choose one of: "
                          f"{', '.join(NOTEBOOK_TIERS)}") from None
    for name in declared:
        if (name == "base" or name.endswith("_base")) and isinstance(namespace.get(name), dict):
            try:
                RunConfig.from_dict(namespace[name])
            except ConfigError as exc:
                raise ConfigError(f"notebook {notebook}: {name}: {exc}") from None
    if namespace.get("tier") in NOTEBOOK_TIERS:
        _apply_tier(namespace, notebook, project, declared)


FREE_PARAMETERS = ("tier", "interactive", "force", "jobs")  # how a notebook runs, not what it computes


def _apply_tier(namespace: dict, notebook: str, project: Path, declared: list[str]) -> None:
    """Make the namespace hold the chosen tier's values: a parameter still at its cell default takes the value of
    ``params/<notebook>/<tier>.yaml`` (choosing ``tier = "quick"`` in the cell loads the quick tier). A value
    changed by hand that is not the tier's stops in one line for the committed tiers (quick, paper): their
    outputs hold only their own numbers. The smoke tier's outputs are scratch, so there it may be anything."""
    path = project / "params" / notebook / f"{namespace['tier']}.yaml"
    if not path.is_file():
        return
    defaults = resolve_bases(notebook_defaults(notebook, project), project)
    tier_values = resolve_bases(read_yaml(path, "notebook parameters"), project)
    loaded = []
    for name in declared:
        if name in FREE_PARAMETERS or name not in namespace:
            continue
        want = tier_values.get(name, defaults.get(name))
        value = namespace[name]
        if _same(value, want):
            continue
        if _same(value, defaults.get(name)):
            namespace[name] = want
            loaded.append(name)
        elif namespace["tier"] != "smoke":
            raise ConfigError(
                f"notebook {notebook}: {name} = {value!r} is not the {namespace['tier']} tier's value "
                f"({want!r}, {path.relative_to(project)}); outputs/{namespace['tier']}/ holds only that tier's "
                f"numbers: change the tier's file, or experiment with tier = 'smoke'") from None
    if loaded:
        print(f"tier {namespace['tier']}: {len(loaded)} value(s) loaded from {path.relative_to(project)} "
              f"({', '.join(loaded)})")


def _same(a, b) -> bool:
    """Equal as parameter values (a list and a tuple alike; 8 and 8.0 alike)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


BASES_DIR = "params/bases"  # shared run settings, one file per base, named by the notebooks' params files


def resolve_bases(values: dict, project: str | Path) -> dict:
    """Notebook parameters with every ``base`` / ``*_base`` that names a shared base resolved to its RunConfig
    values: ``base: quick-sec5`` reads ``params/bases/quick-sec5.yaml``; ``base: {from: quick-sec5, epochs: 20}``
    reads it and changes ``epochs``. A dict without ``from`` is used as it is. Runs built from one base file are
    the same runs in every notebook that names it."""
    out = dict(values)
    for key, value in values.items():
        if not (key == "base" or key.endswith("_base")):
            continue
        if isinstance(value, str):
            value = {"from": value}
        if isinstance(value, dict) and "from" in value:
            ref = value["from"]
            path = Path(project) / BASES_DIR / f"{ref}.yaml"
            if not isinstance(ref, str) or not path.is_file():
                known = sorted(p.stem for p in (Path(project) / BASES_DIR).glob("*.yaml"))
                raise ConfigError(f"{key}: no shared base named {ref!r} ({BASES_DIR}/{ref}.yaml); known: "
                                  f"{', '.join(known)}")
            out[key] = {**read_yaml(path, "RunConfig keys"), **{k: v for k, v in value.items() if k != "from"}}
    return out


def notebook_defaults(notebook: str, project: str | Path | None = None) -> dict:
    """The default values of a notebook's parameters cell (executed on its own, as papermill would)."""
    names, _, _ = _notebook_declarations(notebook, project)
    return {k: v for k, v in _parameter_cell_values(notebook, project).items() if k in names}


def _parameter_cell_values(notebook: str, project=None) -> dict:
    import json as json_module

    path = _find_notebook(notebook, project)
    cells = [c for c in json_module.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ConfigError(f"{path.name} has no cell tagged 'parameters'")
    source = "".join(tagged[0]["source"]) if isinstance(tagged[0]["source"], list) else tagged[0]["source"]
    values: dict = {}
    exec(compile(source, str(path), "exec"), {}, values)
    return values


def _notebook_declarations(notebook: str, project: str | Path | None = None) -> tuple[list[str], dict, set]:
    """(parameter names in order, {name: declared type or None}, names bound anywhere else in the notebook)
    of ``notebooks/<notebook>.ipynb``: types from the annotations of its ``parameters`` cell, else from the
    types of its default values (executed in a namespace of their own)."""
    import ast
    import json as json_module

    path = _find_notebook(notebook, project)
    cells = [c for c in json_module.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        raise ConfigError(f"{path.name} has no cell tagged 'parameters'")
    defaults: dict = {}
    exec(compile(sources[tagged[0]], str(path), "exec"), {}, defaults)  # the notebook's own default values
    names, kinds = [], {}
    for node in ast.parse(sources[tagged[0]]).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Name) and t.id not in names:
                names.append(t.id)
                note = getattr(node, "annotation", None)
                typ = _TYPES.get(note.id) if isinstance(note, ast.Name) else None
                default = defaults.get(t.id)
                kinds[t.id] = None if default is None else typ or type(default)
    bound = set()
    for i, source in enumerate(sources):
        if i == tagged[0]:
            continue
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names, kinds, bound - set(names)


def _find_notebook(notebook: str, project: str | Path | None = None) -> Path:
    """``notebooks/<notebook>.ipynb`` of ``project``, else of the project found from the current folder (a
    kernel runs in ``notebooks/``) upwards, else next to the memlib package."""
    here = Path.cwd().resolve()
    first = [Path(project)] if project is not None else []
    for folder in (*first, here, *here.parents, Path(__file__).resolve().parent.parent):
        for candidate in (folder / f"{notebook}.ipynb", folder / "notebooks" / f"{notebook}.ipynb"):
            if candidate.is_file():
                return candidate
    raise ConfigError(f"notebook {notebook}: cannot find notebooks/{notebook}.ipynb to read its parameters from")

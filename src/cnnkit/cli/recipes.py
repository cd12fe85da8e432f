"""Recipes: the YAML run configurations shipped in ``cnnkit/cli/recipes/``.

A config is a mapping with the keys below (a recipe is a config shipped with cnnkit)::

    name: digits-lenet5
    description: LeNet-5 on scikit-learn's digits
    task: classification            # classification | segmentation | localization | instance
    seed: 0
    dataset: {name: digits, args: {size: 32}}
    model: {name: lenet5, args: {}}
    # or, fine-tuning: {name: resnet18, weights: imagenet, num_classes: 5, freeze: features}
    compile: {optimizer: adam, learning_rate: 0.001,
              loss: sparse_categorical_crossentropy, metrics: [accuracy]}
    fit: {epochs: 12, batch_size: 32, validation_split: 0.1,
          callbacks: [{name: ReduceLROnPlateau, args: {monitor: loss, factor: 0.5}}],
          restore_best: loss}       # test the weights of the epoch with the lowest loss
    reference: {metric: accuracy, value: 0.95, source: "LeCun et al. 1998",
                tolerance: 0.02}    # the published figure `cnnkit reproduce` compares with

Unknown keys are errors (with a did-you-mean), never silently ignored.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from cnnkit._core.errors import ConfigError, did_you_mean, short, short_repr
from cnnkit._core.registry import check_arguments
from cnnkit._core.safe_yaml import load_yaml

RECIPE_DIR = Path(__file__).with_name("recipes")

TASKS = ("classification", "segmentation", "localization", "instance")
TOP_KEYS = (
    "name",
    "description",
    "task",
    "seed",
    "dataset",
    "model",
    "compile",
    "fit",
    "reference",
)
#: keys a run folder's config.yaml adds; a run's config can be trained again
RUN_KEYS = ("command", "run", "resumed_with")
SECTION_KEYS = {
    "dataset": ("name", "args"),
    "model": ("name", "args", "weights", "num_classes", "freeze"),
    "compile": (
        "optimizer",
        "loss",
        "metrics",
        "learning_rate",
        "loss_weights",
        "lr_schedule",
        "global_clipnorm",
        "precision",
    ),
    "fit": ("epochs", "batch_size", "validation_split", "callbacks", "restore_best"),
}
REQUIRED = ("task", "dataset", "model", "compile", "fit")
#: ``compile.precision``: what ``--precision auto`` (the default) means for a recipe that
#: states a reason to fix it; an explicit ``--precision`` still wins
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def list_recipes() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_summary(name: str) -> str:
    """The first sentence of a shipped recipe's description, on one line."""
    text = " ".join(str(_read_yaml(RECIPE_DIR / f"{name}.yaml").get("description", "")).split())
    end = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)\.\s", text)  # not "et al. "
    return text if end is None else text[: end.start() + 1]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)  # bounded: no aliases, at most 1 MB and 10,000 values
    except OSError as err:
        raise ConfigError(f"cannot read the config {str(path)!r}: {err.strerror}.") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path} is not UTF-8 text ({err.reason}); expected a YAML config."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold a mapping with keys {', '.join(REQUIRED)}; "
            f"found a {type(data).__name__}."
        )
    return data


def _unknown(where: str, keys, allowed) -> None:
    for key in keys:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {short_repr(key)} in {where}; expected one of "
                f"{', '.join(repr(a) for a in allowed)}.{did_you_mean(str(key), allowed)}"
            )


#: ``compile.lr_schedule``: ``{name: cosine}`` (T_max defaults to the run's epochs) or
#: ``{name: step_decay, args: {boundaries: [8], gamma: 0.1}}``
SCHEDULES = ("cosine", "step_decay", "warmup_step_decay")


def schedule_table() -> dict[str, Any]:
    """``compile.lr_schedule`` names -> the schedule functions of
    :mod:`cnnkit.train.schedules` (the names of :data:`SCHEDULES`)."""
    from cnnkit.train import schedules

    return {name: getattr(schedules, name) for name in SCHEDULES}


def named_entry(
    value: Any, source: str, field: str, kind: str, names: Any, example: str
) -> tuple[str, dict]:
    """A config entry ``{name: NAME, args: {...}}`` at ``field`` checked (a mapping, a str
    ``name`` among ``names`` when given, no other keys, ``args`` a mapping): ``(name, args)``."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(
            f"{source}: {field} must be a mapping like {example}; received {short_repr(value)}."
        )
    _unknown(f"{source} {field}", value, ("name", "args"))
    name = value["name"]
    if names is not None and name not in names:
        raise ConfigError(
            f"{source}: unknown {kind} {short_repr(name)} in {field}; expected one of "
            f"{', '.join(names)}.{did_you_mean(name, names)}"
        )
    args = value.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(
            f"{source}: {field} {name} args must be a mapping; received {short_repr(args)}."
        )
    return name, args


def build_schedule(spec: Any, epochs: int, source: str) -> Any:
    """``compile.lr_schedule`` as a cnnkit schedule (None without one); ``cosine``'s
    ``T_max`` defaults to the run's ``epochs``. Arguments are bound to the function's
    parameters before it is called."""
    if spec is None:
        return None
    where = f"{source}: compile.lr_schedule"
    example = "{name: cosine} or {name: step_decay, args: {boundaries: [8]}}"
    name, args = named_entry(spec, source, "compile.lr_schedule", "lr_schedule", SCHEDULES, example)
    table = schedule_table()
    if name == "cosine":
        args = {"T_max": int(epochs), **args}
    args = check_arguments(table[name], args, f"{where} {name}")
    try:
        return table[name](**args)
    except TypeError as err:
        raise ConfigError(f"{where} {name}: {err}") from None


def _check_pretrained(model: dict[str, Any], source: str) -> None:
    """``model.weights`` (a tag such as imagenet, or a path), ``model.num_classes`` and
    ``model.freeze`` (a module path such as ``features``, or a list of them)."""
    weights = model.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ConfigError(
            f"{source}: model.weights must be a tag such as imagenet or a file path; "
            f"received {short_repr(weights)}."
        )
    classes = model.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or classes < 1):  # fmt: skip
        raise ConfigError(
            f"{source}: model.num_classes must be a positive int; received {short_repr(classes)}."
        )
    freeze = model.get("freeze")
    paths = [freeze] if isinstance(freeze, str) else freeze
    if freeze is not None and (
        not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths)
    ):
        raise ConfigError(
            f"{source}: model.freeze must name a part of the model (features, "
            f"features.layer1, backbone) or list them; received {short_repr(freeze)}."
        )


def _check_optimizer(value: Any, source: str) -> None:
    """``compile.optimizer``: a name, or ``{name: sgd, args: {momentum: 0.9}}`` (the name
    and options are checked by ``compile``, which builds it once)."""
    if value is None or isinstance(value, str):
        return
    example = "{name: sgd, args: {momentum: 0.9}}"
    named_entry(value, source, "compile.optimizer", "optimizer", None, example)


#: ``fit.callbacks``: the callbacks a config may add, by their class name in cnnkit.callbacks
CALLBACKS = ("ReduceLROnPlateau", "EarlyStopping")


def callback_table() -> dict[str, type]:
    """``fit.callbacks`` names -> classes: a config's name is looked up here, never in a
    module's attributes."""
    from cnnkit.train import callbacks

    return {name: getattr(callbacks, name) for name in CALLBACKS}


def build_callbacks(specs: Any, source: str) -> list[Any]:
    """``fit.callbacks`` (a list of ``{name: ReduceLROnPlateau, args: {...}}``) as callbacks;
    each entry's args are bound to the class's parameters before it is built."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise ConfigError(
            f"{source}: fit.callbacks must be a list like [{{name: ReduceLROnPlateau, args: "
            f"{{monitor: loss}}}}]; received {short_repr(specs)}."
        )
    built = []
    for spec in specs:
        example = "{name: ReduceLROnPlateau, args: {monitor: loss}}"
        name, args = named_entry(spec, source, "fit.callbacks", "callback", CALLBACKS, example)
        cls = callback_table()[name]
        args = check_arguments(cls, args, f"{source}: fit.callbacks {name}")
        try:
            built.append(cls(**args))
        except TypeError as err:
            raise ConfigError(f"{source}: fit.callbacks {name}: {err}") from None
    return built


def _check_reference(value: Any, source: str) -> None:
    """``reference``: free text, ``{metric, value, source[, tolerance, dataset, note]}``, or a
    list of such mappings (one per ``dataset``)."""
    if value is None or isinstance(value, str):
        return
    if isinstance(value, list) and value:
        for item in value:
            _check_reference(item, source)
            if not isinstance(item, dict):
                raise ConfigError(
                    f"{source}: a reference list holds mappings; received {short_repr(item)}."
                )
        return
    shape = "{metric: accuracy, value: 0.9, source: 'Paper 2017, Table 2', tolerance: 0.02}"
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: reference must be text or a mapping like {shape}; "
                          f"received {short_repr(value)}.")  # fmt: skip
    _unknown(f"{source} reference", value, REFERENCE_KEYS)
    for key in ("metric", "value", "source"):
        if key not in value:
            raise ConfigError(f"{source}: reference needs {key!r} (like {shape}).")
    if not isinstance(value["metric"], str) or not isinstance(value["source"], str):
        raise ConfigError(f"{source}: reference metric and source must be text; received "
                          f"{short_repr(value['metric'])}, {short_repr(value['source'])}.")  # fmt: skip
    if value.get("direction", "higher") not in ("higher", "lower"):
        raise ConfigError(f"{source}: reference direction must be higher or lower (is the "
                          f"figure a least or a most); received {short_repr(value['direction'])}.")  # fmt: skip
    for key in ("value", "tolerance"):
        number = value.get(key, 0.0)
        if key == "tolerance" and number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
            raise ConfigError(f"{source}: reference {key} must be a number >= 0; received "
                              f"{short_repr(number)}.")  # fmt: skip


#: seeds are integers in [0, MAX_SEED] (torch.manual_seed's range, non-negative)
MAX_SEED = 2**63 - 1


def check_seed(value: Any, what: str = "seed") -> int:
    """A seed: an integer >= 0 (not a bool, a float or text); ConfigError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(
            f"{what} must be an integer >= 0 (e.g. seed: 0); received {short(value)}."
        )
    return value


#: keys of a structured ``reference`` (``note``: what differs from the paper and why)
REFERENCE_KEYS = ("metric", "value", "source", "tolerance", "direction", "dataset", "note")


def validate(config: dict[str, Any], source: str) -> dict[str, Any]:
    """Check keys and types of a config; returns a deep copy with defaults filled in."""
    config = {k: copy.deepcopy(v) for k, v in config.items() if k not in RUN_KEYS}
    _unknown(f"{source}", config, TOP_KEYS)
    for key in REQUIRED:
        if key not in config:
            raise ConfigError(f"{source} has no {key!r} section; it needs {', '.join(REQUIRED)}.")
    task = config["task"]
    if task not in TASKS:
        raise ConfigError(
            f"{source}: unknown task {short_repr(task)}; expected one of {', '.join(TASKS)}."
            + did_you_mean(str(task), TASKS)
        )
    for section, allowed in SECTION_KEYS.items():
        value = config[section]
        if not isinstance(value, dict):
            raise ConfigError(
                f"{source}: {section!r} must be a mapping with keys {', '.join(allowed)}; "
                f"received {short_repr(value)}."
            )
        _unknown(f"{source} section {section!r}", value, allowed)
    for section in ("dataset", "model"):
        if not isinstance(config[section].get("name"), str):
            raise ConfigError(f"{source}: {section}.name must be a name; received "
                              f"{short_repr(config[section].get('name'))}.")  # fmt: skip
        args = config[section].setdefault("args", {}) or {}
        if not isinstance(args, dict):
            raise ConfigError(
                f"{source}: {section}.args must be a mapping; received {short_repr(args)}."
            )
        config[section]["args"] = args
    _check_pretrained(config["model"], source)
    for key in ("num_classes", "in_channels"):
        value = config["model"]["args"].get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(
                f"{source}: model.args.{key} must be a positive int; received {short(value)}."
            )
    if "loss" not in config["compile"] and task != "instance":
        raise ConfigError(
            f"{source}: compile.loss is required (e.g. sparse_categorical_crossentropy)."
        )
    _check_optimizer(config["compile"].get("optimizer"), source)
    precision = config["compile"].get("precision")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(
            f"{source}: compile.precision must be one of {', '.join(PRECISIONS)} (what "
            f"--precision auto means for this recipe); received {short_repr(precision)}."
        )
    fit = config["fit"]
    fit.setdefault("epochs", 1)
    fit.setdefault("batch_size", 32)
    fit.setdefault("validation_split", 0.0)
    for key in ("epochs", "batch_size"):
        if isinstance(fit[key], bool) or not isinstance(fit[key], int) or fit[key] < 1:
            raise ConfigError(
                f"{source}: fit.{key} must be a positive int; received {short_repr(fit[key])}."
            )
    build_callbacks(fit.get("callbacks"), source)  # checks names and arguments now
    build_schedule(config["compile"].get("lr_schedule"), fit["epochs"], source)  # and here
    best = fit.get("restore_best")
    if best is not None and (not isinstance(best, str) or not best):
        raise ConfigError(
            f"{source}: fit.restore_best must be a log name such as loss or val_accuracy; "
            f"received {short_repr(best)}."
        )
    vs = fit["validation_split"]
    if not isinstance(vs, int | float) or not 0 <= vs < 1:
        raise ConfigError(
            f"{source}: fit.validation_split must be in [0, 1); received {short_repr(vs)}."
        )
    _check_reference(config.get("reference"), source)
    config.setdefault("seed", 0)
    check_seed(config["seed"], f"{source}: seed")
    config.setdefault("name", Path(source).stem)
    return config


def load_config(spec: str) -> dict[str, Any]:
    """A recipe name (``digits-lenet5``) or a path to a YAML config, validated."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file {spec!r} does not exist.")
        return validate(_read_yaml(path), str(path))
    names = list_recipes()
    if spec not in names:
        raise ConfigError(
            f"unknown recipe {spec!r}; expected one of {', '.join(names)} or a path to a "
            f"YAML config.{did_you_mean(spec, names)}"
        )
    return validate(_read_yaml(RECIPE_DIR / f"{spec}.yaml"), spec)

"""A model's architecture as JSON, and the model rebuilt from it with no user code.

A model built from funcnet's own layers and combinators is fully described by each layer's
``kind``, ``config``, ``name`` and ``children`` (see :class:`funcnet.core.Layer`). :func:`describe`
turns that into plain JSON-able dicts; :func:`rebuild` looks each ``kind`` up in a fixed registry
(:data:`funcnet.layers.LAYERS` plus the combinators) and calls the constructor with the config as
keyword arguments. Nothing named in a description is imported or evaluated: an unknown kind is an
error, so a description (or a checkpoint holding one) can never run code. A layer's config may hold
only the keys its kind records, with numbers and flags of the recorded types
(:func:`check_recorded_config`): an argument the format never writes, such as ``w_init``, is refused
before any constructor sees it.

Description format (version 1)::

    {"kind": "Serial", "name": None, "config": {},
     "children": [{"kind": "Dense", "name": None, "config": {"units": 8, "activation": "relu",
                   "use_bias": True, "rank": 2}, "children": []}, ...]}

``parallel`` and ``branch`` over a dict record ``{"keys": [...]}`` as their config (the children
carry the keys as names); ``with_context`` records ``{"names": [...]}``. :func:`document` adds the
input spec under ``"input_spec"``, each array as ``{"shape": [null, 28, 28, 1], "dtype": "float32"}``
inside lists (tuples and lists) and dicts, as :func:`spec_to_json` writes it; documents written
before specs hold a plain shape list under ``"input_shape"``, still read as float32.

What a description cannot hold:

* a user's own layer (its ``kind`` is not in the registry);
* a config value that is not JSON (an initializer, an arbitrary function), and an activation
  given as a function rather than a name.

:func:`describe` never fails on these (a checkpoint of such a model can still be saved: the
offending values are recorded as markers); :func:`rebuild` then raises :class:`ArchitectureError`
naming the layer's path and saying to pass the model explicitly. Initializers (``w_init``) are not
part of ``config``: a rebuilt model applies restored params exactly, but a fresh ``init`` uses the
default initializers.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from funcnet.combinators import FanInConcat, FanInSum, FanOut, Select, branch, parallel, residual, serial, with_context
from funcnet.core import Layer, as_spec, child_names, is_shape, spec
from funcnet.tied import tied

__all__ = ["ARCHITECTURE_VERSION", "NOT_JSON", "ArchitectureError", "check_recorded_config", "describe", "document",
           "from_json", "input_spec", "rebuild", "registry", "spec_from_json", "spec_to_json", "to_json"]

#: The version of the description format written by :func:`describe`.
ARCHITECTURE_VERSION = 1

#: Marker key for a config value that is not JSON (recorded by describe, refused by rebuild).
NOT_JSON = "__funcnet_not_json__"

_MAX_DEPTH = 200


class ArchitectureError(ValueError):
    """A description that cannot be turned back into a model (unknown kind, non-JSON config)."""


def _combinators() -> dict[str, Callable[[Mapping[str, Any], tuple[Layer, ...], str | None], Layer]]:
    """Constructors for the combinators, from ``(config, children, name)``."""

    def _residual(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
        extra = sorted(set(config) - {"shortcut"})
        if extra:
            raise ValueError(f"config keys {extra} are not among those Residual records (['shortcut'])")
        has_shortcut = config.get("shortcut", False)
        if not isinstance(has_shortcut, bool):
            raise TypeError(f"config 'shortcut' must be true or false, got {has_shortcut!r}")
        if has_shortcut:
            if not children:
                raise ValueError("config says there is a shortcut but there are no children")
            return residual(*children[:-1], shortcut=children[-1], name=name)
        return residual(*children, name=name)

    def _tied(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
        if len(children) != 1:
            raise ValueError(f"takes one child (the model whose weights are tied), got {len(children)}")
        return tied(children[0], **config, name=name)

    def _no_config(fn: Callable[..., Layer]) -> Callable:
        def make(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
            if config:
                raise ValueError(f"takes no config, got {dict(config)!r}")
            return fn(*children, name=name)

        return make

    def _keyed(fn: Callable[..., Layer]) -> Callable:
        """parallel and branch: over a tuple (no config), or over a dict (config ``{"keys": [...]}``)."""

        def make(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
            if set(config) - {"keys"}:
                raise ValueError(f"takes only a 'keys' config, got {dict(config)!r}")
            if "keys" not in config:
                return fn(*children, name=name)
            keys = config["keys"]
            if not isinstance(keys, list) or len(keys) != len(children):
                raise ValueError(f"config 'keys' must list one name per child ({len(children)}), got {keys!r}")
            return fn(dict(zip(keys, children, strict=True)), name=name)

        return make

    def _with_context(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
        names = config.get("names")
        if len(children) != 1 or not isinstance(names, list):
            raise ValueError("takes one child and a 'names' list")
        return with_context(children[0], *names, name=name)

    def _leaf(fn: Callable[..., Layer]) -> Callable:
        def make(config: Mapping[str, Any], children: tuple[Layer, ...], name: str | None) -> Layer:
            if children:
                raise ValueError("takes no children")
            check_recorded_config(fn.__name__, fn, config)
            return fn(**_tuples(dict(config)), name=name)

        return make

    return {
        "Serial": _no_config(serial),
        "Parallel": _keyed(parallel),
        "Branch": _keyed(branch),
        "WithContext": _with_context,
        "Residual": _residual,
        "Tied": _tied,
        **{kind.__name__: _leaf(kind) for kind in (FanOut, FanInSum, FanInConcat, Select)},
    }


def registry() -> dict[str, Callable[..., Layer]]:
    """Every kind :func:`rebuild` knows: funcnet's layer constructors, then its combinators.

    Layer constructors are looked up in :data:`funcnet.layers.LAYERS` each time, so layers added
    to the catalogue are covered without changes here.
    """
    from funcnet.layers import LAYERS

    return {**LAYERS, **_combinators()}


# --------------------------------------------------------------------------------------------
# describe


def _json_value(value: Any) -> Any:
    """``value`` as JSON (tuples become lists), or a marker saying what it was."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {NOT_JSON: "float", "repr": repr(value)}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    return {NOT_JSON: type(value).__name__, "repr": repr(value)[:200]}


def describe(model: Layer) -> dict[str, Any]:
    """Describes ``model`` as nested JSON-able dicts (see the module docstring for the format).

    Never fails for a valid :class:`~funcnet.core.Layer`: values that JSON cannot hold are
    recorded as markers that :func:`rebuild` refuses.

    Args:
        model: a layer or a whole model.

    Returns:
        ``{"kind", "name", "config", "children"}``, recursively.
    """
    if not isinstance(model, Layer):
        raise TypeError(f"describe: expected a funcnet Layer, got {type(model).__name__}.")
    return {
        "kind": model.kind,
        "name": model.name,
        "config": {str(k): _json_value(v) for k, v in dict(model.config).items()},
        "children": [describe(child) for child in model.children],
    }


def to_json(model: Layer, input_spec: Any = None) -> str:
    """``model``'s description (and optionally its input spec or shape) as a JSON string."""
    return json.dumps(document(model, input_spec), sort_keys=True)


def document(model: Layer, input_spec: Any = None) -> dict[str, Any]:
    """The description with its format version and the input spec the model was built for.

    The spec is stored under ``"input_spec"`` as :func:`spec_to_json` writes it (None if not given).
    """
    spec_json = None if input_spec is None else spec_to_json(input_spec)
    return {"version": ARCHITECTURE_VERSION, "input_spec": spec_json, "model": describe(model)}


def spec_to_json(tree: Any) -> Any:
    """A spec (or shape) as JSON: each leaf ``{"shape": [null, 28, 28, 1], "dtype": "float32"}``;
    tuples and lists become lists, dicts stay dicts, None stays null."""
    if tree is None:
        return None
    if isinstance(tree, Mapping):
        return {str(k): spec_to_json(v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)) and not is_shape(tree):
        return [spec_to_json(v) for v in tree]
    leaf = as_spec(tree)
    return {"shape": list(leaf.shape), "dtype": leaf.dtype.name}


def spec_from_json(value: Any) -> Any:
    """Inverse of :func:`spec_to_json` (lists come back as tuples); also reads the plain shape lists
    (``[null, 784]``, float32) that older descriptions recorded."""
    if value is None:
        return None
    if isinstance(value, Mapping) and set(value) == {"shape", "dtype"}:
        return spec(value["shape"], value["dtype"])
    if isinstance(value, Mapping):
        return {k: spec_from_json(v) for k, v in value.items()}
    if is_shape(value):
        return spec(value)
    if isinstance(value, list):
        return tuple(spec_from_json(v) for v in value)
    raise ArchitectureError(f"malformed input spec in architecture description: {value!r:.100}")


def input_spec(description: Mapping[str, Any] | None) -> Any:
    """The input spec a :func:`document` records (None if none): ``"input_spec"``, or the
    ``"input_shape"`` that descriptions written before specs hold."""
    if not description:
        return None
    recorded = description.get("input_spec", description.get("input_shape"))
    return spec_from_json(recorded)


# --------------------------------------------------------------------------------------------
# rebuild


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (constructors take shapes and paddings as tuples)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _find_not_json(value: Any) -> str | None:
    if isinstance(value, dict):
        if NOT_JSON in value:
            return f"a {value[NOT_JSON]} ({value.get('repr', '?')})"
        for v in value.values():
            found = _find_not_json(v)
            if found:
                return found
    if isinstance(value, list):
        for v in value:
            found = _find_not_json(v)
            if found:
                return found
    return None


def _required(constructor: Callable[..., Layer]) -> list[str]:
    """The constructor's parameters without a default (always recorded in its config)."""
    return [p.name for p in inspect.signature(constructor).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _json_kind(value: Any) -> str:
    return "bool" if isinstance(value, bool) else type(value).__name__


def check_recorded_config(kind: str, constructor: Callable[..., Layer], config: Mapping[str, Any]) -> None:
    """Raises ``ValueError`` unless ``config`` holds only keys this kind records, with values of
    the recorded types.

    The recorded keys are those of a layer built from the required arguments alone (every
    layer's config has the same keys whatever its options); so an argument the format never
    writes (``w_init``, ``lowering``) is refused before any constructor sees it. A number or
    flag must have the recorded type (an int may stand for a float; a bool is never a number);
    values that may be of several types (``activation``, ``padding``) are left to the constructor.
    """
    required = _required(constructor)
    missing = [k for k in required if k not in config]
    if missing:
        raise ValueError(f"config lacks {missing}, which {kind} needs")
    default = constructor(**_tuples({k: config[k] for k in required})).config
    extra = sorted(set(config) - set(default))
    if extra:
        raise ValueError(f"config keys {extra} are not among those {kind} records ({sorted(default)}); a "
                         "description holds only these")
    for key, value in config.items():
        recorded = default[key]
        if not isinstance(recorded, (bool, int, float)) or key in required:
            continue
        ok = (isinstance(value, bool) if isinstance(recorded, bool) else
              isinstance(value, (int, float)) and not isinstance(value, bool) and
              (isinstance(recorded, float) or isinstance(value, int)))
        if not ok:
            raise ValueError(f"config '{key}' must be a {_json_kind(recorded)}, as {kind} records it, got "
                             f"{_json_kind(value)} {value!r}")


_PASS_MODEL = "pass the model explicitly (for a checkpoint: restore(path, model=...))."


def rebuild(description: Mapping[str, Any]) -> Layer:
    """Builds the model a :func:`describe` result (or a :func:`document`) stands for.

    Args:
        description: ``describe(model)``, or ``document(model, input_shape)``.

    Returns:
        A Layer equal in structure to the described one: same kinds, configs and names, hence the
        same ``params``/``state`` trees and the same ``apply``.

    Raises:
        ArchitectureError: naming the layer's path, for an unknown kind (a user's layer), a
            config that was not JSON (a function given as activation, say), or a malformed
            description.
    """
    if isinstance(description, Mapping) and "model" in description and "kind" not in description:
        version = description.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version > ARCHITECTURE_VERSION:
            raise ArchitectureError(
                f"architecture description has version {version!r}; this funcnet reads versions up to "
                f"{ARCHITECTURE_VERSION}. Upgrade funcnet, or {_PASS_MODEL}"
            )
        description = description["model"]
    return _rebuild(description, "model", registry(), 0)


def _rebuild(node: Any, path: str, kinds: Mapping[str, Callable], depth: int) -> Layer:
    if depth > _MAX_DEPTH:
        raise ArchitectureError(f"architecture description is nested deeper than {_MAX_DEPTH} levels at '{path}'.")
    if not isinstance(node, Mapping) or not isinstance(node.get("kind"), str):
        raise ArchitectureError(f"malformed architecture description at '{path}': expected an object with a "
                                f"string 'kind', got {type(node).__name__}.")
    kind, name = node["kind"], node.get("name")
    config, children = node.get("config", {}), node.get("children", [])
    where = f"'{path}' ({kind})"
    if name is not None and not isinstance(name, str):
        raise ArchitectureError(f"malformed architecture description at {where}: 'name' must be a string or null.")
    if not isinstance(config, Mapping) or not isinstance(children, list):
        raise ArchitectureError(f"malformed architecture description at {where}: 'config' must be an object "
                                "and 'children' a list.")
    if kind not in kinds:
        raise ArchitectureError(
            f"cannot rebuild layer {where}: '{kind}' is not one of funcnet's layers or combinators (a custom "
            f"layer?), so its code is not known; {_PASS_MODEL}"
        )
    bad = _find_not_json(config)
    if bad is not None:
        raise ArchitectureError(
            f"cannot rebuild layer {where}: its config holds {bad}, which a description cannot record "
            f"(give activations by name, e.g. activation='relu'); {_PASS_MODEL}"
        )
    dummy_names = [c.get("name") if isinstance(c, Mapping) else None for c in children]
    child_layers = []
    kind_counts: dict[str, int] = {}
    for child, child_name in zip(children, dummy_names, strict=True):
        # The child's path uses the same names its container gives it in params.
        if child_name is None and isinstance(child, Mapping) and isinstance(child.get("kind"), str):
            base = child["kind"].lower()
            child_name = f"{base}_{kind_counts.get(base, 0)}"
            kind_counts[base] = kind_counts.get(base, 0) + 1
        child_layers.append(_rebuild(child, f"{path}/{child_name}", kinds, depth + 1))
    try:
        if kind in _combinators():
            layer = kinds[kind](dict(config), tuple(child_layers), name)
        else:
            if child_layers:
                raise ValueError("a leaf layer takes no children")
            check_recorded_config(kind, kinds[kind], config)
            layer = kinds[kind](**_tuples(dict(config)), name=name)
    except (TypeError, ValueError) as error:
        raise ArchitectureError(
            f"cannot rebuild layer {where} from config {dict(config)!r}: {error}. The description may come "
            f"from another funcnet version, or a function was given where a name was expected; {_PASS_MODEL}"
        ) from error
    child_names(child_layers)  # duplicate names are an error here too
    return layer


def from_json(text: str) -> Layer:
    """Inverse of :func:`to_json`: the model (the input shape is in ``json.loads(text)``)."""
    try:
        description = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ArchitectureError(f"architecture description is not valid JSON: {error}") from error
    return rebuild(description)


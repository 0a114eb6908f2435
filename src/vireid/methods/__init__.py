"""Methods as recipes: a model, its loss mix and ``training_step``, registered by name.

A recipe subclasses ``vireid.methods.base.Method`` (which declares every hook,
with its default) and is built from the resolved config and the number of
training identities; it provides ``model``, ``param_groups()``,
``training_step(model, batch)`` and ``embed(images, modality)``.
"""

from vireid.registry import Registry, import_submodules

METHODS = Registry("method")


def check_method(cfg: dict):
    """The recipe class named by ``cfg['method']``, or a clear error."""
    if "method" not in cfg:
        raise ValueError("config key 'method' is missing; it names the method, e.g. method: idkl")
    _import_methods()
    return METHODS.get(cfg["method"])


def single_modality_problem(cfg: dict) -> str | None:
    """Why the configured method cannot train on a single-modality (visible-only) dataset, or None if it can.

    A recipe that can says so by overriding ``Method.single_modality_problem``
    (returning None, or the reason a setting of ``cfg`` needs infrared images);
    the default says the method needs visible-infrared pairs.
    """
    return check_method(cfg).single_modality_problem(cfg)


def build_recipe(cfg: dict, num_classes: int):
    """The recipe named by ``cfg['method']``."""
    return check_method(cfg)(cfg, num_classes)


def _import_methods() -> None:
    """Import every module of this package, so each ``@METHODS.register`` runs: a new file is found, not listed."""
    import_submodules(__name__)

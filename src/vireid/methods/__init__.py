"""Methods as recipes: a model, its loss mix and ``training_step``, registered by name.

A recipe is built from the resolved config and the number of training
identities, and provides what the loop and the evaluation need:

* ``model`` (an ``nn.Module``) and ``param_groups()`` for the optimiser;
* ``training_step(model, batch) -> {"loss": total, ...logged terms}``;
* ``embed(images, modality) -> features`` for testing (eval mode).
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

    A recipe that can says so with a ``single_modality_problem(cfg)``
    classmethod (returning None, or the reason a setting of ``cfg`` needs
    infrared images); every other method is taken to need visible-infrared pairs.
    """
    recipe_cls = check_method(cfg)
    check = getattr(recipe_cls, "single_modality_problem", None)
    if check is None:
        return (f"method {cfg['method']!r} trains on visible and infrared images together (its losses or network "
                "pair the two modalities)")
    return check(cfg)


def build_recipe(cfg: dict, num_classes: int):
    """The recipe named by ``cfg['method']``."""
    return check_method(cfg)(cfg, num_classes)


def _import_methods() -> None:
    """Import every module of this package, so each ``@METHODS.register`` runs: a new file is found, not listed."""
    import_submodules(__name__)

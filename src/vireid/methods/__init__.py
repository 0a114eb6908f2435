"""Methods as recipes: a model, its loss mix and ``training_step``, registered by name.

A recipe is built from the resolved config and the number of training
identities, and provides what the loop and the evaluation need:

* ``model`` (an ``nn.Module``) and ``param_groups()`` for the optimiser;
* ``training_step(model, batch) -> {"loss": total, ...logged terms}``;
* ``embed(images, modality) -> features`` for testing (eval mode).
"""

from vireid.registry import Registry

METHODS = Registry("method")


def check_method(cfg: dict):
    """The recipe class named by ``cfg['method']``, or a clear error."""
    if "method" not in cfg:
        raise ValueError("config key 'method' is missing; it names the method, e.g. method: idkl")
    _import_methods()
    return METHODS.get(cfg["method"])


def build_recipe(cfg: dict, num_classes: int):
    """The recipe named by ``cfg['method']``."""
    return check_method(cfg)(cfg, num_classes)


def _import_methods() -> None:
    from vireid.methods import baseline, dan, idkl, mbfvrd, plain  # noqa: F401  (baseline/agw/caj, dan, idkl, mbfvrd, plain)

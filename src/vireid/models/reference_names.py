"""Parameter names of the IDKL and AGW reference codes, mapped to vireid's.

The released models keep three full ResNet-50 copies each and use only parts
of them; vireid builds only the parts that run. So the map is one-way in
kind: every vireid tensor of the ``idkl`` / ``agw`` presets (ResNet-50) has
exactly one reference name, and a reference tensor maps to a vireid name or
to ``None`` (a part the reference builds but never runs: it gets no gradient
and stays at its ImageNet values, so dropping it changes nothing).

* IDKL (``1KK077/IDKL`` ``Baseline(decompose=True)``): the shared trunk
  (stem, layer1, layer2) is ``backbone.shared_module_fr.model_sh_fr``, the
  shared layer3/4 ``backbone.shared_module_bh.model_sh_bh``, the specific
  layer3/4 ``backbone.special.special_module``; the purifier's IN is
  ``backbone.IN``, its gate on IN(F) (vireid ``gate_r``, m_r) ``backbone.mask1``
  and its gate on F (``gate_e``, m_e) ``backbone.mask2``; the entropy-only
  classifier is ``C_sp_f``; the discriminator and confuser MLPs are
  ``D_special`` and ``D_shared_pseu`` with layers ``fc1, bn1, fc2, bn2, fc3``.
  ``backbone.special_att`` is built but never used.
* AGW (``mangye16/Cross-Modal-Re-ID-baseline`` ``embed_net``): the stems are
  ``visible_module.visible`` / ``thermal_module.thermal`` (conv1, bn1 used),
  layer1-4 are ``base_resnet.base``; non-local blocks ``NL_2.k`` / ``NL_3.k``
  follow the last blocks of layer2 / layer3 (parts ``g.0``, ``theta``,
  ``phi``, ``W.0``, ``W.1``); the BN neck is ``bottleneck``.

Used by ``vireid convert`` (a released checkpoint -> a vireid run) and by the
trajectory golden test (initial weights by reference name).
"""

from __future__ import annotations

import re

from vireid.models.reid_net import non_local_state_from_agw

KINDS = ("idkl", "agw")
STEM = ("conv1.", "bn1.")
_ANY_RESNET_PART = re.compile(r"^(conv1|bn1|layer[1-4])\.")

# IDKL: reference prefix of each ResNet copy -> (vireid module, the torchvision sub-names it runs)
_IDKL_COPIES = {
    "backbone.shared_module_fr.model_sh_fr.": ("trunk.", ("conv1.", "bn1.", "layer1.", "layer2.")),
    "backbone.shared_module_bh.model_sh_bh.": ("branch_sh.", ("layer3.", "layer4.")),
    "backbone.special.special_module.": ("branch_sp.", ("layer3.", "layer4.")),
}
_IDKL_RENAMED = {
    "backbone.IN.": "purifier.norm.",
    "backbone.mask1.channel_attention.0.": "purifier.gate_r.fc1.",
    "backbone.mask1.channel_attention.2.": "purifier.gate_r.fc2.",
    "backbone.mask2.channel_attention.0.": "purifier.gate_e.fc1.",
    "backbone.mask2.channel_attention.2.": "purifier.gate_e.fc2.",
    "bn_neck.": "bn_neck.",
    "bn_neck_sp.": "bn_neck_sp.",
    "classifier.": "classifier.",
    "classifier_sp.": "classifier_sp.",
    "C_sp_f.": "classifier_ent.",
}
_IDKL_UNUSED = ("backbone.special_att.",)
# the modality MLPs: reference layer name -> index in vireid's ModalityHead (Linear, BN, ReLU, Dropout, ...)
_HEAD_LAYERS = {"fc1": 0, "bn1": 1, "fc2": 4, "bn2": 5, "fc3": 8}
_IDKL_HEADS = {"D_special.": "discriminators.0.", "D_shared_pseu.": "confusers.0."}

_AGW_COPIES = {
    "visible_module.visible.": ("backbone.stems.0.", STEM),
    "thermal_module.thermal.": ("backbone.stems.1.", STEM),
    "base_resnet.base.": ("backbone.layers.", ("layer1.", "layer2.", "layer3.", "layer4.")),
}
_AGW_RENAMED = {"bottleneck.": "bn_neck.", "classifier.": "classifier."}
_AGW_NON_LOCAL = re.compile(r"^NL_([23])\.(\d+)\.(.+)$")


def to_vireid(kind: str, name: str) -> str | None:
    """vireid's name for reference tensor ``name``; None for a reference part that never runs.

    Raises ``KeyError`` for a name that belongs to neither (not a tensor of that reference model).
    """
    if kind == "idkl":
        return _idkl(name)
    if kind == "agw":
        return _agw(name)
    raise ValueError(f"unknown reference {kind!r}; expected one of {', '.join(KINDS)}")


def _copy(name: str, copies: dict) -> tuple[bool, str | None]:
    """(matched a ResNet copy, vireid name or None when that copy's part is unused)."""
    for prefix, (target, used) in copies.items():
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if not _ANY_RESNET_PART.match(rest):
                raise KeyError(name)
            return True, target + rest if rest.startswith(used) else None
    return False, None


def _idkl(name: str) -> str | None:
    matched, out = _copy(name, _IDKL_COPIES)
    if matched:
        return out
    if name.startswith(_IDKL_UNUSED):
        return None
    for old, new in _IDKL_RENAMED.items():
        if name.startswith(old):
            return new + name[len(old):]
    for old, new in _IDKL_HEADS.items():
        if name.startswith(old):
            layer, _, rest = name[len(old):].partition(".")
            if layer in _HEAD_LAYERS and rest:
                return f"{new}{_HEAD_LAYERS[layer]}.{rest}"
    raise KeyError(name)


def _agw(name: str) -> str | None:
    matched, out = _copy(name, _AGW_COPIES)
    if matched:
        return out
    for old, new in _AGW_RENAMED.items():
        if name.startswith(old):
            return new + name[len(old):]
    m = _AGW_NON_LOCAL.match(name)
    if m:
        stage, index, rest = m.groups()
        (inner,) = non_local_state_from_agw({rest: None})
        return f"backbone.non_local.layer{stage}.{index}.{inner}"
    raise KeyError(name)


def convert_state(kind: str, state: dict, target_names) -> tuple[dict, dict]:
    """A reference state dict renamed to vireid's names, and a report.

    ``target_names``: vireid's state_dict keys. Returns (renamed state, report)
    with report lists ``matched`` (vireid names filled), ``missing`` (vireid
    names no reference tensor filled), ``unused`` (reference tensors of parts
    that never run, dropped on purpose) and ``unexpected`` (reference names
    this map does not know, or whose vireid name the model lacks).
    """
    target = set(target_names)
    out, unused, unexpected = {}, [], []
    for name, value in state.items():
        try:
            new = to_vireid(kind, name)
        except KeyError:
            unexpected.append(name)
            continue
        if new is None:
            unused.append(name)
        elif new in target:
            out[new] = value
        else:
            unexpected.append(name)
    missing = [n for n in target_names if n not in out]
    return out, {"matched": sorted(out), "missing": missing, "unused": unused, "unexpected": unexpected}

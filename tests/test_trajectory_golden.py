"""Step for step with the IDKL and AGW reference training code: every case under golden_dir/trajectory.

README-trajectory.md defines the cases. Each one: the initial weights by the
name formula (tests/trajectory_formula.py), loaded through vireid's name map
(:mod:`vireid.models.reference_names`) into the released-code preset's model
(``idkl_sysu`` / ``agw_sysu``); the stored batches replayed through
:func:`vireid.engine.replay.replay`, i.e. the preset's own recipe, loss
weights, optimiser, parameter groups, LR schedule (at the file's epoch) and BN
handling; then every logged loss term, every gradient and weight fingerprint
and the global sums of squares of each step compared with the tolerances
stored in the file. Nothing depends on a file's name: held-out cases (other
seeds, batch sizes, step counts, AGW warm-up epochs) run the same way.

The switch between the released code and vireid's deliberate variant: IDKL's
``loss.batch_switch`` (the code changes its graph/logit weights unless the
batch is exactly 120; ``batch_switch: 0`` keeps the written weights at every
size). ``test_idkl_batch_switch_separates_code_and_fixed_weights`` shows the
step-0 loss of a small-batch case then leaves the file's tolerance.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import golden_root
from trajectory_formula import (
    clear_cache,
    fnv1a32,
    formula_sumsq,
    formula_value,
    reference_state,
    shape_of,
    splitmix64,
    uniforms,
)
from vireid.app.runs import resolve_config
from vireid.data.records import INFRARED, VISIBLE
from vireid.engine.replay import replay
from vireid.methods import build_recipe
from vireid.models.reference_names import to_vireid

IDKL_INFRARED_CAMS = (3, 6)  # SYSU-MM01's infrared cameras, as the reference reads them
AGW_TERMS = {"id": "id", "tri": "wrt"}  # the file's loss_<k> -> the AGW recipe's logged term


def _root() -> Path:
    return golden_root() / "trajectory"


def _files():
    root = _root()
    return sorted(root.rglob("*.npz")) if root.is_dir() else []


# ----------------------------------------------------------------------------- the case as vireid inputs

def kind_of(d) -> str:
    fn = str(d["fn"])
    if fn not in ("idkl_trajectory", "agw_trajectory"):
        raise AssertionError(f"unknown golden fn {fn!r}; known: ['agw_trajectory', 'idkl_trajectory']")
    return fn.split("_")[0]


def idkl_batch(images, labels, cams):
    """The reference's I,V,I,V-per-identity batch in the loader's layout (visible half, then infrared half,
    same identity order); the recipe interleaves it back into exactly the stored order."""
    infrared = torch.isin(cams, torch.tensor(IDKL_INFRARED_CAMS))
    expected = torch.arange(len(cams)) % 2 == 0
    assert bool((infrared == expected).all()), f"IDKL batch is not I,V,I,V,...: cams {cams.tolist()}"
    vis, ir = ~infrared, infrared
    modality = torch.cat([torch.full((int(vis.sum()),), VISIBLE), torch.full((int(ir.sum()),), INFRARED)])
    return torch.cat([images[vis], images[ir]]), torch.cat([labels[vis], labels[ir]]), cams, modality


def agw_batch(visible, thermal, labels):
    """AGW's (input1, input2): visible then thermal, each through its own stem, labels cat(label1, label2)."""
    modality = torch.cat([torch.full((len(visible),), VISIBLE), torch.full((len(thermal),), INFRARED)])
    return torch.cat([visible, thermal]), labels, torch.zeros_like(labels), modality


def case_batches(d, kind: str) -> list:
    steps = int(d["n_steps"])
    if kind == "idkl":
        return [idkl_batch(*(torch.from_numpy(d[k][s]) for k in ("images", "labels", "cam_ids")))
                for s in range(steps)]
    return [agw_batch(*(torch.from_numpy(d[k][s]) for k in ("images_visible", "images_thermal", "labels")))
            for s in range(steps)]


def load_case(path: Path) -> dict:
    """The file's arrays, read once (an NpzFile decompresses on every access)."""
    with np.load(path, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def build_case(d, kind: str, overrides=()):
    """(config and recipe of the released-code preset, the initial tensors vireid builds or the fingerprints
    name, by reference name, the same tensors by vireid name)."""
    cfg = resolve_config(f"{kind}_sysu", overrides)
    recipe = build_recipe(cfg, int(d["num_classes"]))
    mapped = {str(n): to_vireid(kind, str(n)) for n in d["init_name"]}
    wanted = {n for n, t in mapped.items() if t is not None} | {str(n) for n in d["fp_names"]}
    initial = reference_state(d, wanted)
    state = {mapped[n]: v for n, v in initial.items() if mapped[n] is not None}
    return cfg, recipe, initial, state


# ----------------------------------------------------------------------------- fingerprints

class Fingerprints:
    """The README's fingerprints of the reference-named model: vireid's tensors where the name maps, the
    formula's initial values for reference parts vireid does not build (they never move in the reference:
    its own fingerprints of them stay at the initial values, checked with tolerance 0)."""

    def __init__(self, d, kind: str, initial: dict, model: nn.Module):
        self.d, self.kind, self.initial = d, kind, initial
        self.vireid = {str(n): to_vireid(kind, str(n)) for n in d["init_name"]}
        self.state = model.state_dict(keep_vars=True)
        params = [str(n) for n, p in zip(d["init_name"], d["init_is_param"]) if p]
        self.moving = [n for n in params if self.vireid[n] is not None]
        self.fixed_sumsq = sum(formula_sumsq(d, i) for i, (n, p) in enumerate(zip(d["init_name"], d["init_is_param"]))
                               if p and self.vireid[str(n)] is None)
        self.running = {kind: [(str(n), i) for i, (n, k) in enumerate(zip(d["init_name"], d["init_kind"])) if k == kind]
                        for kind in ("running_mean", "running_var")}

    def current(self, name: str) -> torch.Tensor:
        target = self.vireid[name]
        return (self.initial[name] if target is None else self.state[target]).detach()

    def _sums(self, name: str) -> tuple[float, float, float]:
        """(sum, sum of squares, sum of squared displacement) of one tensor, in float64."""
        now = self.current(name).reshape(-1).double()
        disp = now - self.initial[name].reshape(-1).double()
        return float(now.sum()), float(torch.dot(now, now)), float(torch.dot(disp, disp))

    def weights(self) -> dict:
        fp = np.asarray([self._sums(str(n)) for n in self.d["fp_names"]], np.float64).reshape(-1, 3)
        moving = np.asarray([self._sums(n)[1:] for n in self.moving], np.float64)
        return {"sum": fp[:, 0], "sumsq": fp[:, 1], "disp_sumsq": fp[:, 2],
                "global_sumsq": self.fixed_sumsq + float(moving[:, 0].sum()),
                "global_disp_sumsq": float(moving[:, 1].sum()),
                **{f"bn_{kind}_sum": self._running_sum(kind) for kind in self.running}}

    def _running_sum(self, kind: str) -> float:
        """Sum of every BN/IN ``kind`` buffer (unbuilt reference parts keep their initial 0 / 1)."""
        total = 0.0
        for name, i in self.running[kind]:
            target = self.vireid[name]
            if target is None:
                total += float(np.float32(self.d["init_const"][i])) * int(np.prod(shape_of(str(self.d["init_shape"][i]))))
            else:
                total += float(self.state[target].double().sum())
        return total

    def grads(self) -> dict:
        sums, sumsqs = [], []
        for name in self.d["fp_names"]:
            target = self.vireid[str(name)]
            tensor = self.state.get(target) if target is not None else None
            grad = tensor.grad if isinstance(tensor, nn.Parameter) else None
            sums.append(math.nan if grad is None else float(grad.double().sum()))
            sumsqs.append(math.nan if grad is None else float((grad.double() ** 2).sum()))
        n_with_grad = sum(1 for p in self.state.values() if isinstance(p, nn.Parameter) and p.grad is not None)
        return {"sum": np.asarray(sums), "sumsq": np.asarray(sumsqs), "n_with_grad": n_with_grad}


# ----------------------------------------------------------------------------- the README's metrics

def _rel(b, a):
    b, a = np.asarray(b, np.float64), np.asarray(a, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == a, 0.0, np.abs(b - a) / np.abs(a))


def metrics(d, kind: str, s: int, record: dict, fp: dict, grad: dict) -> dict:
    """Step ``s``'s compare() metrics of this run (b) against the stored run (a), one array each."""
    out = {"loss_rel": _rel(record["loss"], d["expected"][s])}
    terms = [str(t) for t in d["tolerance_loss_terms"]]
    ours = [record[AGW_TERMS[t[5:]] if kind == "agw" else t[5:]] for t in terms]
    theirs = np.asarray([d[f"expected_{t}"][s] for t in terms], np.float64)
    out["loss_terms_absrel"] = np.abs(np.asarray(ours) - theirs) / np.maximum(np.abs(theirs), 1e-3)
    out["global_sumsq_rel"] = _rel(fp["global_sumsq"], d["expected_global_sumsq"][s])
    out["global_disp_sumsq_rel"] = _rel(fp["global_disp_sumsq"], d["expected_global_disp_sumsq"][s])
    disp_a = d["expected_fp_disp_sumsq"][s]
    out["fp_disp_sumsq_rel"] = _rel(fp["disp_sumsq"], disp_a)
    with np.errstate(divide="ignore", invalid="ignore"):
        over = np.abs(fp["sum"] - d["expected_fp_sum"][s]) / np.sqrt(d["fp_numel"] * disp_a)
    out["fp_sum_over_disp_l1"] = np.where(fp["sum"] == d["expected_fp_sum"][s], 0.0, over)
    out["grad_sumsq_rel"] = _rel(grad["sumsq"], d["expected_grad_sumsq"][s])
    return out


def _worst_ratio(values, tol) -> float:
    """Largest value / tolerance over the compared entries (tolerance > 0)."""
    tol = np.atleast_1d(np.asarray(tol, np.float64))
    values = np.broadcast_to(np.atleast_1d(values), tol.shape)
    keep = ~np.isnan(tol) & (tol > 0) & ~np.isnan(values)
    return float((values[keep] / tol[keep]).max()) if keep.any() else 0.0


def check_step(d, kind: str, s: int, m: dict, fp: dict, grad: dict) -> list[str]:
    """Every metric within the file's tolerance (NaN: not compared); tensors the reference never moves
    must be bit-identical to their initial values. Returns the failures."""
    bad = []
    for name, values in m.items():
        tol = np.atleast_1d(np.asarray(d[f"tolerance_{name}"][s], np.float64))
        values = np.broadcast_to(np.atleast_1d(values), tol.shape)
        for i in zip(*np.nonzero(~np.isnan(tol) & ~(values <= tol))):
            what = str(d["fp_names"][i[0]]) if name.startswith(("fp_", "grad_")) else \
                str(d["tolerance_loss_terms"][i[0]]) if name == "loss_terms_absrel" else ""
            bad.append(f"step {s} {name} {what}: {float(values[i]):.3g} > tolerance {float(tol[i]):.3g}")
    still = d["expected_fp_disp_sumsq"][s] == 0
    for i in np.nonzero(still & (fp["disp_sumsq"] != 0))[0]:
        bad.append(f"step {s}: {d['fp_names'][i]} moved ({fp['disp_sumsq'][i]:.3g}); the reference never moves it")
    no_grad = np.isnan(d["expected_grad_sumsq"][s])
    for i in np.nonzero(no_grad != np.isnan(grad["sumsq"]))[0]:
        bad.append(f"step {s}: {d['fp_names'][i]} has {'no ' if np.isnan(grad['sumsq'][i]) else ''}gradient, "
                   f"unlike the reference")
    if grad["n_with_grad"] != int(d["expected_n_params_with_grad"][s]):
        bad.append(f"step {s}: {grad['n_with_grad']} parameter tensors have a gradient, the reference "
                   f"{int(d['expected_n_params_with_grad'][s])}")
    return bad


# ----------------------------------------------------------------------------- settings and dropout

def check_settings(d, kind: str, s: int, trainer) -> list[str]:
    """Each trained parameter's LR (AGW: per reference group at the file's epoch), weight decay and the
    optimiser's own settings, before step ``s``: the trajectory would catch them, this names them."""
    opt, bad = trainer.optimizer, []
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    state = trainer.recipe.model.state_dict(keep_vars=True)
    for i, name in enumerate(d["init_name"]):
        target = to_vireid(kind, str(name))
        param = state.get(target) if target is not None else None
        if not isinstance(param, nn.Parameter):
            continue
        if param.requires_grad != bool(d["init_requires_grad"][i]):
            bad.append(f"{name}: requires_grad {param.requires_grad}, reference {bool(d['init_requires_grad'][i])}")
        if not d["init_gets_grad"][i]:
            continue
        group = int(d["init_optimizer_group"][i])
        want = float(d["expected_lr_groups"][s][group]) if kind == "agw" else float(d["lr"])
        if not math.isclose(lr_of[id(param)], want, rel_tol=1e-12):
            bad.append(f"step {s} {name}: lr {lr_of[id(param)]}, reference {want}")
        if not math.isclose(wd_of[id(param)], float(d["weight_decay"]), rel_tol=1e-12):
            bad.append(f"{name}: weight decay {wd_of[id(param)]}, reference {float(d['weight_decay'])}")
    defaults = opt.defaults
    if kind == "idkl":
        if type(opt) is not torch.optim.Adam:
            bad.append(f"optimiser {type(opt).__name__}, reference Adam (L2 weight decay in the gradient)")
        elif (tuple(defaults["betas"]) != tuple(d["betas"]) or defaults["eps"] != float(d["eps"])
              or defaults["amsgrad"] != bool(d["amsgrad"])):
            bad.append(f"Adam betas/eps/amsgrad {defaults['betas']}/{defaults['eps']}/{defaults['amsgrad']}")
    elif type(opt) is not torch.optim.SGD:
        bad.append(f"optimiser {type(opt).__name__}, reference SGD")
    elif (defaults["momentum"], defaults["dampening"], defaults["nesterov"]) != \
            (float(d["momentum"]), float(d["dampening"]), bool(d["nesterov"])):
        bad.append(f"SGD momentum/dampening/nesterov {defaults['momentum']}/{defaults['dampening']}/"
                   f"{defaults['nesterov']}")
    return bad


class DropoutRecorder:
    """The keep-masks vireid's dropout layers draw, in call order, where they can be read off (non-zero
    inputs); compared with the file's ``dropout_keep`` (seeding as the reference did must reproduce them)."""

    def __init__(self, model: nn.Module):
        self.masks = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, nn.Dropout)]

    def _hook(self, module, inputs, output):
        self.masks.append((inputs[0].detach() != 0, output.detach() != 0))

    def check(self, d, s: int) -> list[str]:
        stored = torch.from_numpy(d["dropout_keep"][s]).bool()
        masks, self.masks = self.masks, []
        if len(masks) != len(stored):
            return [f"step {s}: {len(masks)} dropout calls, the reference {len(stored)}"]
        bad = []
        for j, ((nonzero, kept), want) in enumerate(zip(masks, stored)):
            if nonzero.shape != want.shape or bool((kept[nonzero] != want[nonzero]).any()):
                bad.append(f"step {s}: dropout call {j} drew another mask than the reference")
        return bad

    def remove(self):
        for h in self.handles:
            h.remove()


# forward intermediates (README: ``expected_step_*``): vireid output -> the file's field, for locating a mismatch
STEP_FIELDS = {
    "idkl": {"sh_pl_rowsum": lambda o: o["feat_sh"].double().sum(1), "sp_pl_rowsum": lambda o: o["feat_sp"].double().sum(1),
             "logits_sh": lambda o: o["logits_sh"], "logits_sp": lambda o: o["logits_sp"],
             "d_sp_logits": lambda o: o["d_sp_logits"][0], "d_sh_logits": lambda o: o["d_sh_logits"][0]},
    "agw": {"x_pool_rowsum": lambda o: o["pooled"].double().sum(1), "logits": lambda o: o["logits"]},
}


def step_diagnostics(d, kind: str, s: int, out: dict) -> dict:
    """Largest abs difference of each forward intermediate, relative to the largest stored value (diagnostic:
    the files store no tolerance for these)."""
    diag = {}
    for field, get in STEP_FIELDS[kind].items():
        ours = get(out).detach().double().numpy()
        theirs = np.asarray(d[f"expected_step_{field}"][s], np.float64)
        diag[f"step_{field}"] = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-12))
    return diag


# ----------------------------------------------------------------------------- one case

def run_case(path: Path, overrides=(), steps: int | None = None) -> dict:
    """Replay one file (its first ``steps`` steps); AssertionError listing every failure, trajectory metrics
    first. Returns the largest value of each metric per step."""
    d = load_case(path)
    kind = kind_of(d)
    cfg, recipe, initial, state = build_case(d, kind, overrides)
    recipe.model.load_state_dict(state)
    fingerprints = Fingerprints(d, kind, initial, recipe.model)
    init = fingerprints.weights()
    bad = []
    for what in ("sum", "sumsq"):
        ok = np.isclose(init[what], d[f"expected_init_fp_{what}"], rtol=1e-12, atol=0)
        bad += [f"initial {what} of {d['fp_names'][i]}: name map or formula" for i in np.nonzero(~ok)[0]]
    if not math.isclose(init["global_sumsq"], float(d["expected_init_global_sumsq"]), rel_tol=1e-12):
        bad.append(f"initial global sum of squares {init['global_sumsq']} != {float(d['expected_init_global_sumsq'])}")
    assert not bad, f"{path.name}: " + "; ".join(bad[:10])

    grads, summary, settings, outputs = {}, {}, [], []
    recorder = DropoutRecorder(recipe.model) if kind == "idkl" else None
    capture = recipe.model.register_forward_hook(lambda module, inputs, out: outputs.append(out))

    def after_backward(s, trainer):
        grads[s] = fingerprints.grads()
        settings.extend(check_settings(d, kind, s, trainer))

    def after_step(s, trainer, record):
        fp = fingerprints.weights()
        m = metrics(d, kind, s, record, fp, grads[s])
        bad.extend(check_step(d, kind, s, m, fp, grads[s]))
        if recorder is not None:
            bad.extend(recorder.check(d, s))
        summary[s] = {k: float(np.nanmax(v)) if np.size(v) and not np.all(np.isnan(v)) else 0.0
                      for k, v in m.items()}
        for stat in ("mean", "var"):  # diagnostic: the files store no tolerance for these two sums
            key = f"bn_running_{stat}_sum"
            summary[s][f"{key}_rel"] = float(_rel(fp[key], d[f"expected_{key}"][s]))
        summary[s].update(step_diagnostics(d, kind, s, outputs.pop()))
        ratios = {k: _worst_ratio(v, d[f"tolerance_{k}"][s]) for k, v in m.items()}
        summary[s]["ratio_to_tolerance"] = max(ratios.values())
        summary[s]["closest_metric"] = max(ratios, key=ratios.get)

    epoch = int(d["epoch"]) if kind == "agw" else 0  # IDKL: the first epoch (the LR is 3.5e-4 until epoch 55)
    seeds = d["step_torch_seeds"][:steps] if kind == "idkl" else None
    try:
        replay(recipe, case_batches(d, kind)[:steps], cfg["train"], epoch=epoch, seeds=seeds,
               after_backward=after_backward, after_step=after_step)
    finally:
        capture.remove()
        if recorder is not None:
            recorder.remove()
    bad += settings
    assert not bad, f"{path.name}: {len(bad)} failures: " + "; ".join(bad[:12])
    return summary


# ----------------------------------------------------------------------------- tests

@pytest.fixture(autouse=True, scope="module")
def _release_formula_values():
    yield
    clear_cache()


def test_trajectory_directory_exists():
    root = _root()
    assert root.is_dir(), f"trajectory golden vectors not found at {root}; set VIREID_GOLDEN"
    assert _files(), f"no .npz files under {root}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(_root())))
def test_trajectory_case(path: Path):
    run_case(path)


def test_unknown_fn_fails_instead_of_skipping(tmp_path):
    path = tmp_path / "new_01.npz"
    np.savez(path, fn=np.array("brand_new_trajectory"), expected=np.zeros(1))
    with pytest.raises(AssertionError, match="unknown golden fn 'brand_new_trajectory'"):
        run_case(path)


def test_formula_reproduces_the_readme_examples():
    assert fnv1a32("a") == 0xE40C292C
    assert int(splitmix64(np.zeros(1, np.uint64))[0]) == 0xE220A8397B1DCDAF
    rows = [("conv1.weight", (64, 3, 7, 7), 0xBDCEC494, 0.60609152673132638,
             {0: (0.75323762191366739, 0.30697035789489746), 1: (0.14389963746716328, -0.4316588342189789),
              9407: (0.40782795667770844, -0.11172939091920853)}),
            ("layer3.0.conv2.weight", (256, 256, 3, 3), 0x1FF8250F, 0.15309310892394862,
             {0: (0.82577186042780282, 0.09974685311317444), 589823: (0.90097015197884633, 0.12277153134346008)}),
            ("layer4.2.conv3.weight", (2048, 512, 1, 1), 0xC046B62F, 0.3247595264191645,
             {1: (0.68138350116436575, 0.11781203746795654)}),
            ("classifier.weight", (6, 2048), 0x5D4EB436, 0.054126587736527412,
             {0: (0.41750648940848223, -0.008930184878408909)}),
            ("D_special.fc1.bias", (100,), 0x47824BC2, 0.022097086912079608,
             {99: (0.88576356673183554, 0.01704850234091282)}),
            ("backbone.mask1.channel_attention.0.weight", (128, 2048, 1, 1), 0xCD8DFAD7, 0.054126587736527412,
             {1: (0.90182675147879221, 0.04349902272224426)}),
            ("NL_2.0.theta.bias", (1,), 0x8E6B8D69, 0.044194173824159216,
             {0: (0.88578694555729365, 0.034099072217941284)})]
    for key, shape, h, scale, values in rows:
        assert fnv1a32(key) == h, key
        u = uniforms(key, int(np.prod(shape)))
        flat = formula_value(key, shape, "uniform", scale, math.nan).reshape(-1)
        for i, (u_i, value) in values.items():
            assert u[i] == u_i and float(flat[i]) == value, (key, i)


def _smallest(kind: str, other_than_switch: bool = False) -> tuple[Path, dict]:
    """The quickest case of ``kind`` (fewest images); IDKL optionally at a batch other than 120."""
    cases = [(p, load_case(p)) for p in _files()]
    cases = [(p, d) for p, d in cases if str(d["fn"]) == f"{kind}_trajectory"
             and not (other_than_switch and int(d["batch_size"]) == int(d["batch_switch"]))]
    if not cases:
        pytest.fail(f"no {kind} trajectory case{' at a batch other than 120' if other_than_switch else ''} "
                    f"under {_root()}")
    return min(cases, key=lambda c: int(c[1]["batch_size"]))


def _first_step(d, kind: str, overrides=(), **kwargs) -> dict:
    _, recipe, _, state = build_case(d, kind, overrides)
    cfg = resolve_config(f"{kind}_sysu", overrides)
    epoch = int(d["epoch"]) if kind == "agw" else 0
    return replay(recipe, case_batches(d, kind)[:1], cfg["train"], epoch=epoch, state_dict=state, **kwargs)[0]


def test_idkl_batch_switch_separates_code_and_fixed_weights():
    """``loss.batch_switch: 0`` (the written batch-120 weights at every size, vireid's explicit variant) is
    not the released code at another batch size: the step-0 loss leaves the file's tolerance."""
    d = _smallest("idkl", other_than_switch=True)[1]
    assert int(d["batch_switch"]) == resolve_config("idkl_sysu")["loss"]["batch_switch"]
    seeds = d["step_torch_seeds"][:1]
    code = _first_step(d, "idkl", seeds=seeds)["loss"]
    fixed = _first_step(d, "idkl", ["loss.batch_switch=0"], seeds=seeds)["loss"]
    want, tol = float(d["expected"][0]), float(d["tolerance_loss_rel"][0])
    assert abs(code - want) / want <= tol
    assert abs(fixed - want) / want > 100 * tol


def test_injected_dropout_masks_replace_the_seeded_draw():
    """Without the reference's seed, injecting the stored masks reproduces its step-0 losses; neither alone
    (another seed, no masks) does."""
    d = _smallest("idkl")[1]
    masks = [list(torch.from_numpy(d["dropout_keep"][0]))]
    injected = _first_step(d, "idkl", seeds=[12345], dropout_masks=masks)
    want = float(d["expected"][0])
    assert abs(injected["loss"] - want) / want <= float(d["tolerance_loss_rel"][0])
    for k in ("unad", "pse"):
        assert injected[k] == pytest.approx(float(d[f"expected_loss_{k}"][0]), rel=1e-5)
    other = _first_step(d, "idkl", seeds=[12345])
    assert abs(other["unad"] - float(d["expected_loss_unad"][0])) > 1e-4


@pytest.mark.parametrize("kind, setting", [("idkl", "train.optimizer=adamw"), ("agw", "train.weight_decay=0"),
                                           ("agw", "recipe.backbone_lr_mult=1.0")])
def test_a_wrong_setting_is_caught(kind, setting):
    """The comparison can fail: one optimiser setting changed, the first step's fingerprints leave the tolerance."""
    path = _smallest(kind)[0]
    run_case(path, steps=1)
    with pytest.raises(AssertionError, match=r"failures: step 0 (fp_|global_)"):
        run_case(path, [setting], steps=1)

"""Hi-CMD: each loss against hand-computed values and gradients, the code layout and swaps, the network's shapes,
which parameters each update may reach and step, the progress picture, the presets and a short train + evaluate."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image

from vireid.app.runs import evaluate_run, resolve_config_path, train
from vireid.config import load_config
from vireid.engine.checkpoint import load_checkpoint
from vireid.engine.trainer import Trainer
from vireid.evaluation.evaluator import cosine_distance, euclidean_distance
from vireid.losses.hicmd import kl_to_standard_normal, l1_reconstruction, lsgan_discriminator_loss, lsgan_generator_loss
from vireid.methods import build_recipe
from vireid.methods.hicmd import PICTURE_COLUMNS, write_picture
from vireid.models.hicmd import adain, attribute_indices, mix_codes
from vireid.schema import TrainSettings, parse_section
from vireid.synth.generator import generate


def leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


# ----------------------------------------------------------------------------------------------- losses


def test_l1_reconstruction_by_hand():
    out, target = leaf([[1.0, -2.0], [3.0, 0.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    loss = l1_reconstruction(out, target)  # (1 + 2 + 2 + 1) / 4
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert torch.allclose(out.grad, torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=torch.float64) / 4)
    with pytest.raises(ValueError, match=r"equal shapes, got \(2, 2\) and \(2,\)"):
        l1_reconstruction(out, target[0])


def test_kl_is_the_mean_square_of_the_code():
    code = leaf([[1.0, 2.0], [0.0, -1.0]])
    loss = kl_to_standard_normal(code)  # (1 + 4 + 0 + 1) / 4
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert torch.allclose(code.grad, code.detach() / 2)  # d/da mean(a^2) = 2a / 4
    with pytest.raises(ValueError, match=r"a code \(B, D\), got shape \(4,\)"):
        kl_to_standard_normal(torch.zeros(4))


def test_lsgan_losses_by_hand():
    real, fake = leaf([[0.5, 1.5]]), leaf([[0.2, -0.2]])
    real2, fake2 = leaf([[1.0]]), leaf([[1.0]])
    d = lsgan_discriminator_loss([real, real2], [fake, fake2])
    # scale 1: mean((r - 1)^2) = 0.25, mean(f^2) = 0.04; scale 2: 0 + 1
    assert d.item() == pytest.approx(0.25 + 0.04 + 0.0 + 1.0)
    d.backward()
    assert torch.allclose(real.grad, torch.tensor([[-0.5, 0.5]], dtype=torch.float64))  # 2 (r - 1) / 2
    assert torch.allclose(fake.grad, torch.tensor([[0.2, -0.2]], dtype=torch.float64))  # 2 f / 2
    assert fake2.grad.item() == pytest.approx(2.0)
    g_in = leaf([[0.5, 2.0]])
    g = lsgan_generator_loss([g_in])  # ((-0.5)^2 + 1^2) / 2
    assert g.item() == pytest.approx(0.625)
    g.backward()
    assert torch.allclose(g_in.grad, torch.tensor([[-0.5, 1.0]], dtype=torch.float64))  # 2 (f - 1) / 2
    with pytest.raises(ValueError, match="one real and one fake output per scale, got 2 and 1"):
        lsgan_discriminator_loss([real, real2], [fake])


# ---------------------------------------------------------------------------------------------- codes


def test_attribute_indices_interleave_style_pose_and_illumination_per_chunk():
    style, pose, illum = attribute_indices(16, 2)
    assert style.tolist() == [0, 1, 2, 3, 8, 9, 10, 11]
    assert pose.tolist() == [4, 5, 12, 13] and illum.tolist() == [6, 7, 14, 15]
    with pytest.raises(ValueError, match=r"\(10 values\) must split into 4 equal chunks"):
        attribute_indices(10, 4)
    with pytest.raises(ValueError, match="leaves no room for style"):
        attribute_indices(4, 2)


def test_mix_codes_and_adain():
    a, b = torch.arange(6.0).view(1, 6), -torch.arange(6.0).view(1, 6)
    assert mix_codes(a, b, torch.tensor([1, 4])).tolist() == [[0.0, -1.0, 2.0, 3.0, -4.0, 5.0]]
    assert a.tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]  # not changed in place
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    gamma, beta = torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    y = adain(x, gamma, beta, eps=0.0)  # each (sample, channel) map gets mean beta and std gamma
    assert torch.allclose(y.mean(dim=(2, 3)), beta)
    assert torch.allclose(y.std(dim=(2, 3), unbiased=False), gamma)


# ---------------------------------------------------------------------------------------------- network

TINY = ["model.backbone=plain_w4", "model.depth=18", "model.att_dim=16", "model.gen_dim=4", "model.gen_down=1",
        "model.gen_res=2", "model.mlp_dim=8", "model.mlp_layers=1", "model.dis_dim=4", "model.dis_layers=1",
        "model.dis_scales=2", "model.fc1=16", "model.fc2=8"]


def tiny_recipe(*overrides, classes=4):
    torch.manual_seed(0)
    return build_recipe(load_config(resolve_config_path("hicmd_sysu"), [*TINY, *overrides]), num_classes=classes)


def tiny_batch():
    g = torch.Generator().manual_seed(1)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    return torch.randn(8, 3, 32, 16, generator=g), pids, torch.zeros(8, dtype=torch.long), torch.tensor([0, 1] * 4)


def test_network_shapes_and_routing_by_modality():
    net = tiny_recipe().model.eval()
    images, _, _, modality = tiny_batch()
    p, a = net.encode(images[:2], 0)
    assert p.shape == (2, 8, 16, 8) and a.shape == (2, 16)  # gen_dim 4 x 2^1, H / 2; att_dim 16
    assert net.decode(p, a).shape == (2, 3, 32, 16)
    assert [o.shape for o in net.discriminate(images[:2], 1)] == [(2, 1, 16, 8), (2, 1, 8, 4)]
    out = net(images, modality)
    assert out["feat"].shape == (8, 16) and out["logits"].shape == (8, 4) and out["triplet"].shape == (8, 8)
    infrared = net.identify(*net.encode(images[1::2], 1))["feat"]  # odd rows are infrared
    assert torch.allclose(out["feat"][1::2], infrared, atol=1e-6)
    assert not torch.allclose(out["feat"][1::2], net.identify(*net.encode(images[1::2], 0))["feat"], atol=1e-4)


def test_the_test_ranking_is_the_euclidean_one_on_normalised_features():
    recipe = tiny_recipe()
    recipe.model.eval()
    images, _, _, modality = tiny_batch()
    feat = recipe.embed(images, modality)
    q, g = feat[::2], feat[1::2]
    assert torch.equal(cosine_distance(q, g).argsort(dim=1), euclidean_distance(q, g).argsort(dim=1))


def _updates(recipe):
    return list(recipe.training_step(recipe.model, tiny_batch()))


def _reached(recipe, loss):
    recipe.model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    m = recipe.model
    parts = {"prototype": m.prototype, "attribute": m.attribute, "decoder": m.decoder, "dis": m.discriminator,
             "id": m.id_head}
    return {name: any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in part.parameters())
            for name, part in parts.items()}


def test_each_loss_reaches_only_the_parts_it_should():
    recipe = tiny_recipe()
    recipe.model.train()
    updates = recipe.training_step(recipe.model, tiny_batch())
    name, dis = next(updates)
    assert name == "dis"
    assert _reached(recipe, dis["loss"]) == {"prototype": False, "attribute": False, "decoder": False, "dis": True,
                                             "id": False}  # the fakes are detached: D's loss never reaches G
    names, gen = next(updates)
    assert names == ("gen", "id")
    everything_but_id = {"prototype": True, "attribute": True, "decoder": True, "id": False}
    assert _reached(recipe, gen["adv"]) == {**everything_but_id, "dis": True}  # through D, which gen does not step
    for term in ("same", "cross", "cycle", "code"):
        assert _reached(recipe, gen[term]) == {**everything_but_id, "dis": False}, term
    assert _reached(recipe, gen["kl"]) == {"prototype": False, "attribute": True, "decoder": False, "dis": False,
                                           "id": False}
    for term in ("ce", "triplet"):  # HFL: the encoders and its own head, never the decoder (fakes detached)
        assert _reached(recipe, gen[term]) == {"prototype": True, "attribute": True, "decoder": False, "dis": False,
                                               "id": True}, term
    assert gen["loss"].item() == pytest.approx(sum(gen[k].item() for k in gen if k != "loss"), rel=1e-6)


class OneBatch:
    def __len__(self):
        return 1

    def epoch(self, epoch, start=0):
        yield from [tiny_batch()][start:]


def test_the_discriminator_step_moves_only_d_and_the_joint_step_only_g_and_hfl(tmp_path):
    recipe = tiny_recipe()
    snapshots = []
    step = recipe.training_step

    def spy(model, batch):
        for update in step(model, batch):
            snapshots.append({k: v.clone() for k, v in recipe.model.state_dict().items()})
            yield update
        snapshots.append({k: v.clone() for k, v in recipe.model.state_dict().items()})

    recipe.training_step = spy
    preset = load_config(resolve_config_path("hicmd_sysu"), ["train.epochs=1"])["train"]
    trainer = Trainer(recipe, OneBatch(), parse_section(TrainSettings, preset, "train"), tmp_path, progress=False)
    assert set(trainer.optimizers) == {"gen", "dis", "id"}
    assert trainer.optimizers["gen"].defaults["betas"] == (0.5, 0.999)
    assert isinstance(trainer.optimizers["id"], torch.optim.SGD)
    assert trainer.optimizers["id"].param_groups[1]["lr"] == pytest.approx(1e-3 * 0.01)  # the combination weight
    trainer.fit()
    before, between, after = snapshots
    weights = [k for k, v in before.items() if v.is_floating_point() and "running" not in k]
    for key in weights:
        by_dis, by_joint = not torch.equal(before[key], between[key]), not torch.equal(between[key], after[key])
        assert by_dis == key.startswith("discriminator."), key
        assert by_joint == (not key.startswith("discriminator.")), key


def test_picture_is_written_every_n_steps(tmp_path):
    recipe = tiny_recipe("recipe.picture_every=2", "recipe.picture_pairs=3")
    recipe.trainer = SimpleNamespace(global_step=0, run_dir=tmp_path, is_main=True)
    _updates(recipe)
    assert not (tmp_path / "pictures").exists()  # step 1 of every 2
    recipe.trainer.global_step = 1
    _updates(recipe)
    picture = Image.open(tmp_path / "pictures" / "step_0000002.png")
    cell = max(16, 6 * max(len(c) for c in PICTURE_COLUMNS))
    assert picture.size == (len(PICTURE_COLUMNS) * (cell + 2), 12 + 3 * (32 + 2))  # 3 pairs of 32 x 16 images


def test_write_picture_undoes_the_normalisation(tmp_path):
    grey = torch.zeros(1, 3, 4, 2)  # the ImageNet mean: mid-grey after un-normalising
    write_picture(tmp_path / "p.png", {"x": grey})
    pixels = Image.open(tmp_path / "p.png").convert("RGB").load()
    assert pixels[(6 - 2) // 2, 12] == (124, 116, 104)  # round(255 * (0.485, 0.456, 0.406))


# ---------------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name, dataset, step_iters", [("hicmd_sysu", "sysu", 50000), ("hicmd_regdb", "regdb", 25000),
                                                        ("hicmd_llcm", "llcm", 50000)])
def test_presets_resolve(name, dataset, step_iters):
    cfg = load_config(resolve_config_path(name))
    assert cfg["method"] == "hicmd" and cfg["data"]["dataset"] == dataset
    tc = parse_section(TrainSettings, cfg["train"], "train")
    assert tc.schedule == "iter_step" and tc.step_iters == step_iters and tc.gamma == 0.5
    assert tc.optimizers["gen"].betas == (0.5, 0.999) and tc.optimizers["id"].optimizer == "sgd"
    assert cfg["loss"]["same"] == cfg["loss"]["cross"] == cfg["loss"]["cycle"] == 50.0


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"\(10 values\) must split into 4 equal chunks.*model.att_dim"):
        tiny_recipe("model.att_dim=10", "model.gen_res=4")
    cfg = load_config(resolve_config_path("hicmd_sysu"), TINY)
    cfg["loss"]["recon"] = 1.0
    with pytest.raises(ValueError, match=r"unknown loss setting\(s\) recon"):
        build_recipe(cfg, num_classes=4)
    with pytest.raises(ValueError, match="model.depth must be one of 18, 34, 50, got 101"):
        tiny_recipe("model.depth=101")


# ------------------------------------------------------------------------------------- train and evaluate

SMALL = {"data": {"height": 32, "width": 16, "p": 4, "k": 1, "workers": 0, "cache": False},
         "model": {"backbone": "plain_w4", "depth": 18, "att_dim": 8, "gen_dim": 2, "gen_down": 1, "gen_res": 1,
                   "mlp_dim": 8, "mlp_layers": 1, "dis_dim": 2, "dis_layers": 1, "dis_scales": 1, "fc1": 8,
                   "fc2": 8},
         "recipe": {"picture_every": 2},
         "train": {"epochs": 1, "step_iters": 2, "log_every": 1}}


def test_preset_trains_and_evaluates(tmp_path):
    root = tmp_path / "sysu"
    generate(root, "sysu", 6, seed=1, size=(32, 16), images=1, workers=1)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("hicmd_sysu")), **SMALL}))
    out = tmp_path / "run"
    train(tiny, root, out, device="cpu", progress=False)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {"loss_dis", "loss_gen_id", "dis", "same", "cross", "cycle", "code", "kl", "adv", "ce", "triplet"}
    assert len(records) >= 2 and logged <= set(records[-1])
    assert all(math.isfinite(records[-1][k]) for k in logged)
    assert [r["lr_gen"] for r in records[:3]] == pytest.approx([1e-4, 1e-4, 5e-5])  # halved every 2 iterations
    assert records[0]["lr_id"] == pytest.approx(1e-3)
    assert (out / "pictures" / "step_0000002.png").is_file()
    assert set(load_checkpoint(out / "checkpoint.pt")["optimizers"]) == {"gen", "dis", "id"}
    result = evaluate_run(out, root, "sysu/all/single/seeded", device="cpu", trials=[0])
    assert len(result.trials) == 1 and 0.0 <= result.mean["mAP"] <= 1.0


def test_a_resnet_hicmd_embeds_test_images():
    # the preset's ID trunk is a ResNet layer3 slice; its width was taken from layer4 and embedding failed
    recipe = tiny_recipe("model.backbone=resnet", "model.id_layers=[layer3]")
    recipe.model.eval()
    feat = recipe.embed(torch.randn(3, 3, 32, 16), torch.tensor([0, 1, 1]))
    assert feat.shape == (3, 16) and torch.isfinite(feat).all()

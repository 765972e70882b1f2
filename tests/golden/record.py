"""Records the golden values of tests/methods/test_parity.py by running the official BEiT, MAE and DINO
code on fixed inputs. Run once, outside the test suite, on checkouts of the three repositories:

    python tests/golden/record.py --beit UNILM/beit --mae MAE --dino DINO [--out tests/golden]
    python tests/golden/record.py --mae MAE --only mae_vit      # one file (each needs its repository)

Nothing of their code is copied here: each function is imported from its own file and called.
The only changes are to the environment, for code written against 2021-2022 libraries: numpy's
removed aliases ``np.int`` / ``np.float`` are restored, and the modules BEiT's ``utils.py``
imports but the scheduler does not use (``torch._six``, ``tensorboardX``, its dVAE module) are
stubbed. Each output file records the source files, the commits (``--commits``) and the inputs
in its metadata; tests/golden/README.md says what each tensor is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import re
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

# Schedules: (total steps = epochs x iterations per epoch), the official argument names.
LR = dict(base=1e-3, final=1e-5)
BEIT_CASES = {  # name -> (epochs, niter_per_ep, warmup_epochs, warmup_steps)
    "beit_lr_warmup_epochs": (10, 10, 2, -1),
    "beit_lr_warmup_steps": (4, 25, 1, 7),
    "beit_lr_no_warmup": (10, 10, 0, -1),
}
MAE_LR = dict(lr=1e-3, min_lr=1e-6, epochs=10, warmup_epochs=2, niter_per_ep=10)
DINO_SCHEDULES = dict(epochs=10, niter_per_ep=10, wd=0.04, wd_end=0.4, momentum=0.996)
DINO_LOSS = dict(out_dim=8, batch=3, ncrops=4, warmup_teacher_temp=0.04, teacher_temp=0.07,
                 warmup_teacher_temp_epochs=5, nepochs=10, student_temp=0.1, center_momentum=0.9, epochs=(2, 7))
BEIT_MASKS = dict(grid=14, samples=20000, min_num_patches=16, budgets=(75, 118), seed=0)
MAE_INPUTS = dict(batch=2, channels=3, img=16, patch=4, mask_ratio=0.75, mask_batch=4, mask_patches=16, seed=0)
POS_EMBED = ((16, 4), (32, 5))  # (embed_dim, grid_size)
# MAE's fine-tuned ViT (models_vit.VisionTransformer, global_pool=True) at vit-smoke's width, depth and
# heads on 32 px images (2 x 2 patches), its weights drawn by seeded_state (no file to store)
MAE_VIT = dict(embed_dim=192, depth=4, num_heads=3, patch=16, img=32, num_classes=10, batch=3, seed=0)


def seeded_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Weights for a state of these keys and shapes, the same wherever they are drawn: one generator
    over the keys in sorted order, LayerNorm weights near 1 and every other tensor small normal draws
    (large enough that the blocks mix the tokens). tests/models/test_import_formats.py draws them too."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key in sorted(shapes):
        noise = torch.randn(shapes[key], generator=generator)
        state[key] = 1 + 0.1 * noise if re.search(r"norm\d?\.weight$", key) else 0.05 * noise
    return state


def load(name: str, path: Path) -> types.ModuleType:
    """Imports one file of a reference repository under a name of our own (BEiT's and DINO's
    ``utils`` would otherwise collide); its folder is on sys.path while it imports."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def restore_removed_aliases() -> None:
    np.int = int  # type: ignore[attr-defined]    removed in numpy 1.24; BEiT's MaskingGenerator uses it
    np.float = float  # type: ignore[attr-defined]  removed in numpy 1.24; MAE's pos_embed uses it
    sys.modules.setdefault("torch._six", types.SimpleNamespace(inf=math.inf))
    sys.modules.setdefault("tensorboardX", types.SimpleNamespace(SummaryWriter=object))
    sys.modules.setdefault("modeling_discrete_vae", types.SimpleNamespace(Dalle_VAE=object, DiscreteVAE=object))


def boundary(masks: np.ndarray) -> np.ndarray:
    """Per mask (S, H, W): the 4-adjacent pairs with one patch masked and one not."""
    return (masks[:, 1:] != masks[:, :-1]).sum((1, 2)) + (masks[:, :, 1:] != masks[:, :, :-1]).sum((1, 2))


def record_beit(beit: Path) -> dict[str, torch.Tensor]:
    utils = load("beit_utils", beit / "utils.py")
    masking = load("beit_masking_generator", beit / "masking_generator.py")
    out: dict[str, torch.Tensor] = {}
    for name, (epochs, niter, warmup_epochs, warmup_steps) in BEIT_CASES.items():
        values = utils.cosine_scheduler(LR["base"], LR["final"], epochs, niter, warmup_epochs=warmup_epochs,
                                        warmup_steps=warmup_steps)
        out[name] = torch.tensor(values, dtype=torch.float64)
    g = BEIT_MASKS["grid"]
    for budget in BEIT_MASKS["budgets"]:
        random.seed(BEIT_MASKS["seed"])
        generator = masking.MaskingGenerator((g, g), budget, min_num_patches=BEIT_MASKS["min_num_patches"])
        masks = np.stack([generator() for _ in range(BEIT_MASKS["samples"])]).astype(bool)
        counts = masks.reshape(len(masks), -1).sum(1)
        out[f"beit_mask{budget}_count_hist"] = torch.tensor(np.bincount(counts, minlength=g * g + 1), dtype=torch.int64)
        out[f"beit_mask{budget}_position_freq"] = torch.tensor(masks.mean(0), dtype=torch.float64)
        out[f"beit_mask{budget}_boundary_hist"] = torch.tensor(np.bincount(boundary(masks)), dtype=torch.int64)
    return out


def record_mae(mae: Path) -> dict[str, torch.Tensor]:
    lr_sched = load("mae_lr_sched", mae / "util" / "lr_sched.py")
    pos_embed = load("mae_pos_embed", mae / "util" / "pos_embed.py")
    models_mae = load("mae_models_mae", mae / "models_mae.py")
    out: dict[str, torch.Tensor] = {}
    args = types.SimpleNamespace(**MAE_LR)
    optimizer = types.SimpleNamespace(param_groups=[{}])
    total = MAE_LR["epochs"] * MAE_LR["niter_per_ep"]
    # MAE sets the lr at every iteration with a fractional epoch (engine_finetune / main_linprobe).
    out["mae_lr"] = torch.tensor([lr_sched.adjust_learning_rate(optimizer, s / MAE_LR["niter_per_ep"], args)
                                  for s in range(total)], dtype=torch.float64)
    for dim, grid in POS_EMBED:
        out[f"mae_pos_embed_d{dim}_g{grid}"] = torch.tensor(pos_embed.get_2d_sincos_pos_embed(dim, grid, cls_token=True))

    m = MAE_INPUTS
    torch.manual_seed(m["seed"])
    x = torch.zeros(m["mask_batch"], m["mask_patches"], 1)
    _, mask, ids_restore = models_mae.MaskedAutoencoderViT.random_masking(None, x, m["mask_ratio"])
    out["mae_mask"], out["mae_ids_restore"] = mask, ids_restore

    g = torch.Generator().manual_seed(m["seed"])
    patches = (m["img"] // m["patch"]) ** 2
    imgs = torch.randn(m["batch"], m["channels"], m["img"], m["img"], generator=g) * 2.0 + 0.5
    pred = torch.randn(m["batch"], patches, m["patch"] ** 2 * m["channels"], generator=g)
    loss_mask = (torch.rand(m["batch"], patches, generator=g) < m["mask_ratio"]).float()
    out.update(mae_imgs=imgs, mae_pred=pred, mae_loss_mask=loss_mask)
    for norm_pix in (True, False):
        fake = types.SimpleNamespace(patch_embed=types.SimpleNamespace(patch_size=(m["patch"], m["patch"])),
                                     norm_pix_loss=norm_pix)
        fake.patchify = types.MethodType(models_mae.MaskedAutoencoderViT.patchify, fake)
        if norm_pix:
            out["mae_patchify"] = fake.patchify(imgs)
        loss = models_mae.MaskedAutoencoderViT.forward_loss(fake, imgs, pred, loss_mask)
        out[f"mae_loss_norm_pix_{str(norm_pix).lower()}"] = loss.reshape(1)
    return out


def record_mae_vit(mae: Path) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The feature and logits of MAE's fine-tuned model (``global_pool=True``: the mean of the patch
    tokens, then ``fc_norm``) on seeded images, with the keys and shapes of its state dict."""
    models_vit = load("mae_models_vit", mae / "models_vit.py")
    c = MAE_VIT
    model = models_vit.VisionTransformer(
        global_pool=True, img_size=c["img"], patch_size=c["patch"], embed_dim=c["embed_dim"], depth=c["depth"],
        num_heads=c["num_heads"], mlp_ratio=4, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_classes=c["num_classes"])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state(shapes, c["seed"]))
    model.eval()
    images = torch.randn(c["batch"], 3, c["img"], c["img"], generator=torch.Generator().manual_seed(c["seed"] + 1))
    with torch.no_grad():
        features = model.forward_features(images)
        logits = model.head(features)
    return {"mae_vit_images": images, "mae_vit_features": features, "mae_vit_logits": logits}, shapes


def record_dino(dino: Path) -> dict[str, torch.Tensor]:
    import torch.distributed as dist

    main_dino = load("dino_main_dino", dino / "main_dino.py")
    utils = sys.modules.get("utils") or load("dino_utils", dino / "utils.py")
    out: dict[str, torch.Tensor] = {}
    s = DINO_SCHEDULES
    out["dino_lr"] = torch.tensor(utils.cosine_scheduler(LR["base"], LR["final"], s["epochs"], s["niter_per_ep"],
                                                         warmup_epochs=2), dtype=torch.float64)
    out["dino_wd"] = torch.tensor(utils.cosine_scheduler(s["wd"], s["wd_end"], s["epochs"], s["niter_per_ep"]),
                                  dtype=torch.float64)
    out["dino_momentum"] = torch.tensor(utils.cosine_scheduler(s["momentum"], 1, s["epochs"], s["niter_per_ep"]),
                                        dtype=torch.float64)

    c = DINO_LOSS
    with tempfile.TemporaryDirectory() as tmp:  # DINOLoss.update_center all-reduces: one gloo process
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            loss_fn = main_dino.DINOLoss(c["out_dim"], c["ncrops"], c["warmup_teacher_temp"], c["teacher_temp"],
                                         c["warmup_teacher_temp_epochs"], c["nepochs"], c["student_temp"],
                                         c["center_momentum"])
            out["dino_teacher_temp"] = torch.tensor(loss_fn.teacher_temp_schedule, dtype=torch.float64)
            g = torch.Generator().manual_seed(0)
            for i, epoch in enumerate(c["epochs"]):
                student = torch.randn(c["ncrops"] * c["batch"], c["out_dim"], generator=g) * 3.0
                teacher = torch.randn(2 * c["batch"], c["out_dim"], generator=g) * 3.0 + 1.0
                loss = loss_fn(student, teacher, epoch)
                out[f"dino_student_{i}"], out[f"dino_teacher_{i}"] = student, teacher
                out[f"dino_loss_{i}"] = loss.detach().reshape(1)
                out[f"dino_center_{i}"] = loss_fn.center.clone()
        finally:
            dist.destroy_process_group()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beit", type=Path, help="microsoft/unilm's beit/ folder")
    parser.add_argument("--mae", type=Path, help="facebookresearch/mae")
    parser.add_argument("--dino", type=Path, help="facebookresearch/dino")
    parser.add_argument("--only", nargs="+", choices=["beit", "mae", "dino", "mae_vit"],
                        help="the files to record (default: all four)")
    parser.add_argument("--commits", default="{}", help='JSON {"beit": sha, "mae": sha, "dino": sha}')
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    restore_removed_aliases()
    commits = json.loads(args.commits)
    inputs = {"beit": {"lr": LR, "cases": BEIT_CASES, "masks": BEIT_MASKS},
              "mae": {"lr": MAE_LR, "inputs": MAE_INPUTS, "pos_embed": POS_EMBED},
              "dino": {"lr": LR, "schedules": DINO_SCHEDULES, "loss": DINO_LOSS},
              "mae_vit": {"model": MAE_VIT}}
    sources = {"beit": "microsoft/unilm beit/utils.py (cosine_scheduler), beit/masking_generator.py (MaskingGenerator)",
               "mae": "facebookresearch/mae util/lr_sched.py (adjust_learning_rate), util/pos_embed.py "
                      "(get_2d_sincos_pos_embed), models_mae.py (random_masking, patchify, forward_loss)",
               "dino": "facebookresearch/dino utils.py (cosine_scheduler), main_dino.py (DINOLoss)",
               "mae_vit": "facebookresearch/mae models_vit.py (VisionTransformer, global_pool=True: forward_features, head)"}
    recorders = {"beit": (record_beit, args.beit), "mae": (record_mae, args.mae), "dino": (record_dino, args.dino),
                 "mae_vit": (record_mae_vit, args.mae)}
    for name in args.only or list(recorders):
        record, path = recorders[name]
        if path is None:
            parser.error(f"recording {name} needs its repository (--{name.split('_')[0]})")
        recorded = record(path)
        tensors, extra = recorded if isinstance(recorded, tuple) else (recorded, None)
        meta = {"source": sources[name], "commit": commits.get(name.split("_")[0], "unknown"),
                "inputs": json.dumps(inputs[name]), "torch": torch.__version__, "numpy": np.__version__}
        if extra is not None:
            import timm

            meta.update(shapes=json.dumps(extra), timm=timm.__version__)
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(args.out / f"{name}.safetensors"),
                  metadata=meta)
        print(f"wrote {args.out / f'{name}.safetensors'}: {len(tensors)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a reader sees instead of the registry's keys: display names of methods, data sets,
evaluations and scales, and one colour and marker per method for every figure."""

from __future__ import annotations

import re

# method key -> display name, in the order rows and legends list them (floors and ceiling last)
METHODS: dict[str, str] = {
    "random-init": "random init",
    "supervised": "supervised",
    "supervised-deit": "supervised (DeiT)",
    "splitmask": "SplitMask",
    "beit": "BEiT",
    "mae": "MAE",
    "dino": "DINO",
    "byol": "BYOL",
    "pixels-logistic": "pixels + logistic regression",
    "pixels-knn": "pixels + k-NN",
    "supervised-all-labels": "supervised, all labels",
}
# rows that are not a method under test: a trivial floor or the ceiling, drawn as lines across the bars
FLOOR, CEILING = "floor", "ceiling"
ROLES: dict[str, str] = {"pixels-logistic": FLOOR, "pixels-knn": FLOOR, "supervised-all-labels": CEILING}

DATASETS: dict[str, str] = {
    "none": "none", "imagenet": "ImageNet", "coco": "COCO", "ade20k": "ADE20k", "stanford-cars": "Stanford Cars",
    "inat2019": "iNaturalist 2019", "domainnet-clipart": "DomainNet clipart", "domainnet-sketch": "DomainNet sketch",
    "domainnet-painting": "DomainNet painting", "fashion-mnist": "Fashion-MNIST",
    "fashion-mnist-scenes": "Fashion-MNIST scenes", "synthetic-classification": "synthetic images",
    "synthetic": "synthetic images", "synthetic-coco": "synthetic COCO", "synthetic-ade20k": "synthetic ADE20k",
}
# downstream suffix -> how the data set is evaluated (the longest matching suffix wins)
EVALUATIONS: dict[str, str] = {
    "finetune": "fine-tuning", "linear": "linear probe", "knn": "k-NN", "maskrcnn": "Mask R-CNN",
    "upernet": "UperNet", "pixels-logistic": "pixels + logistic regression", "pixels-knn": "pixels + k-NN",
    "cls-finetune": "fine-tuning", "finetune-val": "fine-tuning, on val",
}
METRICS = {"top1": "top-1 (%)", "bbox_mAP": "box AP", "segm_mAP": "mask AP", "mIoU": "mIoU"}
SCALES = {"mini": "mini (2 CPU cores)", "mini-quick": "mini-quick (CI)", "mini-gpu": "mini-gpu (one GPU)",
          "mini-gpu-quick": "mini-gpu-quick (a rehearsal)", "smoke": "smoke", "small": "small", "paper": "paper scale"}
TAGS = {"tokenizer": "tokenizer", "epochs": "epochs", "hparams": "", "arch": "", "scale": ""}

MARKERS = "osD^v<>ph*X"


def method_name(key: str) -> str:
    return METHODS.get(key, key)


def method_rank(key: str) -> int:
    """A method's place in rows and legends (unknown ones after the known, before floors)."""
    return list(METHODS).index(key) if key in METHODS else len(METHODS)


def method_style(key: str) -> dict[str, str]:
    """The same colour and marker for a method in every figure."""
    index = method_rank(key)
    return {"color": f"C{index % 10}", "marker": MARKERS[index % len(MARKERS)]}


def data_name(key: str) -> str:
    """"imagenet-10%" -> "ImageNet 10%", "fashion-mnist-scenes" -> "Fashion-MNIST scenes"."""
    match = re.fullmatch(r"(.+?)-([\d.]+%)", key)
    base, share = (match.group(1), f" {match.group(2)}") if match else (key, "")
    return DATASETS.get(base, base) + share


def downstream_name(key: str) -> str:
    """"fashion-mnist-1k-finetune" -> "Fashion-MNIST, 1k labels, fine-tuning"."""
    for suffix in sorted(EVALUATIONS, key=len, reverse=True):
        if key.endswith(f"-{suffix}"):
            rest = key[: -len(suffix) - 1]
            labels = re.fullmatch(r"(.+)-(1k|all)", rest)
            data, amount = (labels.group(1), f", {labels.group(2)} labels") if labels else (rest, "")
            return f"{data_name(data)}{amount}, {EVALUATIONS[suffix]}"
    return key


def value_name(key: str, value: str, short: bool = False) -> str:
    """A tag's value as a reader sees it (``short``: as a column or group of the layout's says it)."""
    if key == "method":
        return method_name(value)
    if key == "pretrain_data":
        if value == "none":
            return "no pre-training"
        return data_name(value) if short else f"pre-trained on {data_name(value)}"
    if key == "downstream":
        return downstream_name(value)
    if key == "metric":
        return METRICS.get(value, value)
    if key == "scale":
        return SCALES.get(value, value)
    if key == "epochs":
        return f"{value} epochs" if value else "—"
    label = TAGS.get(key, key)
    return f"{label} {value}".strip() if value else "—"

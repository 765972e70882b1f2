"""One record per data set: what the planner (:mod:`benchmark.experiments.datasets`), the dry run's
estimates (:mod:`benchmark.stages.cost`) and the doctor know of it, written once. A new data set is
a record here, its reader in :mod:`benchmark.data.classification` where it has a format of its own,
and its layout in docs/datasets.md."""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.data.classification import DOMAINNET_DOMAINS
from benchmark.data.fashion_mnist import FILES as FASHION_MNIST_FILES


@dataclass(frozen=True)
class DataSet:
    name: str
    layout: str = ""                   # the layout expected below its folder, in one line (docs/datasets.md)
    required: tuple[str, ...] = ()     # paths below its folder that must exist
    train: int | None = None           # images in its train split (the official release)
    val: int | None = None             # images in the split its evaluations report (val, or test where there is none)
    folder: str | None = None          # its folder below the data root (None: its name); DomainNet's domains share one
    pretrain_images: str | None = None  # the folder of train images a pre-training reads (None: through its reader)
    reader: str | None = None          # its reader in benchmark.data.classification.READERS (None: an image folder)
    # read through its reader by every stage at every scale (pre-training and every evaluation), never as a folder
    own_format: bool = False
    # written by a data run of the plan, not found under the data root: (the data run, its train images' folder)
    written_by: tuple[str, str] | None = None

    @property
    def root(self) -> str:
        return self.folder or self.name


IMAGENET_TRAIN = 1_281_167
_DOMAIN_SIZES = {  # the official <domain>_{train,test}.txt lists (409,832 train / 176,743 test in all)
    "clipart": (33_525, 14_604), "infograph": (36_023, 15_582), "painting": (50_416, 21_850),
    "quickdraw": (120_750, 51_750), "real": (120_906, 52_041), "sketch": (48_212, 20_916),
}
DOMAINS = ("clipart", "sketch", "painting")  # the domains the paper pre-trains and fine-tunes on

# Counts as the official releases give them: ImageNet-1k (ILSVRC 2012, Russakovsky et al. 2015), iNaturalist
# 2019 (FGVC6, github.com/visipedia/inat_comp), COCO 2017 (cocodataset.org), ADE20k (SceneParsing,
# ADEChallengeData2016), Stanford Cars (Krause et al. 2013; val is its test split), DomainNet (Peng et al. 2019).
_RECORDS = [
    DataSet("imagenet", "ImageFolder of ILSVRC-2012: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into "
            "class folders)", ("train", "val"), IMAGENET_TRAIN, 50_000, pretrain_images="train"),
    DataSet("inat2019", "iNaturalist 2019 as distributed: train2019.json, val2019.json, "
            "train_val2019/<supercategory>/<id>/*.jpg", ("train2019.json", "val2019.json", "train_val2019"),
            265_213, 3_030, reader="inat2019"),
    DataSet("coco", "COCO 2017: train2017/, val2017/, annotations/instances_{train,val}2017.json",
            ("train2017", "val2017", "annotations/instances_train2017.json", "annotations/instances_val2017.json"),
            118_287, 5_000, pretrain_images="train2017"),
    DataSet("ade20k", "the ADEChallengeData2016 folder itself: images/{training,validation}/*.jpg, "
            "annotations/{training,validation}/*.png",
            ("images/training", "images/validation", "annotations/training", "annotations/validation"),
            20_210, 2_000, pretrain_images="images/training"),
    DataSet("stanford-cars", "Stanford Cars as distributed: cars_train/, cars_test/, devkit/{cars_meta,cars_train_annos}"
            ".mat, cars_test_annos_withlabels.mat (here or in devkit/)",
            ("cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat"),
            8_144, 8_041, pretrain_images="cars_train", reader="stanford-cars"),
    DataSet("domainnet", "DomainNet as distributed, one root for all domains: <domain>/<class>/*.jpg, "
            f"<domain>_{{train,test}}.txt for {', '.join(DOMAINS)}",
            tuple(p for d in DOMAINS for p in (d, f"{d}_train.txt", f"{d}_test.txt"))),
    *(DataSet(f"domainnet-{d}", train=_DOMAIN_SIZES[d][0], val=_DOMAIN_SIZES[d][1], folder="domainnet",
              reader=f"domainnet-{d}") for d in DOMAINNET_DOMAINS),
    # the official 60,000 train less the 10,000 carved out as val (benchmark.data.fashion_mnist); test 10,000
    DataSet("fashion-mnist", "Fashion-MNIST's official idx files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz "
            "(gzipped or not); where no --data-root is named and ./data holds no fashion-mnist folder, Debian's "
            "dataset-fashion-mnist package is used (apt-get install dataset-fashion-mnist)",
            tuple(f"{stem}.gz" for pair in FASHION_MNIST_FILES.values() for stem in pair), 50_000, 10_000,
            reader="fashion-mnist", own_format=True),
    # The miniature's scenes of several items (benchmark.data.scenes): as many train scenes as train items
    # (the mini scale's Scale.scenes), so that scenes and items weigh the same. Iterations are held constant,
    # so the count sets the epochs tag only.
    DataSet("fashion-mnist-scenes", train=50_000, written_by=("scenes-fashion-mnist", "unlabelled/train")),
    DataSet("dall-e", "the DALL-E dVAE encoder converted once with `python -m benchmark.tokenizers convert-dalle "
            "encoder.pkl dalle_encoder.safetensors --trust-pickle`", ("dalle_encoder.safetensors",)),
]
DATA_SETS: dict[str, DataSet] = {record.name: record for record in _RECORDS}

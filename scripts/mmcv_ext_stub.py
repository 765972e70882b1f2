"""``mmcv._ext`` for an mmcv installed without its compiled ops (``scripts/offline_install.sh KIT
TARGET none``), on a GPU machine held for minutes, where compiling them would cost minutes of it.

mmcv's op modules look their kernels up in ``mmcv._ext`` when they are imported, and mmdet imports
all of them, so without this module mmdet would not import at all. Here every kernel exists and
raises when called, naming itself. ``get_compiling_cuda_version`` says "not available", as a build
with CPU ops only does, so the dense runs switch to torchvision's RoIAlign and NMS
(``benchmark/downstream/mm/ops.py``), which need no compiled mmcv op: tests/downstream/test_ops.py
trains Mask R-CNN with this module in mmcv's place (and UperNet with every compiled op refusing).
"""

COMPILED_OPS = False


def get_compiling_cuda_version() -> str:
    return "not available"


def get_compiler_version() -> str:
    return "none (mmcv installed without its compiled ops)"


def __getattr__(name: str):
    if name.startswith("__"):  # the import machinery's probes
        raise AttributeError(name)

    def missing(*args, **kwargs):
        raise RuntimeError(f"mmcv's compiled {name} is not installed (mmcv without its compiled ops, "
                           "scripts/offline_install.sh ... none); reinstall mmcv with MMCV_WITH_OPS=1")

    missing.__name__ = name
    return missing

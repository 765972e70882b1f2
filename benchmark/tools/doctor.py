"""``python -m benchmark doctor``: is the stack installed and working? One line per check,
and for each problem one line saying what is wrong and how to fix it."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from importlib import metadata

# (distribution, import name, pinned version or None)
PACKAGES = [
    ("torch", "torch", "2.13.0"),
    ("torchvision", "torchvision", "0.28.0"),
    ("timm", "timm", None),
    ("mmengine", "mmengine", "0.10.7"),
    ("mmcv", "mmcv", "2.1.0"),
    ("mmdet", "mmdet", "3.3.0"),
    ("mmsegmentation", "mmseg", "1.2.2"),
    ("setuptools", "pkg_resources", None),
    ("pandas", "pandas", None),
    ("matplotlib", "matplotlib", None),
]
FIX_STACK = "run ./run_tests.sh or 'bash scripts/bootstrap.sh' to (re)install the project's .venv"
# mmcv built without its compiled ops installs as "mmcv-lite" (scripts/offline_install.sh ... none)
OTHER_NAMES = {"mmcv": "mmcv-lite"}


def _version(dist: str) -> tuple[str, str]:
    """(the installed version of ``dist`` or of its other name, a note naming the other name)."""
    try:
        return metadata.version(dist), ""
    except metadata.PackageNotFoundError:
        if dist not in OTHER_NAMES:
            raise
        return metadata.version(OTHER_NAMES[dist]), f" ({OTHER_NAMES[dist]})"


def _check_torchvision_ops() -> None:
    import torch
    import torchvision.ops

    torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)


def _check_torchvision_gpu_ops() -> None:
    """The kernels the dense runs fall back to where mmcv has no CUDA ops, on a CUDA tensor."""
    import torch
    from torchvision.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device="cuda")
    nms(boxes, torch.tensor([1.0], device="cuda"), 0.5)
    roi_align(torch.zeros(1, 1, 4, 4, device="cuda"), torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]], device="cuda"), (2, 2))


def _check_mmcv_ops() -> None:
    import torch
    from mmcv.ops import RoIAlign, nms

    nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)
    RoIAlign((2, 2), 1.0)(torch.zeros(1, 1, 4, 4), torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]))


def _check_gpu_ops() -> None:
    """Mask R-CNN's RoIAlign and NMS on a CUDA tensor: mmcv's own where it was built with CUDA ops,
    else torchvision's, which the dense runs then use (benchmark.downstream.mm.ops)."""
    import torch
    from mmcv.ops import RoIAlign, nms

    from benchmark.downstream.mm.ops import mmcv_cuda_ops

    if not mmcv_cuda_ops():
        raise RuntimeError("mmcv was built without CUDA ops (the dense runs fall back to torchvision's RoIAlign and NMS)")
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device="cuda")
    nms(boxes, torch.tensor([1.0], device="cuda"), 0.5)
    RoIAlign((2, 2), 1.0)(torch.zeros(1, 1, 4, 4, device="cuda"), torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]], device="cuda"))


def _check_setuptools() -> None:
    major = int(metadata.version("setuptools").split(".")[0])
    if major >= 81:
        raise RuntimeError(f"setuptools {major} has no pkg_resources")


def _gpu_visible() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def run_doctor() -> int:
    # Deprecation notices of the stack (pkg_resources' in mmengine) would land in the middle of the
    # table; the table says what matters.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    problems: list[str] = []
    print(f"python       {sys.version.split()[0]}")
    for dist, module, pinned in PACKAGES:
        try:
            version, note = _version(dist)
            importlib.import_module(module)
        except Exception as err:  # any import failure is a finding, not a crash
            print(f"{dist:<12} MISSING ({type(err).__name__}: {err})")
            problems.append(f"{dist} does not import: {FIX_STACK}")
            continue
        if pinned and version.split("+")[0] != pinned:
            note += f" (expected {pinned})"
            problems.append(f"{dist} is {version}, the suite needs {pinned}: {FIX_STACK}")
        print(f"{dist:<12} {version}{note}")

    checks: list[tuple[str, Callable[[], None], str]] = [
        ("torchvision ops", _check_torchvision_ops,
         "torchvision's compiled ops do not load: torch and torchvision builds do not match (a '+cpu' torch?); " + FIX_STACK),
        ("mmcv ops", _check_mmcv_ops,
         "mmcv was installed without its compiled ops (mmcv-lite or a failed build); reinstall with "
         "MMCV_WITH_OPS=1 pip install --no-build-isolation mmcv==2.1.0"),
        ("pkg_resources", _check_setuptools,
         "mmcv and mmengine's mmdet::/mmseg:: configs need pkg_resources: pip install 'setuptools>=77.0.3,<81'"),
    ]
    if _gpu_visible():
        checks.append(("torchvision GPU", _check_torchvision_gpu_ops,
                       "torchvision's RoIAlign and NMS do not run on this GPU (torch and torchvision builds do not "
                       "match?); " + FIX_STACK))
        checks.append(("mmcv GPU ops", _check_gpu_ops,
                       "mmcv's RoIAlign and NMS do not run on this GPU: rebuild mmcv with its CUDA ops here (delete .venv "
                       "and run bash scripts/bootstrap.sh on this machine, with nvcc on the PATH)"))
    for name, check, fix in checks:
        try:
            check()
            print(f"{name:<16} ok")
        except Exception as err:
            print(f"{name:<16} FAILED ({type(err).__name__}: {err})")
            problems.append(fix)

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible (runs use the CPU)"
        print(f"GPU              {gpu}")
    except Exception:
        pass

    if problems:
        print(f"\n{len(problems)} problem(s):")
        for line in problems:
            print(f"  - {line}")
        return 1
    print("\nall checks passed")
    return 0

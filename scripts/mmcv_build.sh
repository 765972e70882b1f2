# mmcv 2.1.0 compiled with its ops against the torch that `python` imports (no binary wheel exists
# for the torch versions the suite runs on). Sourced by bootstrap.sh and offline_install.sh:
#
#   mmcv_build SOURCE OPS PIP_INSTALL...
#
# SOURCE: "mmcv" (from the index or pip's cache) or a path to mmcv's sdist; OPS: "auto" (its CUDA
# ops where a GPU and nvcc are present, for that GPU's architecture) or "cpu" (the CPU ops only:
# on a GPU the dense runs then use torchvision's RoIAlign and NMS, benchmark/downstream/mm/ops.py);
# PIP_INSTALL: the pip command that installs, e.g. `python -m pip install`. Needs `say`.

mmcv_build() {
  local source=$1 ops=$2 cuda_arch started=$SECONDS
  shift 2
  cuda_arch="$(python -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability() if torch.cuda.is_available() else "")' 2>/dev/null || true)"
  if [[ -n "$cuda_arch" && "$ops" == auto ]] && command -v nvcc >/dev/null 2>&1; then
    say "a GPU (compute capability $cuda_arch) and nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'): compiling mmcv's CUDA ops for it"
    # A CUDA build must not reuse pip's cached CPU wheel.
    MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$cuda_arch" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$@" --no-build-isolation --no-cache-dir --force-reinstall --no-deps "$source"
    say "mmcv with CUDA ops built in $((SECONDS - started)) s"
  else
    [[ -n "$cuda_arch" ]] && say "a GPU, but mmcv's CPU ops only ($([[ "$ops" == cpu ]] && echo asked for || echo no nvcc)); the dense runs use torchvision's RoIAlign and NMS on the GPU"
    # mmcv's setup.py builds its CUDA ops whenever torch sees a GPU, FORCE_CUDA=0 or not (and
    # fails without nvcc): the GPU is hidden from the build.
    CUDA_VISIBLE_DEVICES="" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$@" --no-build-isolation --no-deps "$source"
    say "mmcv with CPU ops installed in $((SECONDS - started)) s"
  fi
}

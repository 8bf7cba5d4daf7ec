#!/usr/bin/env bash
# The GPU-host check: glm45-launch for real on one GPU machine (the head is this machine; no sshd needed).
#
#   examples/gpu_host_check.sh [OUT_DIR]        # on any Linux GPU host with glm45-launch, Ray and PyTorch
#
# 1. preflight --require-gpus: every GPU and NVLink seen, versions, paths, the interface, the job's imports;
# 2. netcheck: NCCL all-reduces over every GPU (algbw/busbw per size), the cluster up and down again;
# 3. up with examples/gpu_smoke_entry.py: CUDA on every GPU Ray assigns, a bf16 matmul, an NCCL
#    all-reduce over all GPUs of the cluster, the runtime env a GPU worker sees (the netcheck runs first);
# 4. down.
# --no-cleanup: the recipe's cleanup (`pkill -9 python`) would kill this machine's own Python processes.
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0 ...) in the job's runtime env, as shared GPU hosts require.
# Everything it prints, and the run directories, land in OUT_DIR (default ./gpu-host-check).
set -uo pipefail
out=$(mkdir -p "${1:-gpu-host-check}" && cd "${1:-gpu-host-check}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
ip=$(hostname -I | awk '{print $1}')
ifname=$(ls /sys/class/net | grep -v '^lo$' | head -1)
gpus=$(nvidia-smi -L | wc -l)
export MLP_WORKER_0_HOST=$ip MLP_SOCKET_IFNAME=$ifname BASE_DIR=$out/base
echo "$ip slots=$gpus" > "$out/hostfile"
mkdir -p "$out/checkout" && cp "$here/gpu_smoke_entry.py" "$out/checkout/"
python3 -c "import sys; from glm45_launch.testing.rackbox import make_base_dir; make_base_dir(__import__('pathlib').Path(sys.argv[1]))" "$BASE_DIR"
common=(--hostfile "$out/hostfile" --workdir "$out/checkout" --entry gpu_smoke_entry.py --actor-num-nodes 1
        --env NCCL_NVLS_ENABLE=0 --env TORCH_SYMM_MEM_DISABLE_MULTICAST=1 --env NVSHMEM_DISABLE_NVLS=1)
run() { echo "\$ glm45-launch $*"; glm45-launch "$@"; echo "(exit $?)"; }
{
  echo "# $(date -u +%FT%TZ) on $(hostname): $gpus GPU(s), head $ip, interface $ifname"
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
  python3 -c 'import ray, torch; print("ray", ray.__version__, "torch", torch.__version__, "cuda", torch.version.cuda)'
  run preflight "${common[@]}" --require-gpus --no-libs --no-cleanup
  run netcheck "${common[@]}" --force --no-cleanup --run-dir "$out/runs/netcheck"
  run up "${common[@]}" --force --no-cleanup --run-dir "$out/runs/up"
  run down --hostfile "$out/hostfile"
} 2>&1 | tee "$out/gpu-host-check.txt"

#!/usr/bin/env python3
"""A GPU smoke entry: ``glm45-launch up --entry gpu_smoke_entry.py`` on any real GPU host or rack.

A Ray driver standing in for train.py (its arguments are accepted and ignored). It places one
Ray actor on every GPU of the cluster (``num_gpus=1``), and each one:

* uses CUDA on the GPU Ray assigned it (``CUDA_VISIBLE_DEVICES``), runs a bf16 matrix product
  and says how fast it ran;
* joins one NCCL group of every GPU of the cluster (a TCPStore served by this driver, on the
  head) and checks an all-reduce's sum;
* reports the runtime env it sees (the recipe's ``NCCL_*`` variables as Ray set them there).

It writes ``gpu-smoke-report.json`` in its working directory (the launcher's ``--workdir``)
and exits 0 when every GPU passed. Standard library, Ray and PyTorch only.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import timedelta

REPORT = "gpu-smoke-report.json"
MATMUL_N = 8192
ALLREDUCE_ELEMENTS = 64 * 1024 * 1024  # fp32: 256 MiB per all-reduce
TIMEOUT_S = 300


def main() -> int:
    import ray
    import torch.distributed as dist

    ray.init(address="auto", log_to_driver=True)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < 1:
        print("gpu smoke entry: the cluster has no GPU", flush=True)
        return 1
    host = ray.util.get_node_ip_address()
    with socket.socket() as s:  # a free port on the head for the group's store
        s.bind((host, 0))
        port = s.getsockname()[1]
    store = dist.TCPStore(host, port, gpus + 1, is_master=True, timeout=timedelta(seconds=TIMEOUT_S),
                          wait_for_workers=False)
    keys = sorted((ray.get_runtime_context().runtime_env or {}).get("env_vars", {}))

    @ray.remote(num_gpus=1, num_cpus=0)
    class Gpu:
        def check(self, rank: int, world: int, master: str, port: int, keys: list[str]) -> dict:
            import torch
            import torch.distributed as dist

            out: dict = {"rank": rank, "node_ip": ray.util.get_node_ip_address(),
                         "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                         "env": {k: os.environ.get(k) for k in keys if k.startswith(("NCCL", "TORCH", "NVSHMEM",
                                                                                       "CUDA"))}}
            out["cuda"] = torch.cuda.is_available()
            dev = torch.device("cuda", 0)  # Ray's CUDA_VISIBLE_DEVICES: the one GPU it gave this actor
            out["gpu"] = torch.cuda.get_device_name(dev)
            a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=dev)
            b = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=dev)
            for _ in range(3):
                a @ b
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(10):
                a @ b
            torch.cuda.synchronize(dev)
            out["matmul_tflops"] = round(10 * 2 * MATMUL_N**3 / (time.perf_counter() - t0) / 1e12, 1)
            client = dist.TCPStore(master, port, world + 1, is_master=False, timeout=timedelta(seconds=TIMEOUT_S))
            dist.init_process_group("nccl", store=client, rank=rank, world_size=world,
                                    timeout=timedelta(seconds=TIMEOUT_S), device_id=dev)
            x = torch.full((ALLREDUCE_ELEMENTS,), float(rank + 1), device=dev)
            dist.all_reduce(x)  # warm-up, and the check
            torch.cuda.synchronize(dev)
            want = world * (world + 1) / 2
            out["allreduce_ok"] = bool(torch.all(x == want).item())
            t0 = time.perf_counter()
            for _ in range(5):
                dist.all_reduce(x)
            torch.cuda.synchronize(dev)
            seconds = (time.perf_counter() - t0) / 5
            algbw = x.numel() * x.element_size() / seconds / 1e9
            out["allreduce_busbw_gbps"] = round(algbw * 2 * (world - 1) / world, 1) if world > 1 else None
            dist.destroy_process_group()
            out["ok"] = out["cuda"] and out["allreduce_ok"]
            return out

    actors = [Gpu.remote() for _ in range(gpus)]
    try:
        results = ray.get([a.check.remote(i, gpus, host, port, keys) for i, a in enumerate(actors)],
                          timeout=TIMEOUT_S)
    finally:
        for a in actors:
            ray.kill(a)
        del store
    ok = len(results) == gpus and all(r["ok"] for r in results)
    report = {"argv": sys.argv[1:], "cwd": os.getcwd(), "gpus": gpus, "ok": ok,
              "ranks": sorted(results, key=lambda r: r["rank"])}
    with open(REPORT, "w") as fh:
        json.dump(report, fh, indent=2)
    for r in report["ranks"]:
        print(f"rank {r['rank']} on {r['node_ip']} GPU {r['cuda_visible_devices']} ({r['gpu']}): bf16 matmul "
              f"{r['matmul_tflops']} TFLOP/s, NCCL all-reduce {'ok' if r['allreduce_ok'] else 'WRONG'}"
              + (f", busbw {r['allreduce_busbw_gbps']} GB/s" if r["allreduce_busbw_gbps"] else ""), flush=True)
    print(f"gpu smoke entry: {gpus} GPU(s): " + ("OK" if ok else "FAILED"), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

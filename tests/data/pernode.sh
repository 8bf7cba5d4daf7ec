#!/bin/bash
# A small per-node launcher for glm45-launch's parity tests, modelled on the Air recipe's
# (tests/data/air-p2p-8node.sh): every node runs
#   bash pernode.sh NODE_RANK HEAD_IP
# The head starts Ray, polls until the cluster's GPUs joined, submits and writes a done file;
# a worker waits a little, joins, and stays until the done file is there. Inputs: BASE_DIR,
# RAY_PORT (the head's GCS port).
set -e

if [ $# -lt 2 ]; then
    echo "usage: $0 NODE_RANK HEAD_IP"
    exit 1
fi
: "${RAY_PORT:?RAY_PORT is not set}"
rank=$1
head=$2
want=${WANT_GPUS:-16}

pkill -9 ray || true
ray stop --force || true
gpus=$(nvidia-smi -L | wc -l)

if [ "$rank" -eq 0 ]; then
    ray start --head --node-ip-address "$head" --num-gpus "$gpus" --disable-usage-stats
    until [ "$(ray status | awk '/ GPU/ { split($1, a, "/"); print int(a[2]) }')" -ge "$want" ]; do
        sleep 2
    done
    ray job submit --address=http://127.0.0.1:8265 -- python3 train.py --actor-num-gpus-per-node "$gpus"
    echo 0 > "$BASE_DIR/job.done"
else
    sleep 5
    ray start --address="$head:$RAY_PORT" --num-gpus "$gpus" --disable-usage-stats
    while [ ! -f "$BASE_DIR/job.done" ]; do
        sleep 3
    done
fi

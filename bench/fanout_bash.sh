#!/usr/bin/env bash
# The bash way at its best (bench/fanout.py's baseline): one OpenSSH client per host, all in
# the background, then wait. curve25519 key exchange (what paramiko negotiates), no ssh config
# read, strict host keys from the same known_hosts as the launcher's.
#
#   fanout_bash.sh HOSTS_FILE CMD_DIR KNOWN_HOSTS IDENTITY LOG_DIR
# CMD_DIR/<host> holds the remote command for that host. Exits 1 if any host failed.
set -u
hosts_file=$1 cmd_dir=$2 known=$3 identity=$4 logs=$5
opts=(-F /dev/null -i "$identity" -o IdentitiesOnly=yes -o BatchMode=yes
      -o KexAlgorithms=curve25519-sha256 -o StrictHostKeyChecking=yes
      -o UserKnownHostsFile="$known" -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10)
n=0
while read -r host; do
    # shellcheck disable=SC2029  # the command is read here on purpose: it is the remote command
    ssh "${opts[@]}" "root@$host" "$(<"$cmd_dir/$host")" </dev/null >"$logs/$host.log" 2>&1 &
    n=$((n + 1))
done <"$hosts_file"
failed=0
for ((i = 0; i < n; i++)); do
    wait -n || failed=$((failed + 1))
done
echo "failed=$failed"
[ "$failed" -eq 0 ]

#!/bin/bash -p
# shellcheck source-path=SCRIPTDIR
# glm45-launch record: the first process of a recording (see glm45_launch/sandbox/record.py).
#
#   bash -p init.bash MODE GRACE_MS CHANNEL_FD TICK_FD CAT WC NPROC AS_KIB FSIZE_KIB CPU_S NOFILE \
#     [OUTDIR...] -- COMMAND...
#
# Sets the resource limits that every process of the recording inherits, moves the frames'
# pipe to fd 1000 and the tick pipe (never written: a timed read is the sleep of a place
# without a sleep program) to fd 1001, says it started (frame H), runs COMMAND (the script's
# bash) and sends its exit status (S).
#   MODE sandbox: this is PID 1 of the sandbox's PID namespace. Processes the script left
#     running get GRACE_MS, then are killed (L: how many). Then the regular files of each
#     OUTDIR (writable directories the caller wants back) are sent, each as a frame F "SIZE
#     JSON-PATH" followed by its bytes (CAT and WC are the programs that read them), and init
#     exits with the script's status; the namespace dies with it.
#   MODE unsafe: no namespace; the recorder deals with leftovers by process group.
# -p: no BASH_ENV (the hooks are for the script's bash, not for this one).

set -u
mode=$1 grace_ms=$2 chan=$3 tick=$4 cat=$5 wc=$6
limits=("-u" "$7" "-v" "$8" "-f" "$9" "-t" "${10}" "-n" "${11}")
shift 11
outdirs=()
while (( $# )) && [[ $1 != -- ]]; do outdirs+=("$1"); shift; done
shift

exec 1000>&"$chan" 1001<&"$tick"
(( chan == 1000 || chan == 1001 )) || exec {chan}>&-
(( tick == 1000 || tick == 1001 )) || exec {tick}<&-
# shellcheck source=record.bash
source "${BASH_SOURCE[0]%/*}/record.bash"

__glm45_frame H "$mode"
for (( i = 0; i < ${#limits[@]}; i += 2 )); do
  ulimit "${limits[i]}" "${limits[i + 1]}" 2>/dev/null \
    || __glm45_frame N "could not set the resource limit (ulimit ${limits[i]} ${limits[i + 1]})"
done

"$@" 1001<&-
status=$?
__glm45_frame S "$status"
[[ $mode == sandbox ]] || exit "$status"

# the live processes of the namespace but this one, in $count
others() {
  local p st
  count=0
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" ]] && continue
    { read -r st < "$p/stat"; } 2>/dev/null || continue
    st=${st##*) }
    [[ ${st:0:1} == [ZX] ]] || (( ++count ))
  done
}

others
end=$(( ${EPOCHREALTIME//[!0-9]/} + grace_ms * 1000 ))
while (( count )) && (( ${EPOCHREALTIME//[!0-9]/} < end )); do
  read -r -t 0.02 -u 1001 _
  others
done
if (( count )); then
  killed=$count
  kill -9 -1 2>/dev/null
  for (( i = 0; i < 200 && count; i++ )); do
    read -r -t 0.01 -u 1001 _
    others
  done
  __glm45_frame L "$killed"
fi

for dir in "${outdirs[@]}"; do
  for file in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [[ -f $file && ! -L $file ]] || continue
    size=$("$wc" -c < "$file") || continue
    __glm45_json "$file"
    __glm45_frame F "$size $__glm45_j"
    "$cat" -- "$file" >&1000
  done
done
exit "$status"

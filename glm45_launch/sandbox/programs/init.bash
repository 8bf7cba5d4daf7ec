#!/bin/bash -p
# shellcheck source-path=SCRIPTDIR
# glm45-launch record: the first process of a recording's sandbox, PID 1 of its PID namespace
# (see glm45_launch/sandbox/record.py).
#
#   bash -p init.bash GRACE_MS CHANNEL_FD TICK_FD NPROC AS_KIB FSIZE_KIB CPU_S NOFILE -- COMMAND...
#
# Sets the resource limits that every process of the recording inherits, moves the frames'
# pipe to fd 1000 and the tick pipe (never written: a timed read is the sleep of a place
# without a sleep program) to fd 1001, says it started (frame H), runs COMMAND (the script's
# bash) and sends its exit status (S). Processes the script left running get GRACE_MS, then
# are killed (L: how many); init exits with the script's status and the namespace dies with it.
# -p: no BASH_ENV (the profile is for the script's bash, not for this one).

set -u
grace_ms=$1 chan=$2 tick=$3
limits=("-u" "$4" "-v" "$5" "-f" "$6" "-t" "$7" "-n" "$8")
shift 9
exec 1000>&"$chan" 1001<&"$tick"
(( chan == 1000 || chan == 1001 )) || exec {chan}>&-
(( tick == 1000 || tick == 1001 )) || exec {tick}<&-
# shellcheck source=record.bash
source "${BASH_SOURCE[0]%/*}/record.bash"

__g45_frame H started
for (( i = 0; i < ${#limits[@]}; i += 2 )); do
  ulimit "${limits[i]}" "${limits[i + 1]}" 2>/dev/null \
    || __g45_frame N "could not set the resource limit (ulimit ${limits[i]} ${limits[i + 1]})"
done

"$@" 1001<&-
status=$?
__g45_frame S "$status"

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
  __g45_frame L "$count"
  kill -9 -1 2>/dev/null
fi
exit "$status"

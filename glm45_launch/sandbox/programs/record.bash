#!/bin/bash -p
# glm45-launch record: the argv recorder of a recording (see glm45_launch/sandbox/record.py).
#
# Run under a command's name, it records its argv and exits 0 without output:
#   - as a shim (ROOT/bin/NAME, a link to this file) it records NAME ARGS..., unless it is a
#     poll it answers: arithmetic on literals in `python3 -c`, and when the recording knows the
#     cluster (the file ROOT/cluster) ray status, a GPU-count probe, nvidia-smi -L;
#   - anywhere else it is a stand-in for a host command (/usr/bin/rm in the sandbox) that a
#     program ran without the hooks seeing it: it records its path and says so in a note.
# Sourced (by hooks.bash and init.bash) it only defines the frame writer.
#
# Frames go to fd 1000, a pipe to the recorder: "\036G45 KIND PID MORE PAYLOAD\n". One frame
# is at most 4000 bytes and one printf (one write(2), under PIPE_BUF), so the frames of
# parallel writers never interleave; a longer payload continues in the writer's next frames
# (MORE=C) and ends with MORE=E. PID is the sender's (a shim's: PID:PARENT). KIND: R argv (a
# JSON array), N note, P answered poll (JSON: kind, answer, argv...), W ended wait loop, C where the
# next record comes from, O a write outside the sandbox, H started, S exit status, L leftovers
# killed, F file.
# -p: no BASH_ENV, no functions from the environment (a shim never runs the sandbox hooks).

declare -A __glm45_ctl=()
for __glm45_jk in {1..31}; do
  printf -v __glm45_jh %02x "$__glm45_jk"
  printf -v "__glm45_ctl[$__glm45_jh]" '%b' "\\x$__glm45_jh"
done
unset __glm45_jk __glm45_jh

# The JSON array of "$@" in __glm45_j (bytes as they are; control characters escaped).
__glm45_json() {
  local LC_ALL=C __glm45_ja __glm45_jo='[' __glm45_js='' __glm45_jk
  for __glm45_ja in "$@"; do
    __glm45_ja=${__glm45_ja//\\/\\\\}
    __glm45_ja=${__glm45_ja//\"/\\\"}
    if [[ $__glm45_ja == *[$'\001'-$'\037']* ]]; then
      for __glm45_jk in "${!__glm45_ctl[@]}"; do
        __glm45_ja=${__glm45_ja//"${__glm45_ctl[$__glm45_jk]}"/\\u00$__glm45_jk}
      done
    fi
    __glm45_jo+=$__glm45_js\"$__glm45_ja\"
    __glm45_js=,
  done
  __glm45_j=$__glm45_jo]
}

# __glm45_frame KIND PAYLOAD: send PAYLOAD (no newline in it) in frames.
__glm45_frame() {
  local LC_ALL=C __glm45_fp=$2
  while (( ${#__glm45_fp} > 3900 )); do
    builtin printf '\036G45 %s %s C %s\n' "$1" "${__glm45_fpid:-$BASHPID}" "${__glm45_fp:0:3900}" >&1000
    __glm45_fp=${__glm45_fp:3900}
  done
  builtin printf '\036G45 %s %s E %s\n' "$1" "${__glm45_fpid:-$BASHPID}" "$__glm45_fp" >&1000
} 2>/dev/null

# __glm45_mark ROOT: tell a wait loop's sleep that something was recorded since the last one.
__glm45_mark() {
  builtin printf '%s\n' "${__glm45_j:0:300}" >> "$1/state/window"
} 2>/dev/null

# __glm45_arith CODE: what `python3 -c CODE` prints when CODE only prints arithmetic on number
# literals (print(int(1.0 * 1024 ** 0)) is not: no **), in __glm45_out; 1: not such code.
__glm45_arith() {
  local __glm45_i=0 __glm45_re_int='^[[:space:]]*print\([[:space:]]*int\(([0-9.+*/() -]+)\)[[:space:]]*\)[[:space:];]*$'
  local __glm45_re_num='^[[:space:]]*print\(([0-9+*() -]+)\)[[:space:];]*$'
  if [[ $1 =~ $__glm45_re_int && ${BASH_REMATCH[1]} != *'**'* && ${BASH_REMATCH[1]} != *//* ]]; then
    # Python's int() truncates toward zero, as awk's does; %.0f is exact up to 2^53
    __glm45_out=$("$__glm45_root/guarded/awk" "BEGIN { printf \"%.0f\\n\", int(${BASH_REMATCH[1]}) }" 2>/dev/null) \
      && [[ $__glm45_out =~ ^-?[0-9]+$ ]] && __glm45_out+=$'\n'
  elif [[ $1 =~ $__glm45_re_num && ${BASH_REMATCH[1]} != *'**'* ]]; then
    __glm45_out=$( { (( __glm45_i = BASH_REMATCH[1], 1 )) && builtin printf '%d' "$__glm45_i"; } 2>/dev/null )
    [[ $__glm45_out =~ ^-?[0-9]+$ ]] && __glm45_out+=$'\n'
  else
    return 1
  fi
}

# The poll answers: print what a command would (the planned cluster when ROOT/cluster is there:
# TOTAL_GPUS GPUS_PER_NODE NODES; arithmetic in `python3 -c`), send P (kind, answer, argv...),
# return 0; 1: not a poll this recording answers.
__glm45_answer() {
  local __glm45_root=$1 __glm45_total=0 __glm45_per=0 __glm45_nodes=0 __glm45_out='' __glm45_i __glm45_kind=cluster
  shift
  if [[ -r $__glm45_root/cluster ]]; then
    read -r __glm45_total __glm45_per __glm45_nodes < "$__glm45_root/cluster"
  fi
  case $1:${2-}:${3-} in
    ray:status:*)
      (( __glm45_nodes )) || return 1
      __glm45_out=$'======== Autoscaler status ========\nNode status\n'
      __glm45_out+=$'---------------------------------------------------------------\nActive:\n'
      for (( __glm45_i = 1; __glm45_i <= __glm45_nodes; __glm45_i++ )); do
        __glm45_out+=" 1 node_$__glm45_i"$'\n'
      done
      __glm45_out+=$'Pending:\n (no pending nodes)\nRecent failures:\n (no failures)\n\nResources\n'
      __glm45_out+=$'---------------------------------------------------------------\nUsage:\n'
      __glm45_out+=" 0.0/$__glm45_total.0 GPU"$'\n\nDemands:\n (no resource demands)\n' ;;
    python:-c:*|python3:-c:*)
      if (( $# == 3 )) && __glm45_arith "$3"; then
        __glm45_kind=computed
      elif (( __glm45_nodes )) && [[ $3 == *GPU* && ( $3 == *cluster_resources* || $3 == *available_resources* ) ]]; then
        if [[ $3 == *int\(* ]]; then __glm45_out=$__glm45_total$'\n'; else __glm45_out=$__glm45_total$'.0\n'; fi
      else
        return 1
      fi ;;
    nvidia-smi:-L:*|nvidia-smi:--list-gpus:*)
      (( __glm45_per )) || return 1
      for (( __glm45_i = 0; __glm45_i < __glm45_per; __glm45_i++ )); do
        __glm45_out+="GPU $__glm45_i: NVIDIA GPU (UUID: GPU-00000000-0000-0000-0000-00000000000$__glm45_i)"$'\n'
      done ;;
    nvidia-smi:--query-gpu=count:*|nvidia-smi:--query-gpu=index:*)
      (( __glm45_per )) || return 1
      for (( __glm45_i = 0; __glm45_i < __glm45_per; __glm45_i++ )); do
        if [[ $2 == *count ]]; then __glm45_out+=$__glm45_per$'\n'; else __glm45_out+=$__glm45_i$'\n'; fi
      done ;;
    *) return 1 ;;
  esac
  builtin printf '%s' "$__glm45_out"
  __glm45_json "$__glm45_kind" "${__glm45_out%$'\n'}" "$@"
  __glm45_frame P "$__glm45_j"
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  __glm45_fpid=$BASHPID:$PPID  # the shell that ran the shim sent its origin (C) first
  if [[ ${0%/*} == */bin && -f ${0%/*}/../hooks.bash ]]; then
    __glm45_answer "${0%/*}/.." "${0##*/}" "$@" && exit 0
    __glm45_json "${0##*/}" "$@"
    __glm45_frame R "$__glm45_j"
    [[ ${0##*/} == sleep ]] || __glm45_mark "${0%/*}/.."
  else
    __glm45_frame N "recorded $0, run by a program rather than by the script's shell (a stand-in for the host command; not run)"
    __glm45_json "$0" "$@"
    __glm45_frame R "$__glm45_j"
  fi
  exit 0
fi

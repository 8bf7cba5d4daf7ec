#!/bin/bash -p
# glm45-launch record: the recording shim (see glm45_launch/sandbox/record.py).
#
# Every command of a recording but the text tools the sandbox lends runs this file: a name on
# the script's PATH (ROOT/bin/NAME, a link to it: ray, ssh, pkill...) or a program of the
# system directories (/usr/bin/rm, /bin/sh, links to it), whoever runs it. It records its argv
# and exits 0 without output, unless it is a poll it answers (ROOT/bin only): arithmetic on
# literals in `python3 -c` and, when the recording knows the cluster (ROOT/cluster), ray status,
# a GPU-count probe, nvidia-smi -L. Sourced (by profile.bash and init.bash) it only defines the
# frame writer.
#
# Frames go to fd 1000, a pipe to the recorder: "\036G45 KIND PID MORE PAYLOAD\n". One frame
# is at most 4000 bytes and one printf (one write(2), under PIPE_BUF), so the frames of
# parallel writers never interleave; a longer payload continues in the writer's next frames
# (MORE=C) and ends with MORE=E. KIND: R a record (JSON [argv, origin, environment]), P an
# answered poll ([kind, answer, argv, origin]), W an ended wait loop ([count, sleep, test]),
# O a write skipped ([path]), N note, H started, S exit status, L leftovers killed. The origin
# ([file, line, subshell, VAR=value...], or null) is what the profile's DEBUG trap exported in
# __G45_AT (file, line, subshell, the name as written, the VAR names; "end": the sleep that
# ends a wait loop, not recorded); the environment comes only with the argv ROOT/capture lists.
# -p: no BASH_ENV, no functions from the environment (a shim never runs the profile).

declare -A __g45_ctl=()
for __g45_k in {1..31}; do
  printf -v __g45_h %02x "$__g45_k"
  printf -v "__g45_ctl[$__g45_h]" '%b' "\\x$__g45_h"
done
unset __g45_k __g45_h

# The JSON array of "$@" in __g45_j (bytes as they are; control characters escaped).
__g45_json() {
  local LC_ALL=C __g45_ja __g45_jo='[' __g45_js='' __g45_jk
  for __g45_ja in "$@"; do
    __g45_ja=${__g45_ja//\\/\\\\}
    __g45_ja=${__g45_ja//\"/\\\"}
    if [[ $__g45_ja == *[$'\001'-$'\037']* ]]; then
      for __g45_jk in "${!__g45_ctl[@]}"; do
        __g45_ja=${__g45_ja//"${__g45_ctl[$__g45_jk]}"/\\u00$__g45_jk}
      done
    fi
    __g45_jo+=$__g45_js\"$__g45_ja\"
    __g45_js=,
  done
  __g45_j=$__g45_jo]
}

# __g45_frame KIND PAYLOAD: send PAYLOAD (no newline in it) in frames.
__g45_frame() {
  local LC_ALL=C __g45_fp=$2
  while (( ${#__g45_fp} > 3900 )); do
    builtin printf '\036G45 %s %s C %s\n' "$1" "$BASHPID" "${__g45_fp:0:3900}" >&1000
    __g45_fp=${__g45_fp:3900}
  done
  builtin printf '\036G45 %s %s E %s\n' "$1" "$BASHPID" "$__g45_fp" >&1000
} 2>/dev/null

__g45_note() {
  local __g45_t=$*
  __g45_frame N "${__g45_t//[$'\n\036']/ }"
}

# The origin of the command being recorded, as JSON in __g45_o (null: unknown).
__g45_origin() {
  local IFS=$'\037' __g45_f __g45_k __g45_e=()
  read -r -a __g45_f <<< "${__G45_AT-}"
  __g45_o=null
  (( ${#__g45_f[@]} >= 3 )) || return 0
  IFS=' '
  for __g45_k in ${__g45_f[4]-}; do
    [[ $__g45_k =~ ^[[:alpha:]_][[:alnum:]_]*$ ]] && __g45_e+=("$__g45_k=${!__g45_k-}")
  done
  __g45_json "${__g45_f[@]:0:3}" "${__g45_e[@]}"
  __g45_o=$__g45_j
}

# __g45_record ARGV...: send the record R of ARGV (the environment too, when ROOT/capture asks).
__g45_record() {
  local __g45_a __g45_env='' __g45_line __g45_k __g45_kv=()
  __g45_json "$@"
  __g45_a=$__g45_j
  __g45_origin
  if [[ -n ${__g45_root-} && -r $__g45_root/capture ]]; then
    while IFS= read -r __g45_line; do
      [[ " $* " == " $__g45_line "* ]] || continue
      for __g45_k in $(compgen -e); do
        [[ $__g45_k == __G45_* ]] || __g45_kv+=("$__g45_k=${!__g45_k-}")
      done
      __g45_json "${__g45_kv[@]}"
      __g45_env=,$__g45_j
      break
    done < "$__g45_root/capture"
  fi
  __g45_frame R "[$__g45_a,$__g45_o$__g45_env]"
  [[ $1 == sleep || -z ${__g45_root-} ]] || builtin printf '%s\n' "${__g45_a:0:300}" >> "$__g45_root/state/window"
} 2>/dev/null

# __g45_arith CODE: what `python3 -c CODE` prints when CODE only prints arithmetic on number
# literals (print(int(1.0 * 1024 ** 0)) is not: no **), in __g45_out; 1: not such code.
__g45_arith() {
  local __g45_i=0 __g45_re_int='^[[:space:]]*print\([[:space:]]*int\(([0-9.+*/() -]+)\)[[:space:]]*\)[[:space:];]*$'
  local __g45_re_num='^[[:space:]]*print\(([0-9+*() -]+)\)[[:space:];]*$'
  if [[ $1 =~ $__g45_re_int && ${BASH_REMATCH[1]} != *'**'* && ${BASH_REMATCH[1]} != *//* ]]; then
    # Python's int() truncates toward zero, as awk's does; %.0f is exact up to 2^53
    __g45_out=$("$__g45_root/safe/awk" "BEGIN { printf \"%.0f\\n\", int(${BASH_REMATCH[1]}) }" 2>/dev/null) \
      && [[ $__g45_out =~ ^-?[0-9]+$ ]] && __g45_out+=$'\n'
  elif [[ $1 =~ $__g45_re_num && ${BASH_REMATCH[1]} != *'**'* ]]; then
    __g45_out=$( { (( __g45_i = BASH_REMATCH[1], 1 )) && builtin printf '%d' "$__g45_i"; } 2>/dev/null )
    [[ $__g45_out =~ ^-?[0-9]+$ ]] && __g45_out+=$'\n'
  else
    return 1
  fi
}

# The poll answers: print what a command would (the planned cluster when ROOT/cluster is there:
# TOTAL_GPUS GPUS_PER_NODE NODES; arithmetic in `python3 -c`), send P, return 0; 1: not a poll
# this recording answers.
__g45_answer() {
  local __g45_total=0 __g45_per=0 __g45_nodes=0 __g45_out='' __g45_i __g45_kind=cluster
  if [[ -r $__g45_root/cluster ]]; then
    read -r __g45_total __g45_per __g45_nodes < "$__g45_root/cluster"
  fi
  case $1:${2-}:${3-} in
    ray:status:*)
      (( __g45_nodes )) || return 1
      __g45_out=$'======== Autoscaler status ========\nNode status\n'
      __g45_out+=$'---------------------------------------------------------------\nActive:\n'
      for (( __g45_i = 1; __g45_i <= __g45_nodes; __g45_i++ )); do
        __g45_out+=" 1 node_$__g45_i"$'\n'
      done
      __g45_out+=$'Pending:\n (no pending nodes)\nRecent failures:\n (no failures)\n\nResources\n'
      __g45_out+=$'---------------------------------------------------------------\nUsage:\n'
      __g45_out+=" 0.0/$__g45_total.0 GPU"$'\n\nDemands:\n (no resource demands)\n' ;;
    python:-c:*|python3:-c:*)
      if (( $# == 3 )) && __g45_arith "$3"; then
        __g45_kind=computed
      elif (( __g45_nodes )) && [[ $3 == *GPU* && ( $3 == *cluster_resources* || $3 == *available_resources* ) ]]; then
        if [[ $3 == *int\(* ]]; then __g45_out=$__g45_total$'\n'; else __g45_out=$__g45_total$'.0\n'; fi
      else
        return 1
      fi ;;
    nvidia-smi:-L:*|nvidia-smi:--list-gpus:*)
      (( __g45_per )) || return 1
      for (( __g45_i = 0; __g45_i < __g45_per; __g45_i++ )); do
        __g45_out+="GPU $__g45_i: NVIDIA GPU (UUID: GPU-00000000-0000-0000-0000-00000000000$__g45_i)"$'\n'
      done ;;
    nvidia-smi:--query-gpu=count:*|nvidia-smi:--query-gpu=index:*)
      (( __g45_per )) || return 1
      for (( __g45_i = 0; __g45_i < __g45_per; __g45_i++ )); do
        if [[ $2 == *count ]]; then __g45_out+=$__g45_per$'\n'; else __g45_out+=$__g45_i$'\n'; fi
      done ;;
    *) return 1 ;;
  esac
  builtin printf '%s' "$__g45_out"
  local __g45_a
  __g45_json "$@"
  __g45_a=$__g45_j
  __g45_origin
  __g45_json "$__g45_kind" "${__g45_out%$'\n'}"
  __g45_frame P "${__g45_j%]},$__g45_a,$__g45_o]"
  return 0
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  IFS=$'\037' read -r -a __g45_f <<< "${__G45_AT-}"
  [[ ${__g45_f[5]-} == end ]] && exit 0  # the sleep that ends a wait loop (W says so)
  if [[ ${0%/*} == */bin && -f ${0%/*}/../profile.bash ]]; then  # a shim
    __g45_root=${0%/bin/*}
    __g45_answer "${0##*/}" "$@" || __g45_record "${0##*/}" "$@"
  else  # a stand-in for a program of the system: found by PATH (as the origin names it) or by path
    if [[ ${__g45_f[3]-} == "${0##*/}" ]]; then
      __g45_note "recorded ${0##*/} (PATH finds it at $0, outside the sandbox's PATH; not run)"
      __g45_record "${0##*/}" "$@"
    else
      __g45_note "recorded $0 (called by path; not run)"
      __g45_record "$0" "$@"
    fi
  fi
  exit 0
fi

# shellcheck shell=bash source-path=SCRIPTDIR
# glm45-launch record: the profile every bash of a recording reads first, through BASH_ENV (see
# glm45_launch/sandbox/record.py). Bubblewrap holds the script and the shims record its
# commands, whoever runs them; this profile records what no shim can see:
#   - a command name the sandbox's PATH lacks (command_not_found_handle), and kill (a builtin);
#   - in a DEBUG trap, before each simple command: where it comes from (file, line, subshell,
#     its VAR=value words), exported in __G45_AT for the shim that records it; a command whose
#     output redirection the shell cannot open is skipped instead of failing (under set -e that
#     would end the script), and recorded if it is a recorded command (ray start > /x/ray.log);
#     a loop that sleeps the same way again and again while nothing new is recorded waits for
#     what a recording never brings (a done file, a process to exit): its third such sleep
#     ends it (break).
# Every helper avoids `local` names a script could use and tolerates `set -eu`.

__g45_root=${BASH_SOURCE[0]%/*}
# shellcheck source=record.bash
source "$__g45_root/record.bash"
__g45_q="'"
# One piece of a shell word as bash prints a command: plain characters, an escape, quotes,
# $((...)), $(...) and ${...} (one level nested), `...`, <(...) and >(...).
# shellcheck disable=SC1003,SC2016  # a regular expression: its backslashes and $ are its own
__g45_piece='[^[:space:]\\'$__g45_q'"`$<>;&|(){}]|\\.|'$__g45_q'[^'$__g45_q']*'$__g45_q'|"([^"\\]|\\.)*"'
# shellcheck disable=SC2016  # (the same)
__g45_piece+='|\$\(\([^()]*\)\)|\$\(([^()]|\([^()]*\))*\)|\$\{([^{}]|\{[^{}]*\})*\}|`[^`]*`|[<>]\(([^()]|\([^()]*\))*\)|[$}{]'
__g45_word_re="^[[:blank:]]*(($__g45_piece)+)"
__g45_redir_re="^[[:blank:]]*([0-9]*|\{[[:alnum:]_]+\})(<<<|<<-?|<>|<&|<|>>|>\||>&|>|&>>|&>)[[:blank:]]*(($__g45_piece)+)"
__g45_assign_re='^[[:alpha:]_][[:alnum:]_]*\+?='
readonly __g45_root __g45_word_re __g45_redir_re __g45_assign_re
unset __g45_q __g45_piece
__g45_then='' __g45_e=() __g45_wkey='' __g45_wwin='' __g45_wn=0 __g45_wsame=0 __g45_prev=''

command_not_found_handle() {
  { local -; set +x; } 2>/dev/null
  __g45_note "recorded unknown command $1 (not on the sandbox PATH; not run)"
  __g45_record "$@"
}

# kill: recorded, except the forms that send nothing (-0 probes a pid, -l lists signals)
kill() {
  { local -; set +x; } 2>/dev/null
  case ${1-}:${2-} in
    -0:*|-s:0|-n:0|-l:*|-L:*|--list:*|-s0:*|-n0:*) builtin kill "$@"; return ;;
  esac
  __g45_note "recorded kill (a shell builtin; not run)"
  __g45_record kill "$@"
}

# __g45_split TEXT: the words of a simple command as bash prints it (BASH_COMMAND), as written,
# in __g45_w; its redirections' operators and targets in __g45_r (they follow the words; an
# unquoted newline ends the line, a here-document's body follows).
__g45_split() {
  local __g45_t=$1
  __g45_w=() __g45_r=()
  while :; do
    if [[ $__g45_t =~ $__g45_redir_re ]]; then
      __g45_r+=("${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}")
    elif (( ! ${#__g45_r[@]} )) && [[ $__g45_t =~ $__g45_word_re ]]; then
      __g45_w+=("${BASH_REMATCH[1]}")
    else
      return 0
    fi
    __g45_t=${__g45_t:${#BASH_REMATCH[0]}}
  done
}

# __g45_expand WORD ARGS...: WORD expanded as bash would (with ARGS as $1...) into __g45_e,
# unless that would run something or change a variable: $(...), `...`, <(...), $((...)),
# $[...], ${x:=y}, ${x@P}.
__g45_expand() {
  [[ $1 != *[\`\<\>]* && $1 != *[$][[\(]* && $1 != *@P* && ! $1 =~ [$][{][^}]*= ]] || return 1
  eval "shift; __g45_xp $1" 2>/dev/null
}
__g45_xp() { __g45_e=("$@"); }

# __g45_argv N WORD... ARGS...: the N words expanded into __g45_a; 1 if one could not be.
__g45_argv() {
  local __g45_ws=("${@:2:$1}") __g45_x
  shift "$(( $1 + 1 ))"
  __g45_a=()
  for __g45_x in "${__g45_ws[@]}"; do
    __g45_expand "$__g45_x" "$@" || return 1
    __g45_a+=("${__g45_e[@]}")
  done
}

# The DEBUG trap (ARGS: the command's positional parameters). 0: run the command; 1: skip it,
# or, with __g45_then=break, run it and end the loop.
__g45_at() {
  local __g45_i=0 __g45_name __g45_names='' __g45_op __g45_to __g45_dir __g45_bad='' __g45_win=''
  __g45_then=''
  case ${FUNCNAME[1]-} in __g45_*|command_not_found_handle|kill) return 0 ;; esac
  __g45_split "$BASH_COMMAND"
  while [[ ${__g45_w[__g45_i]-} =~ $__g45_assign_re ]]; do
    __g45_names+=" ${__g45_w[__g45_i]%%[+=]*}"
    (( ++__g45_i ))
  done
  __g45_name=${__g45_w[__g45_i]-}
  export __G45_AT="${BASH_SOURCE[1]-}"$'\037'"${BASH_LINENO[0]-0}"$'\037'"$BASH_SUBSHELL"$'\037'"$__g45_name"$'\037'"$__g45_names"
  if [[ $__g45_name == for ]]; then
    __g45_wkey='' __g45_wn=0  # a for loop's sleeps end with it
  elif [[ $__g45_name == sleep && -x $__g45_root/bin/sleep ]]; then
    IFS= read -r -d '' __g45_win < "$__g45_root/state/window"
    : > "$__g45_root/state/window"
    if [[ "${BASH_SOURCE[1]-}:${BASH_LINENO[0]-} $BASH_COMMAND" != "$__g45_wkey" ]]; then
      __g45_wkey="${BASH_SOURCE[1]-}:${BASH_LINENO[0]-} $BASH_COMMAND" __g45_wsame=0 __g45_wn=0
    fi
    (( ++__g45_wsame ))
    if [[ $__g45_win == "$__g45_wwin" ]] && (( __g45_wn )); then (( ++__g45_wn )); else __g45_wn=1; fi
    __g45_wwin=$__g45_win
    if (( __g45_wn >= 3 )) && __g45_argv "$(( ${#__g45_w[@]} - __g45_i ))" "${__g45_w[@]:__g45_i}" "$@"; then
      local __g45_sleep=("${__g45_a[@]}")
      __g45_split "$__g45_prev"
      __g45_argv "${#__g45_w[@]}" "${__g45_w[@]}" "$@" || __g45_a=("${__g45_w[@]}")
      __g45_json "${__g45_sleep[@]}"
      __g45_to=$__g45_j
      __g45_json "${__g45_a[@]}"
      __g45_frame W "[$(( __g45_wsame - 1 )),$__g45_to,$__g45_j]"
      __g45_note "ended a wait loop after $__g45_wsame x \`${__g45_sleep[*]}\` with nothing new recorded" \
        "(it waits for what a recording never brings; its test: \`${__g45_a[*]:0:20}\`)"
      __g45_wkey='' __g45_wn=0 __g45_then=break
      __G45_AT+=$'\037end'  # break ends the loop once this sleep is over: its shim records nothing
      return 1
    fi
  else
    __g45_prev=$BASH_COMMAND
  fi
  while (( ${#__g45_r[@]} )); do  # each output redirection goes where the shell can write
    __g45_op=${__g45_r[0]} __g45_to=${__g45_r[1]}
    __g45_r=("${__g45_r[@]:2}")
    [[ $__g45_op == *'>'* && ! ( $__g45_op == '>&' && $__g45_to =~ ^[0-9]*-?$ ) ]] || continue
    if ! __g45_expand "$__g45_to" "$@" || (( ${#__g45_e[@]} != 1 )); then continue; fi
    __g45_to=${__g45_e[0]}
    [[ $__g45_to == */* ]] && __g45_dir=${__g45_to%/*} || __g45_dir=.
    if [[ -e $__g45_to ]]; then [[ -w $__g45_to ]]; else [[ -d ${__g45_dir:-/} && -w ${__g45_dir:-/} ]]; fi \
      || { __g45_bad=$__g45_to; break; }
  done
  [[ -n $__g45_bad ]] || return 0
  __g45_json "$__g45_bad"
  __g45_frame O "$__g45_j"
  if [[ -x $__g45_root/bin/$__g45_name ]] && __g45_argv "$(( ${#__g45_w[@]} - __g45_i ))" "${__g45_w[@]:__g45_i}" "$@"; then
    for __g45_op in "${__g45_w[@]:0:__g45_i}"; do  # its VAR=value words, for its origin
      __g45_expand "${__g45_op#*=}" "$@" && local "${__g45_op%%[+=]*}=${__g45_e[*]}"
    done
    __g45_note "recorded $__g45_name without writing $__g45_bad (outside the sandbox)"
    __g45_record "${__g45_a[@]}"
  else
    __g45_note "skipped \`${BASH_COMMAND:0:120}\`: it writes $__g45_bad (outside the sandbox)"
  fi
  return 1
}

readonly -f command_not_found_handle kill __g45_split __g45_expand __g45_xp __g45_argv __g45_at __g45_json \
  __g45_frame __g45_note __g45_origin __g45_record __g45_arith __g45_answer
set -T  # (extdebug, which lets the trap skip a command, is set in it: at start-up it loads bashdb)
builtin trap '{ shopt -s extdebug; __g45_at "$@" || { eval "$__g45_then"; ! :; }; } 2>/dev/null' DEBUG

# shellcheck shell=bash source-path=SCRIPTDIR
# glm45-launch record: the sandbox hooks, read by every bash of a recording through BASH_ENV
# (see glm45_launch/sandbox/record.py). They decide what the script's commands do:
#   - command_not_found_handle records every command name the sandbox PATH lacks (rm, mkdir,
#     curl, pgrep...) instead of running it; kill is a recording function;
#   - the text tools that can also write files or run commands (env CMD, sed -i, sort -o and
#     --compress-program, uniq IN OUT, date -s, hostname NAME, awk with system/pipes/print >)
#     are functions that record those uses; egrep, fgrep and which are functions too;
#   - a DEBUG trap (extdebug, inherited by functions, subshells and command substitutions)
#     looks at every simple command before it runs: it records and skips one named by path
#     (/usr/bin/pkill, ./x.sh) or that PATH finds outside the sandbox, command -p, command
#     kill / builtin kill, exec of anything but a shim, a command name computed by a command
#     substitution; it skips /dev/tcp redirections, attempts to drop the trap, and output
#     redirections outside the writable directories; and it ends a wait loop that sleeps the
#     same way again and again while nothing new is recorded (break, noted).
# Nothing is exported: the script's environment stays what it was given. Every helper avoids
# `local` names a script could use and tolerates `set -eu`.
#
# Configuration (written by record.py beside this file): settings (NUL-separated key, value:
# tree = the default working directory, caller = a caller's BASH_ENV to source first, sed =
# sed's sandbox option), lists/{ok,scripts,builtins,writable,unguard} (NUL-separated words).

__glm45_root=${BASH_SOURCE[0]%/*}
__glm45_tree='' __glm45_caller='' __glm45_sed_opts=()
while IFS= read -r -d '' __glm45_k && IFS= read -r -d '' __glm45_v; do
  case $__glm45_k in
    tree) __glm45_tree=$__glm45_v ;;
    caller) __glm45_caller=$__glm45_v ;;
    sed) __glm45_sed_opts=("$__glm45_v") ;;
  esac
done < "$__glm45_root/settings"
unset __glm45_k __glm45_v
mapfile -d '' -t __glm45_writable < "$__glm45_root/lists/writable"
mapfile -d '' -t __glm45_unguard < "$__glm45_root/lists/unguard"
declare -A __glm45_ok=() __glm45_scripts=() __glm45_builtin=()
mapfile -d '' -t __glm45_e < "$__glm45_root/lists/ok"
for __glm45_w in "${__glm45_e[@]}"; do __glm45_ok[$__glm45_w]=1; done
mapfile -d '' -t __glm45_e < "$__glm45_root/lists/scripts"
for __glm45_w in "${__glm45_e[@]}"; do __glm45_scripts[$__glm45_w]=1; done
mapfile -d '' -t __glm45_e < "$__glm45_root/lists/builtins"
for __glm45_w in "${__glm45_e[@]}"; do __glm45_builtin[$__glm45_w]=1; done
if [[ -n $__glm45_caller ]]; then
  # shellcheck source=/dev/null  # the caller's own hooks (parity's env capture, a test's)
  source "$__glm45_caller"
fi
# shellcheck source=record.bash
source "$__glm45_root/record.bash"
__glm45_hooks=$BASH_ENV
__glm45_guarded=$__glm45_root/guarded
__glm45_shims=$__glm45_root/bin
__glm45_window=$__glm45_root/state/window
__glm45_fast='^[[:space:]]*([[:alnum:]_][[:alnum:]_.+:@%,-]*)([[:space:]]|$)'
__glm45_assign='^[[:alpha:]_][[:alnum:]_]*(\[.*\])?\+?='
readonly __glm45_root __glm45_tree __glm45_caller __glm45_hooks __glm45_guarded __glm45_shims __glm45_window \
  __glm45_writable __glm45_sed_opts __glm45_ok __glm45_scripts __glm45_builtin __glm45_fast __glm45_assign
__glm45_s='' __glm45_i=0 __glm45_n=0 __glm45_w='' __glm45_ws=0 __glm45_f='' __glm45_st='' __glm45_c=''
__glm45_r='' __glm45_eval='' __glm45_mode='' __glm45_p='' __glm45_cmd=0 __glm45_e=() __glm45_argv=()
__glm45_from=0 __glm45_why='' __glm45_cw='' __glm45_bad='' __glm45_j='' __glm45_pre=()
__glm45_line=0 __glm45_src=''  # where the command being checked is
# the wait-loop watch: the last sleep (where and how), how often in a row, what was recorded
__glm45_wkey='' __glm45_wwin='' __glm45_wn=0 __glm45_wsame=0 __glm45_prev=''

__glm45_note() {
  local __glm45_t=$*
  __glm45_t=${__glm45_t//$'\n'/ }
  __glm45_frame N "${__glm45_t//$'\036'/ }"
}

# __glm45_origin NAME: tell the recorder where the next record of NAME comes from (C: source,
# line, subshell depth, NAME, the command's own VAR=value words).
__glm45_origin() {
  __glm45_json "$__glm45_src" "$__glm45_line" "$BASH_SUBSHELL" "$1" "${__glm45_pre[@]}"
  __glm45_frame C "$__glm45_j"
}

# __glm45_record WHY ARGV...: record ARGV (as a shim would) and note WHY.
__glm45_record() {
  __glm45_note "$1"
  shift
  __glm45_origin "$1"
  __glm45_json "$@"
  __glm45_frame R "$__glm45_j"
  __glm45_mark "$__glm45_root"
  return 0
}

command_not_found_handle() {
  { local -; set +x; } 2>/dev/null
  __glm45_record "recorded unknown command $1 (not on the sandbox PATH; not run)" "$@"
}

# kill: recorded, except the forms that send nothing (-0 probes a pid, -l lists signals)
kill() {
  { local -; set +x; } 2>/dev/null
  case ${1-}:${2-} in
    -0:*|-s:0|-n:0|-l:*|-L:*|--list:*|-s0:*|-n0:*) builtin kill "$@"; return ;;
  esac
  __glm45_record "recorded kill (a shell builtin; not run)" kill "$@"
}

# A trap handler runs in a subshell: in the handler itself BASH_COMMAND would not name the
# command about to run (bash keeps the trapped one), so the DEBUG trap could not check it.
# shellcheck disable=SC2064  # the script's own handler, passed on as given
trap() {
  { local -; set +x; } 2>/dev/null
  case ${1-} in
    ''|-p|-l|-lp|-pl) builtin trap "$@"; return ;;
    --) shift ;;
  esac
  if (( $# < 2 )) || [[ -z $1 || $1 == - ]]; then builtin trap -- "$@"; return; fi
  local __glm45_h=$1
  shift
  builtin trap -- "( $__glm45_h
)" "$@"
}

# NAME (no function, no builtin) is found by PATH nowhere or in the sandbox only.
__glm45_path_ok() {
  __glm45_p=
  hash -- "$1" 2>/dev/null || return 0
  __glm45_p=${BASH_CMDS[$1]-}
  [[ -z $__glm45_p || -n ${__glm45_ok[$__glm45_p]-} ]]
}

env() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a __glm45_c1='' __glm45_skip=0 __glm45_safe=1
  for __glm45_a in "$@"; do
    if (( __glm45_skip )); then __glm45_skip=0; continue; fi
    case $__glm45_a in
      -u|--unset) __glm45_skip=1 ;;
      -0|--null|-u?*|--unset=*) ;;
      -*|PATH=*|BASH_ENV=*) __glm45_safe=0 ;;
      *=*) ;;
      *) __glm45_c1=$__glm45_a; break ;;
    esac
  done
  if (( __glm45_safe )); then
    if [[ -z $__glm45_c1 ]]; then "$__glm45_guarded/env" "$@"; return; fi
    if [[ $__glm45_c1 != */* && -z ${__glm45_builtin[$__glm45_c1]-} ]] && __glm45_path_ok "$__glm45_c1" \
      && [[ -n $__glm45_p ]]; then
      "$__glm45_guarded/env" "$@"
      return
    fi
  fi
  __glm45_record "recorded env running ${__glm45_c1:-a command} (not run)" env "$@"
}

sed() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a
  for __glm45_a in "$@"; do
    case $__glm45_a in
      --in-place*|-i*|-[!-]*i*) __glm45_record "recorded sed -i (edits files; not run)" sed "$@"; return 0 ;;
    esac
  done
  "$__glm45_guarded/sed" "${__glm45_sed_opts[@]}" "$@"
}

sort() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a
  for __glm45_a in "$@"; do
    case $__glm45_a in
      --output*|-o*|-[!-]*o*) __glm45_record "recorded sort -o (writes a file; not run)" sort "$@"; return 0 ;;
      --compress-prog*) __glm45_record "recorded sort --compress-program (runs a program; not run)" sort "$@"; return 0 ;;
    esac
  done
  "$__glm45_guarded/sort" "$@"
}

uniq() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a __glm45_files=0 __glm45_skip=0
  for __glm45_a in "$@"; do
    if (( __glm45_skip )); then __glm45_skip=0; continue; fi
    case $__glm45_a in
      -f|-s|-w) __glm45_skip=1 ;;
      -?*) ;;
      *) (( ++__glm45_files )) ;;
    esac
  done
  if (( __glm45_files > 1 )); then
    __glm45_record "recorded uniq INPUT OUTPUT (writes a file; not run)" uniq "$@"
    return 0
  fi
  "$__glm45_guarded/uniq" "$@"
}

date() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a
  for __glm45_a in "$@"; do
    case $__glm45_a in
      --set*|-s*|-[uR]s*|-[uR][uR]s*) __glm45_record "recorded date -s (sets the clock; not run)" date "$@"; return 0 ;;
    esac
  done
  "$__glm45_guarded/date" "$@"
}

hostname() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a
  for __glm45_a in "$@"; do
    case $__glm45_a in
      -F*|--file*|-b|--boot|[!-]*) __glm45_record "recorded hostname NAME (sets the host name; not run)" hostname "$@"; return 0 ;;
    esac
  done
  "$__glm45_guarded/hostname" "$@"
}

awk() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a __glm45_skip=0 __glm45_prog=-
  for __glm45_a in "$@"; do
    if (( __glm45_skip )); then __glm45_skip=0; continue; fi
    case $__glm45_a in
      -F|-v) __glm45_skip=1 ;;
      -F?*|-v?*|--) ;;
      -*) break ;;
      *) __glm45_prog=$__glm45_a; break ;;
    esac
  done
  # what is left once `||` and writes to /dev/stderr, /dev/stdout are taken out
  __glm45_a=${__glm45_prog//||/}
  __glm45_a=${__glm45_a//>\"\/dev\/std[eo][ru][rt]\"/}
  __glm45_a=${__glm45_a//> \"\/dev\/std[eo][ru][rt]\"/}
  if [[ $__glm45_prog == - || $__glm45_a =~ system[[:space:]]*\( || $__glm45_a == *'|'* \
    || $__glm45_a =~ print[^\;\}]*\> ]]; then
    __glm45_record "recorded awk (its program may run commands or write files; not run)" awk "$@"
    return 0
  fi
  "$__glm45_guarded/awk" "$@"
}

# One word of $__glm45_s from index $__glm45_i: its text in __glm45_w (starting at
# __glm45_ws) and its flags in __glm45_f: q quoted, p parameter expansion, c command
# substitution (or arithmetic), x not understood. Returns 1 where the words end (end of
# text, an operator, a redirection: BASH_COMMAND lists redirections after the words).
__glm45_word() {
  __glm45_f='' __glm45_st=''
  while (( __glm45_i < __glm45_n )) && [[ ${__glm45_s:__glm45_i:1} == [[:space:]] ]]; do (( ++__glm45_i )); done
  __glm45_ws=$__glm45_i
  while (( __glm45_i < __glm45_n )); do
    __glm45_c=${__glm45_s:__glm45_i:1}
    if [[ -z $__glm45_st ]]; then
      case $__glm45_c in
        '<'|'>')  # <(...) and >(...) are words; other < and > start redirections
          if (( __glm45_i == __glm45_ws )) && [[ ${__glm45_s:__glm45_i+1:1} == '(' ]]; then
            __glm45_st=p; __glm45_f+=c; (( __glm45_i += 2 )); continue
          fi
          break ;;
        [[:space:]]|';'|'&'|'|'|')') break ;;
        '(')
          if [[ ${__glm45_s:__glm45_ws:__glm45_i-__glm45_ws} =~ $__glm45_assign$ ]]; then
            __glm45_st=a; (( ++__glm45_i )); continue
          fi
          break ;;
      esac
    fi
    case ${__glm45_st: -1}$__glm45_c in
      *\\) (( __glm45_i += 2 )); __glm45_f+=q ;;
      d\") __glm45_st=${__glm45_st%?}; (( ++__glm45_i )) ;;
      *\") __glm45_st+=d; __glm45_f+=q; (( ++__glm45_i )) ;;
      d\') (( ++__glm45_i )) ;;
      *\')
        __glm45_r=${__glm45_s:__glm45_i+1}
        if [[ $__glm45_r != *\'* ]]; then __glm45_f+=x; __glm45_i=$__glm45_n; break; fi
        __glm45_r=${__glm45_r%%\'*}; (( __glm45_i += ${#__glm45_r} + 2 )); __glm45_f+=q ;;
      *\`)
        __glm45_r=${__glm45_s:__glm45_i+1}
        if [[ $__glm45_r != *\`* ]]; then __glm45_f+=x; __glm45_i=$__glm45_n; break; fi
        __glm45_r=${__glm45_r%%\`*}; (( __glm45_i += ${#__glm45_r} + 2 )); __glm45_f+=c ;;
      *\$)
        case ${__glm45_s:__glm45_i+1:1} in
          '(') __glm45_st+=p; __glm45_f+=c; (( __glm45_i += 2 )) ;;
          '{') __glm45_st+=b; __glm45_f+=p; (( __glm45_i += 2 )) ;;
          *) __glm45_f+=p; (( ++__glm45_i )) ;;
        esac ;;
      [pa\(]\() __glm45_st+='('; (( ++__glm45_i )) ;;
      [pa\(]\)|b\}) __glm45_st=${__glm45_st%?}; (( ++__glm45_i )) ;;
      *) (( ++__glm45_i )) ;;
    esac
  done
  [[ -z $__glm45_st ]] || __glm45_f+=x
  __glm45_w=${__glm45_s:__glm45_ws:__glm45_i-__glm45_ws}
  if [[ $__glm45_w == *@P* ]]; then __glm45_f+=c; fi  # ${x@P} may run command substitutions
  [[ -n $__glm45_w ]] || return 1
  [[ ! ( $__glm45_w =~ ^[0-9]+$ && ${__glm45_s:__glm45_i:1} == [\<\>] ) ]]
}

# The words of $__glm45_s from index $__glm45_from into __glm45_argv, expanded as bash
# would (in the caller's positional parameters) unless a word has a command substitution:
# that one stays as written, as nothing may run here.
__glm45_words_from() {
  __glm45_argv=() __glm45_i=$__glm45_from __glm45_n=${#__glm45_s}
  while __glm45_word; do
    if [[ $__glm45_f != *[cx]* ]] && eval "__glm45_xp $__glm45_w" 2>/dev/null; then
      __glm45_argv+=("${__glm45_e[@]}")
    else
      __glm45_argv+=("$__glm45_w")
    fi
  done
}
__glm45_xp() { __glm45_e=("$@"); }

# Skip the command from word index $__glm45_from on: record its words, noting $__glm45_why.
# Called with the positional parameters of the command's context, for the expansion.
__glm45_block() {
  __glm45_words_from "$@"
  if (( ${#__glm45_argv[@]} )) && [[ ${__glm45_argv[0]} == "$__glm45_shims"/* ]]; then
    __glm45_argv[0]=${__glm45_argv[0]##*/}
  fi
  __glm45_record "$__glm45_why" "${__glm45_argv[@]}"
  # exec never returns, nor runs the EXIT trap (whose handler would run in the DEBUG trap here)
  if [[ $__glm45_mode == exec ]]; then __glm45_eval='builtin trap - EXIT; exit 0'; fi
  return 0
}

# Skip the command (already recorded or noted): __glm45_skip WHY records the words from
# $__glm45_c on; the caller passes the positional parameters of the command's context.
__glm45_skip() {
  __glm45_from=$__glm45_c __glm45_why=$1
  shift
  __glm45_block "$@"
}

# The command itself: returns 1 to run it, 0 when it was skipped (recorded or noted). Sets
# __glm45_cw to the command name it lets run ("" for none) and __glm45_c to its index.
__glm45_decide() {
  __glm45_eval='' __glm45_mode='' __glm45_cw='' __glm45_pre=()
  case $__glm45_s in
    *'/dev/tcp/'*|*'/dev/udp/'*)
      __glm45_note "skipped a command using /dev/tcp or /dev/udp (network): ${__glm45_s:0:200}"
      return 0 ;;
  esac
  if [[ $__glm45_s =~ $__glm45_fast ]]; then
    __glm45_w=${BASH_REMATCH[1]}
    case $__glm45_w in
      exec|command|builtin|trap|set|shopt|enable|kill) ;;
      *)
        if declare -F -- "$__glm45_w" >/dev/null || [[ -n ${__glm45_builtin[$__glm45_w]-} ]] \
          || __glm45_path_ok "$__glm45_w"; then
          __glm45_r=${__glm45_s%%[![:space:]]*} __glm45_cw=$__glm45_w
          __glm45_c=${#__glm45_r}
          return 1
        fi ;;
    esac
  fi
  case $__glm45_s in '(('*|'[['*) return 1 ;; esac
  __glm45_i=0 __glm45_n=${#__glm45_s}
  while __glm45_word; do
    if [[ -z $__glm45_mode && $__glm45_w =~ $__glm45_assign ]]; then
      if [[ $__glm45_f != *[cx]* ]] && eval "__glm45_xp $__glm45_w" 2>/dev/null; then
        __glm45_pre+=("${__glm45_e[@]}")
      else
        __glm45_pre+=("$__glm45_w")
      fi
      continue
    fi
    if [[ $__glm45_w == -* && $__glm45_f != *[pcx]* && -n $__glm45_mode ]]; then
      case $__glm45_mode:$__glm45_w in
        command:*[vV]*) return 1 ;;
        command:*p*) __glm45_cmd=1 ;;
        exec:-a) __glm45_word || return 1 ;;
      esac
      continue
    fi
    __glm45_c=$__glm45_ws
    if [[ $__glm45_f == *[cx]* ]]; then
      __glm45_skip "recorded a command whose name comes from a command substitution (not checked; not run)" "$@"
      return 0
    fi
    if [[ $__glm45_f == *[pq]* || $__glm45_w == *[\*\?\[~\{]* ]]; then
      if ! eval "__glm45_xp $__glm45_w" 2>/dev/null; then
        __glm45_skip "recorded a command whose name could not be checked (not run)" "$@"
        return 0
      fi
      (( ${#__glm45_e[@]} )) || continue
      __glm45_w=${__glm45_e[0]}
      [[ -n $__glm45_w ]] || return 1
    fi
    if [[ $__glm45_w == */* ]]; then
      if [[ -n ${__glm45_scripts[$__glm45_w]-} ]]; then  # the script itself: its bash must read the hooks
        if [[ ${BASH_ENV-} == "$__glm45_hooks" && ${BASH_ENV@a} == *x* && $__glm45_s != *BASH_ENV=* ]]; then
          __glm45_cw=${__glm45_w##*/}
          return 1
        fi
        __glm45_skip "recorded $__glm45_w (BASH_ENV changed: it would run without the sandbox; not run)" "$@"
        return 0
      fi
      if [[ -n ${__glm45_ok[$__glm45_w]-} ]]; then __glm45_cw=${__glm45_w##*/}; return 1; fi
      __glm45_skip "recorded $__glm45_w (called by path; not run)" "$@"
      return 0
    fi
    case $__glm45_mode:$__glm45_w in
      *:kill)
        if [[ -z $__glm45_mode ]] && declare -F kill >/dev/null; then __glm45_cw='kill'; return 1; fi
        [[ $__glm45_mode == builtin && ${FUNCNAME[2]-} == kill ]] && return 1  # the function above
        __glm45_skip "recorded kill (a shell builtin; not run)" "$@"
        return 0 ;;
      builtin:enable|:enable|command:enable)
        if [[ $__glm45_s =~ [[:space:]]-[[:alpha:]]*f ]]; then
          __glm45_skip "recorded enable -f (loads a builtin; not run)" "$@"
          return 0
        fi ;;
      :exec|:command|:builtin) __glm45_mode=$__glm45_w; __glm45_cmd=0; continue ;;
      *:trap)
        if [[ $__glm45_s =~ [[:space:]][\"\']?DEBUG[\"\']?([[:space:]]|$) ]]; then
          __glm45_note "skipped the script's \`${__glm45_s:0:120}\` (the sandbox keeps its DEBUG trap)"
          return 0
        fi
        # `builtin trap HANDLER SIG` would skip the wrapper above, which alone may use it
        if [[ -n $__glm45_mode && ${FUNCNAME[2]-} != trap && $__glm45_s =~ trap[[:space:]]+(--[[:space:]]+)?[^-[:space:]] ]]; then
          __glm45_note "skipped the script's \`${__glm45_s:0:120}\` (trap handlers go through the sandbox's trap)"
          return 0
        fi ;;
      *:set)
        if [[ $__glm45_s =~ [[:space:]]\+[[:alpha:]]*T || $__glm45_s =~ \+o[[:space:]]+functrace ]]; then
          __glm45_note "skipped the script's \`${__glm45_s:0:120}\` (the sandbox keeps functrace)"
          return 0
        fi ;;
      *:shopt)
        if [[ $__glm45_s == *extdebug* && $__glm45_s =~ [[:space:]]-u ]]; then
          __glm45_note "skipped the script's \`${__glm45_s:0:120}\` (the sandbox keeps extdebug)"
          return 0
        fi ;;
    esac
    __glm45_cw=$__glm45_w
    [[ $__glm45_mode == builtin ]] && return 1
    if [[ $__glm45_mode == command ]] && (( __glm45_cmd )); then
      __glm45_skip "recorded command -p $__glm45_w (default PATH; not run)" "$@"
      return 0
    fi
    if [[ -z $__glm45_mode ]] && declare -F -- "$__glm45_w" >/dev/null; then return 1; fi
    if [[ $__glm45_mode != exec && -n ${__glm45_builtin[$__glm45_w]-} ]]; then return 1; fi
    if __glm45_path_ok "$__glm45_w"; then
      [[ $__glm45_mode != exec || -n $__glm45_p ]] && return 1
      __glm45_skip "recorded exec $__glm45_w (not on the sandbox PATH; not run)" "$@"
      return 0
    fi
    __glm45_skip "recorded $__glm45_w (PATH finds it at $__glm45_p, outside the sandbox; not run)" "$@"
    return 0
  done
  return 1
}

# Whether every redirection of $__glm45_s that writes goes to /dev/null and the like or
# into a writable directory that exists; if not, __glm45_bad names the target.
__glm45_writes_ok() {
  __glm45_i=0 __glm45_n=${#__glm45_s} __glm45_bad=
  while (( __glm45_i < __glm45_n )); do
    while __glm45_word; do :; done
    __glm45_r=${__glm45_s:__glm45_i:3}
    case $__glm45_r in
      '') break ;;
      '<<<') (( __glm45_i += 3 )); __glm45_word; continue ;;
      '<<'*)  # a here-document: its body follows the end of this line
        (( __glm45_i += 2 ))
        __glm45_r=${__glm45_s:__glm45_i}
        __glm45_r=${__glm45_r%%$'\n'*}
        __glm45_n=$(( __glm45_i + ${#__glm45_r} ))
        __glm45_word; continue ;;
      '<&'*) (( __glm45_i += 2 )); __glm45_word; continue ;;
      '&>>') (( __glm45_i += 3 )) ;;
      '<>'*|'&>'*|'>>'*|'>|'*) (( __glm45_i += 2 )) ;;
      '>&'*)
        (( __glm45_i += 2 ))
        if [[ ${__glm45_s:__glm45_i} =~ ^[0-9]*-?([[:space:]]|$) ]]; then __glm45_word; continue; fi ;;
      '<'*) (( ++__glm45_i )); __glm45_word; continue ;;
      '>'*) (( ++__glm45_i )) ;;
      *) (( ++__glm45_i )); continue ;;
    esac
    if ! __glm45_word || [[ $__glm45_f == *[cx]* ]] || ! eval "__glm45_xp $__glm45_w" 2>/dev/null \
      || (( ${#__glm45_e[@]} != 1 )); then
      __glm45_bad=${__glm45_w:-?}
      return 1
    fi
    __glm45_r=${__glm45_e[0]}
    case $__glm45_r in
      /dev/null|/dev/stdout|/dev/stderr|/dev/fd/[0-9]*) continue ;;
      /*) ;;
      *) __glm45_r=$PWD/$__glm45_r ;;
    esac
    __glm45_bad=$__glm45_r
    case /$__glm45_r/ in */../*|*/./*) return 1 ;; esac
    if [[ $__glm45_r == "$__glm45_tree"/* && -d ${__glm45_r%/*} ]]; then continue; fi
    for __glm45_w in "${__glm45_writable[@]}"; do
      if [[ ${__glm45_r%/*} == "$__glm45_w" ]]; then __glm45_bad=; break; fi
    done
    [[ -z $__glm45_bad ]] || return 1
  done
  return 0
}

# A loop that sleeps the same way again and again while what is recorded between two of its
# sleeps stays the same (nothing, or the same poll) waits for what a recording never brings
# (a done file, a process to exit): its third such sleep ends it (break) instead of running.
# __glm45_poll WHERE ARGS...: 0 when it ended the loop (the trap then evals $__glm45_eval).
__glm45_poll() {
  local __glm45_pk=$1 __glm45_pw=''
  shift
  __glm45_from=$__glm45_c
  __glm45_words_from "$@"
  __glm45_pk+=" ${__glm45_argv[*]}"
  if [[ -f $__glm45_window ]]; then
    IFS= read -r -d '' __glm45_pw < "$__glm45_window"
    : > "$__glm45_window"
  fi
  if [[ $__glm45_pk == "$__glm45_wkey" ]]; then
    (( ++__glm45_wsame ))
    if [[ $__glm45_pw == "$__glm45_wwin" ]]; then (( ++__glm45_wn )); else __glm45_wn=1 __glm45_wwin=$__glm45_pw; fi
  else
    __glm45_wkey=$__glm45_pk __glm45_wwin=$__glm45_pw __glm45_wn=1 __glm45_wsame=1
  fi
  (( __glm45_wn >= 3 )) || return 1
  local __glm45_pa=("${__glm45_argv[@]}") __glm45_pn=$(( __glm45_wsame - 1 ))
  __glm45_s=$__glm45_prev __glm45_from=0
  __glm45_words_from "$@"
  __glm45_json "$__glm45_pn" "${#__glm45_pa[@]}" "${__glm45_pa[@]}" "${__glm45_argv[@]}"
  __glm45_frame W "$__glm45_j"
  __glm45_note "ended a wait loop after $__glm45_wsame x \`${__glm45_pa[*]}\` with nothing new recorded" \
    "(it waits for what a recording never brings; its test: \`${__glm45_argv[*]:0:20}\`)"
  __glm45_wkey='' __glm45_wwin='' __glm45_wn=0 __glm45_wsame=0 __glm45_eval=break
  return 0  # break takes effect once this sleep (recorded too: W counts the earlier ones) is over
}

# Called by the DEBUG trap with the positional parameters of the command's context. Returns
# 1: run $BASH_COMMAND; 0: skip it (the trap then evals $__glm45_eval). A command whose
# output goes outside the writable directories does not run: if it is a recorded command,
# its argv is recorded all the same.
__glm45_check() {
  [[ -n ${__glm45_own[${FUNCNAME[1]-}]-} ]] && return 1  # the hooks' own commands
  __glm45_s=$BASH_COMMAND __glm45_line=${BASH_LINENO[0]-0} __glm45_src=${BASH_SOURCE[1]-}
  __glm45_decide "$@" && return 0
  if [[ $__glm45_cw == sleep && -n ${__glm45_ok[$__glm45_shims/sleep]-} ]]; then
    __glm45_poll "${BASH_SOURCE[1]-}:${BASH_LINENO[0]-}" "$@" && return 0
    __glm45_s=$BASH_COMMAND
  elif [[ $__glm45_cw == for ]]; then
    __glm45_wkey='' __glm45_wn=0 __glm45_wsame=0  # a for loop's sleeps end with it
  else
    __glm45_prev=$__glm45_s
  fi
  if [[ $__glm45_s != *'>'* ]] || __glm45_writes_ok "$@"; then
    # (inside a function named like the command, a wrapper: its caller announced it)
    if [[ -n $__glm45_cw && -n ${__glm45_ok[$__glm45_shims/$__glm45_cw]-} && ${FUNCNAME[1]-} != "$__glm45_cw" ]]; then
      __glm45_origin "$__glm45_cw"
    fi
    return 1
  fi
  __glm45_json "$__glm45_bad"
  __glm45_frame O "$__glm45_j"
  if [[ -n $__glm45_cw && -n ${__glm45_ok[$__glm45_shims/$__glm45_cw]-} ]]; then
    __glm45_skip "recorded $__glm45_cw without writing $__glm45_bad (outside the sandbox)" "$@"
  else
    __glm45_note "skipped \`${__glm45_s:0:120}\`: it writes $__glm45_bad (outside the sandbox)"
  fi
  return 0
}

# Tools that are shell scripts on some systems (no sh in the sandbox): the same, as functions.
egrep() { grep -E "$@"; }
fgrep() { grep -F "$@"; }
which() {
  { local -; set +x; } 2>/dev/null
  local __glm45_a __glm45_all='' __glm45_rc=0
  for __glm45_a in "$@"; do
    case $__glm45_a in
      -a) __glm45_all=a; continue ;;
      -*) continue ;;
    esac
    type "-${__glm45_all}P" -- "$__glm45_a" || __glm45_rc=1
  done
  return "$__glm45_rc"
}

# a guarded tool this system lacks, or one the recording records (its shim then answers)
if (( ${#__glm45_unguard[@]} )); then unset -f "${__glm45_unguard[@]}"; fi
# The script may redefine env, sed... (the DEBUG trap still checks what they run), not these,
# whose commands the DEBUG trap lets run unchecked.
declare -A __glm45_own=()
for __glm45_w in __glm45_note __glm45_origin __glm45_record __glm45_path_ok __glm45_word __glm45_words_from __glm45_xp \
  __glm45_block __glm45_skip __glm45_decide __glm45_writes_ok __glm45_poll __glm45_check __glm45_json \
  __glm45_frame __glm45_mark __glm45_answer command_not_found_handle trap kill; do
  __glm45_own[$__glm45_w]=1
  readonly -f "$__glm45_w"
done
readonly __glm45_own
set -T
builtin trap '{ shopt -s extdebug; ! __glm45_check "$@"; } 2>/dev/null || { eval "$__glm45_eval"; ! :; }' DEBUG

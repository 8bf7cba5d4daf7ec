"""Record the argv of the external commands a bash script runs, without running them.

Nothing the script asks for really runs except pure text tools. Three layers:

1. ``PATH`` is the shim directory (one recording shim per recorded command name: it appends
   its argv as one JSON line to a log and exits 0 silently) plus a directory of links to an
   allowlist of text/inspection tools (``SAFE_TOOLS``: awk, sed, grep, cat, dirname, ...), so
   the script's own word splitting, globbing, loops and text processing behave exactly as in
   production. Nothing else of the real ``PATH`` is reachable.
2. Bash hooks, loaded through ``BASH_ENV`` (and read again by any bash the script starts):
   ``command_not_found_handle`` records every other command name (``rm``, ``mkdir``, ``curl``,
   ``pgrep``, ...) in the same log, in the same format, instead of running it; ``kill`` is a
   recording function; the allowlisted tools that can write files or run commands (``env
   CMD``, ``sed -i``, ``sort -o``, ``uniq IN OUT``, ``date -s``, ``hostname NAME``, ``awk``
   with ``system``/pipes/``print >``) record instead; and a DEBUG trap (``extdebug``, inherited
   by functions, subshells and command substitutions) looks at every simple command before it
   runs. It records and skips one whose name contains a ``/`` (``/usr/bin/pkill``, ``./x.sh``)
   or that ``PATH`` finds outside the sandbox (the script changed ``PATH``), ``command -p``,
   ``command kill``/``builtin kill``, ``exec`` of anything but a shim, and a command name
   computed by a command substitution; it skips ``/dev/tcp`` redirections, attempts to drop
   the trap, and output redirections outside the recording's own directory (a recorded
   command with such a redirection is still recorded). The script itself may run by path (its
   bash reads the hooks again); ``source``/``.`` work as usual (sourced commands pass the
   same trap).
3. Where the kernel allows it (user namespaces), the script runs in new user, mount, PID and
   network namespaces: the whole filesystem is remounted read-only except the recording's
   temporary directory (and a caller's ``BASH_ENV`` directory when it is a temporary one), the
   script sees only its own processes (``kill -9 -1`` or a ``pkill`` that slipped through
   cannot reach a real process), there is no network (loopback down), and it runs without
   capabilities. Where it does not, a note says so and layers 1-2 still hold.

Every skipped or recorded-instead-of-run command leaves a note. The recording keeps the
script's exit status, stdout and stderr. Limits without namespaces: a compound command's
redirection (``{ ...; } > file``, ``done > file``) is not seen by the trap and writes. An
allowlisted tool used in a way the hooks cannot vouch for (``awk -f prog``) is recorded
rather than run, which may change what the script does next.
"""

from __future__ import annotations

import functools
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RECORDED: tuple[str, ...] = (
    "ray",
    "ssh",
    "pkill",
    "killall",
    "sleep",
    "python",
    "python3",
    "torchrun",
    "nvidia-smi",
    "hf",
    "huggingface-cli",
    "rsync",
    "scp",
    "pip",
    "pip3",
    "git",
    "wandb",
)
"""Command names replaced by recording shims unless ``commands=`` says otherwise."""

HARDCODED_HOSTFILE = "/root/mpi_rack_hostfile"
"""Hostfile path the bash recipe hard-codes; rewritten in a copy of the script (see below)."""

_BASE_ENV_KEYS = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "TERM",
)
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LEFTOVER_GRACE_S = 0.5
_SHELL_SAFE = re.compile(r"[\w@%+=:,./-]+")

# Run as `python -I -S RECORDER LOG NAME ARGS...`; one write() with O_APPEND per invocation,
# so parallel shims (`ssh ... &`) never interleave their lines.
_RECORDER = """\
import json, os, sys
line = json.dumps([sys.argv[2]] + sys.argv[3:]) + "\\n"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
try:
    os.write(fd, line.encode("ascii"))
finally:
    os.close(fd)
"""


SAFE_TOOLS: tuple[str, ...] = (
    "awk", "sed", "grep", "egrep", "fgrep", "cut", "tr", "cat", "head", "tail", "sort", "uniq",
    "wc", "tac", "paste", "comm", "join", "rev", "fold", "nl", "od", "column", "dirname",
    "basename", "readlink", "realpath", "ls", "stat", "printf", "echo", "seq", "expr", "test",
    "[", "true", "false", "date", "env", "printenv", "pwd", "which", "hostname", "id", "whoami",
    "uname", "nproc", "getconf", "jq", "md5sum", "sha1sum", "sha256sum", "cksum",
)
"""The only real commands on the script's PATH (those installed here): they read and print.
``tee``, ``mktemp``, ``find``, ``xargs``, shells and interpreters are deliberately absent."""

# Allowlisted tools that can also write files or run commands: bash functions check their
# arguments first (see _HOOKS); the real binaries live off PATH, in the "guarded" directory.
_GUARDED = ("awk", "sed", "sort", "uniq", "date", "env", "hostname")

# Bash-side sandbox, sourced through BASH_ENV (@NAME@ are filled in, shell-quoted). No
# variable is exported: the script's environment stays what the caller gave it. Every
# helper avoids `local` names a script could use and tolerates `set -eu`.
_HOOKS = r"""# glm45-launch record: sandbox hooks, read by every bash through BASH_ENV
@CALLER@
__glm45_hooks=$BASH_ENV
__glm45_recorder=@RECORDER@
__glm45_notes=@NOTES@
__glm45_guarded=@GUARDED@
__glm45_shims=@SHIMS@
__glm45_tree=@TREE@
__glm45_writable=(@WRITABLE@)
__glm45_sed_opts=(@SED_OPTS@)
declare -A __glm45_ok=(@OK@)
declare -A __glm45_scripts=(@SCRIPTS@)
declare -A __glm45_builtin=(@BUILTINS@)
__glm45_fast='^[[:space:]]*([[:alnum:]_][[:alnum:]_.+:@%,-]*)([[:space:]]|$)'
__glm45_assign='^[[:alpha:]_][[:alnum:]_]*(\[.*\])?\+?='
readonly __glm45_hooks __glm45_recorder __glm45_notes __glm45_guarded __glm45_shims __glm45_tree __glm45_writable \
  __glm45_sed_opts __glm45_ok __glm45_scripts __glm45_builtin __glm45_fast __glm45_assign
__glm45_s= __glm45_i=0 __glm45_n=0 __glm45_w= __glm45_ws=0 __glm45_f= __glm45_st= __glm45_c=
__glm45_r= __glm45_eval= __glm45_mode= __glm45_p= __glm45_cmd=0 __glm45_e=() __glm45_argv=()
__glm45_from=0 __glm45_why= __glm45_cw= __glm45_bad=

__glm45_note() { local __glm45_t=$*; printf '%s\n' "${__glm45_t//$'\n'/ }" >> "$__glm45_notes"; }

# __glm45_record WHY ARGV...: append ARGV to the argv log (as a shim would) and note WHY.
__glm45_record() {
  __glm45_note "$1"
  shift
  "$__glm45_recorder" "$@"
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
  local __glm45_a __glm45_c1= __glm45_skip=0 __glm45_safe=1
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
  __glm45_f= __glm45_st=
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
  __glm45_argv=() __glm45_i=$__glm45_from
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
  __glm45_eval= __glm45_mode= __glm45_cw=
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
    if [[ -z $__glm45_mode && $__glm45_w =~ $__glm45_assign ]]; then continue; fi
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
    if [[ $__glm45_f == *[pq]* || $__glm45_w == *[\*\?\[~{]* ]]; then
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
        if [[ -z $__glm45_mode ]] && declare -F kill >/dev/null; then __glm45_cw=kill; return 1; fi
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
      /dev/null|/dev/stdout|/dev/stderr|/dev/fd/[0-9]*|"$__glm45_notes") continue ;;
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

# Called by the DEBUG trap with the positional parameters of the command's context. Returns
# 1: run $BASH_COMMAND; 0: skip it (the trap then evals $__glm45_eval). A command whose
# output goes outside the writable directories does not run: if it is a recorded command,
# its argv is recorded all the same.
__glm45_check() {
  __glm45_s=$BASH_COMMAND
  __glm45_decide "$@" && return 0
  [[ $__glm45_s == *'>'* ]] || return 1
  __glm45_writes_ok "$@" && return 1
  if [[ -n $__glm45_cw && -n ${__glm45_ok[$__glm45_shims/$__glm45_cw]-} ]]; then
    __glm45_skip "recorded $__glm45_cw without writing $__glm45_bad (outside the sandbox)" "$@"
  else
    __glm45_note "skipped \`${__glm45_s:0:120}\`: it writes $__glm45_bad (outside the sandbox)"
  fi
  return 0
}

@UNGUARD@
# The script may redefine env, sed... (the DEBUG trap still checks what they run), not these.
readonly -f __glm45_note __glm45_record __glm45_path_ok __glm45_word __glm45_words_from __glm45_xp \
  __glm45_block __glm45_skip __glm45_decide __glm45_writes_ok __glm45_check trap kill
set -T
builtin trap '{ shopt -s extdebug; ! __glm45_check "$@"; } 2>/dev/null || { eval "$__glm45_eval"; ! :; }' DEBUG
"""

# Run as `python -I -S LAUNCHER NOTES GRACE WRITABLE... -- BASH SCRIPT`, in its own session.
# A child tries new user, mount and network namespaces (the filesystem then read-only but
# WRITABLE...) and a new PID namespace, whose PID 1 (a fresh /proc; reaps orphans) runs the
# script without capabilities; once the script ends, processes it left get GRACE seconds
# before the namespace dies (which kills them all). Should any step fail, the launcher notes
# why and execs BASH SCRIPT itself, untouched by the attempt. Exit status: the script's (by
# the same signal when it was killed).
_LAUNCHER = r"""
import ctypes, os, re, signal, sys, time

notes, grace = sys.argv[1], float(sys.argv[2])
cut = sys.argv.index("--")
writable, argv = sys.argv[3:cut], sys.argv[cut + 1:]
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
KEEP = {b"nosuid": MS_NOSUID, b"nodev": MS_NODEV, b"noexec": MS_NOEXEC, b"noatime": 1024,
        b"nodiratime": 2048, b"relatime": 1 << 21, b"strictatime": 1 << 24}
PSEUDO = {b"proc", b"sysfs", b"cgroup", b"cgroup2", b"devpts", b"mqueue", b"debugfs", b"tracefs",
          b"securityfs", b"pstore", b"bpf", b"autofs", b"binfmt_misc", b"fusectl", b"configfs",
          b"hugetlbfs", b"efivarfs", b"nsfs", b"rpc_pipefs", b"selinuxfs"}


def note(text):
    with open(notes, "a") as f:
        f.write(text + "\n")


def fail(what):
    return f"{what}: {os.strerror(ctypes.get_errno())}"


def mount(src, target, fstype, flags):
    enc = lambda s: None if s is None else os.fsencode(s)
    return libc.mount(enc(src), enc(target), enc(fstype), flags, None) == 0


def isolate():
    # new user (this uid only), mount and network namespaces; everything read-only but the
    # writable directories. Returns the reason it failed, or None.
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) != 0:
        problem = fail("unshare")
        if uid != 0 or libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
            return problem
    else:
        try:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as f:
                    f.write(text)
        except OSError as exc:
            return f"user namespace: {exc.strerror}"
    if not mount(None, "/", None, MS_REC | MS_PRIVATE):
        return fail("mount")
    with open("/proc/self/mountinfo", "rb") as f:
        mounts = []
        for line in f:
            left, _, right = line.partition(b" - ")
            fields = left.split()
            target = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            mounts.append((target, fields[5].split(b","), right.split()[0]))
    for path in writable:
        if not mount(path, path, None, MS_BIND | MS_REC):
            note(fail(f"could not keep {path} writable"))
    marks = [os.fsencode(w).rstrip(b"/") + b"/" for w in writable]
    for target, opts, fstype in mounts:
        if b"ro" in opts or any((target.rstrip(b"/") + b"/").startswith(m) for m in marks):
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in opts:
            flags |= KEEP.get(opt, 0)
        if not mount(target, target, None, flags) and fstype not in PSEUDO:
            note(fail(f"could not make {os.fsdecode(target)} read-only"))
    os.chdir(os.getcwd())  # the cwd again, through the new mounts (the writable binds)
    if libc.unshare(CLONE_NEWPID) != 0:
        return fail("unshare (PID)")
    return None


def init(status_w):
    # PID 1 of the new PID namespace: runs the script, reaps, then gives leftovers GRACE s
    own_proc = mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    child = os.fork()
    if child == 0:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last = int(f.read())
        except (OSError, ValueError):
            last = 63
        for cap in range(last + 1):
            libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: no capability survives the exec
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            break
    deadline = time.monotonic() + grace
    left = True
    while left and time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
            time.sleep(0.02)
        except ChildProcessError:
            left = False
    if left:
        try:
            count = sum(1 for p in os.listdir("/proc") if p.isdigit() and p != "1") if own_proc else 0
        except OSError:
            count = 0
        note(f"killed {count or 'the'} process(es) left running by the script")
    os.write(status_w, f"status {status}\n".encode())


r, w = os.pipe()
helper = os.fork()
if helper == 0:
    os.close(r)
    try:
        problem = isolate()
        if problem:
            os.write(w, f"fail {problem}\n".encode())
        else:
            os.write(w, b"ok\n")
            pid1 = os.fork()
            if pid1 == 0:
                init(w)
            else:
                os.waitpid(pid1, 0)
    except BaseException as exc:
        os.write(w, f"fail {exc!r}\n".encode())
    finally:
        os._exit(0)
os.close(w)
with os.fdopen(r, "rb") as reader:
    first = reader.readline().decode(errors="replace").strip()
    if first != "ok":
        os.waitpid(helper, 0)
        note(f"ran without namespace isolation ({first.removeprefix('fail ') or 'no answer'}): "
             "only the PATH allowlist and the bash hooks kept commands from running")
        os.execv(argv[0], argv)
    rest = reader.read().decode(errors="replace").split()
os.waitpid(helper, 0)
status = int(rest[1]) if rest[:1] == ["status"] else 70 << 8
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 70)
"""


@dataclass
class Recording:
    """What a script did in the recording sandbox."""

    invocations: list[list[str]]
    """argv of each recorded command (argv[0] is the bare command name), in recording order."""
    returncode: int
    """The script's exit status (negative: killed by that signal)."""
    stdout: str
    stderr: str
    timed_out: bool = False
    notes: list[str] = field(default_factory=list)
    """Anomalies: commands recorded or skipped instead of run (and why), no namespace isolation,
    non-zero exit, timeout, leftover processes, unreadable log lines."""

    def canonical(self) -> list[list[str]]:
        """Head-side commands in order, then the (parallel) ssh fan-out sorted by argv[1:]."""
        return canonical(self.invocations)


def canonical(invocations: Recording | Iterable[Sequence[str]]) -> list[list[str]]:
    """Order-independent form of the ssh fan-out: non-ssh argv in order, then ssh sorted."""
    if isinstance(invocations, Recording):
        invocations = invocations.invocations
    argvs = [list(argv) for argv in invocations]
    head = [argv for argv in argvs if not argv or argv[0] != "ssh"]
    fan_out = sorted((argv for argv in argvs if argv and argv[0] == "ssh"), key=lambda a: a[1:])
    return head + fan_out


# A script may run itself by path when the kernel then starts bash (which reads the hooks
# again): not through `env bash` (no bash on the sandbox PATH), not with -p (ignores BASH_ENV).
_BASH_SHEBANG = re.compile(rb"#![ \t]*(/usr)?/bin/bash([ \t]+-[a-oq-zA-Z]+)?[ \t]*\r?\n")

_NAMESPACES = True
"""Try the namespace layer (tests turn it off to check the bash layer on its own)."""


@functools.lru_cache(maxsize=8)
def _bash_builtins(bash: str) -> tuple[str, ...]:
    """Builtins and reserved words of ``bash``."""
    try:
        out = subprocess.run([bash, "-c", "compgen -b; compgen -k"], capture_output=True, text=True,
                             timeout=10, stdin=subprocess.DEVNULL, env={"PATH": _DEFAULT_PATH}).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    return tuple(sorted(set(out.split()) | {"kill", "exec", "command", "builtin", "eval", "source", "."}))


@functools.lru_cache(maxsize=8)
def _sed_sandbox(sed: str) -> bool:
    """Whether ``sed`` has ``--sandbox`` (GNU sed: no e/r/w commands)."""
    try:
        return subprocess.run([sed, "--sandbox", "-n", "p"], input="", capture_output=True, timeout=10,
                              text=True).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=8)
def _tools(path: str) -> tuple[tuple[str, str], ...]:
    """(name, path) of the ``SAFE_TOOLS`` that ``path`` finds."""
    found = ((name, shutil.which(name, path=path)) for name in SAFE_TOOLS)
    return tuple((name, real) for name, real in found if real)


def _wait(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """``proc.wait(timeout)``, woken by a pidfd rather than by polling where Linux has one."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(max(0, int(timeout * 1000)))
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()


def _bash_assoc(keys: Iterable[str]) -> str:
    return " ".join(f"[{shlex.quote(k)}]=1" for k in keys)


def _sandbox(root: Path, names: list[str], log: Path, inherited_path: str, scripts: Iterable[Path],
             caller_bash_env: str | None, writable: Sequence[str], bash: str) -> tuple[str, Path]:
    """Build shims, the tool allowlist and the hooks under ``root``: (PATH, hooks file). The
    script's redirections may write anywhere under ``root/cwd`` (the default cwd, where nothing
    can make a symlink) and to files directly in the ``writable`` directories."""
    shim_dir, safe_dir, guarded_dir = root / "bin", root / "safe", root / "guarded"
    for d in (shim_dir, safe_dir, guarded_dir):
        d.mkdir()
    recorder = root / "recorder.py"
    recorder.write_text(_RECORDER)
    ok: list[str] = []
    for name in names:
        shim = shim_dir / name
        words = [sys.executable, "-I", "-S", str(recorder), str(log), name]
        shim.write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, words)) + ' "$@"\n')
        shim.chmod(0o755)
        ok.append(str(shim))
    hook_recorder = root / "record-argv"
    words = [sys.executable, "-I", "-S", str(recorder), str(log)]
    hook_recorder.write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, words)) + ' "$@"\n')
    hook_recorder.chmod(0o755)
    ok.append(str(hook_recorder))
    sed_opts = ""
    guards = []
    for name, real in _tools(inherited_path):
        if name in names:
            continue
        if name in _GUARDED:
            guards.append(name)
            (guarded_dir / name).symlink_to(real)
            ok.append(str(guarded_dir / name))
            if name == "sed" and _sed_sandbox(real):
                sed_opts = "--sandbox"
        else:
            (safe_dir / name).symlink_to(real)
            ok += [str(safe_dir / name), real]
    runnable = [str(s) for s in scripts if _BASH_SHEBANG.match(s.read_bytes()[:200])]
    # a recorded command's shim, or a tool not installed here, needs no guard
    unguarded = [g for g in _GUARDED if g not in guards]
    unguard = "unset -f " + " ".join(unguarded) if unguarded else ""
    values = {
        "@CALLER@": f"source {shlex.quote(caller_bash_env)}" if caller_bash_env else "",
        "@RECORDER@": shlex.quote(str(hook_recorder)),
        "@NOTES@": shlex.quote(str(root / "notes")),
        "@GUARDED@": shlex.quote(str(guarded_dir)),
        "@SHIMS@": shlex.quote(str(shim_dir)),
        "@TREE@": shlex.quote(str(root / "cwd")),
        "@WRITABLE@": " ".join(map(shlex.quote, writable)),
        "@SED_OPTS@": sed_opts,
        "@OK@": _bash_assoc(dict.fromkeys(ok)),
        "@SCRIPTS@": _bash_assoc(dict.fromkeys(runnable)),
        "@BUILTINS@": _bash_assoc(_bash_builtins(bash)),
        "@UNGUARD@": unguard,
    }
    hooks_text = _HOOKS
    for key, value in values.items():
        hooks_text = hooks_text.replace(key, value)
    hooks = root / "hooks.bash"
    hooks.write_text(hooks_text)
    return f"{shim_dir}{os.pathsep}{safe_dir}", hooks


def record_script(
    script: Path,
    *,
    env: dict[str, str],
    hostfile: Path | None = None,
    hostfile_var: str = "HOSTFILE",
    cwd: Path | None = None,
    timeout: float = 30,
    commands: Iterable[str] = DEFAULT_RECORDED,
) -> Recording:
    """Run ``bash SCRIPT`` in the recording sandbox (see the module) and return what it invoked.

    Environment: ``env`` is the whole environment apart from a few basics taken from ours
    (HOME, LANG, LC_*, TMPDIR, USER, LOGNAME, TERM), ``PATH`` (the shim directory, then the
    allowlisted tools found on ``env["PATH"]`` or ours) and ``BASH_ENV`` (the hooks, which
    first source ``env["BASH_ENV"]`` if given). Nothing else leaks in, so unset variables
    really are unset.

    Hostfile: when ``hostfile`` is given, ``$hostfile_var`` (empty: none) is set to it, and if
    the script text contains the literal ``/root/mpi_rack_hostfile`` a rewritten copy runs
    instead of the original. The copy lives in a temporary mirror of the script's surroundings:
    its directory holds the copy (same file name) plus symlinks to every sibling of the
    original, and the directory above it holds symlinks to the entries of the original's
    parent. So ``$(dirname "${BASH_SOURCE[0]}")/models/x.sh`` and ``$SCRIPT_DIR/../x`` still
    resolve, and the user's tree is never written to. Files the script sources are not
    rewritten. Choose a hostfile path without spaces or glob characters: the recipe expands
    it unquoted.

    Process control: stdin is /dev/null; the script runs in its own session/process group
    (and PID namespace when available), with stdout/stderr sent to files (a background child
    keeping a pipe open cannot hang us). On timeout the whole group is SIGKILLed; after a
    normal exit, processes still running get a short grace period, then are SIGKILLed too.

    ``cwd`` defaults to a fresh empty directory (globs like ``[0]*3+[1]*89`` stay literal);
    with namespaces, a given ``cwd`` is read-only like the rest of the filesystem.
    """
    names = list(dict.fromkeys(commands))
    for name in names:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a command name: {name!r}")
    script = Path(script).absolute()
    text = script.read_bytes()
    notes: list[str] = []
    bash = shutil.which("bash") or "/bin/bash"

    with tempfile.TemporaryDirectory(prefix="glm45-record-") as tmp:
        root = Path(tmp)
        log = root / "argv.jsonl"
        run_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
        run_env.update(env)
        target = script
        if hostfile is not None:
            hostfile_abs = Path(hostfile).absolute()
            if not _SHELL_SAFE.fullmatch(str(hostfile_abs)):
                notes.append(f"hostfile path {str(hostfile_abs)!r} has shell-special characters")
            if hostfile_var:
                run_env[hostfile_var] = str(hostfile_abs)
            literal = HARDCODED_HOSTFILE.encode()
            if literal in text:
                rewritten = text.replace(literal, os.fsencode(hostfile_abs))
                target = mirror_script(script, rewritten, root / "mirror", notes)

        workdir = Path(cwd) if cwd is not None else root / "cwd"
        workdir.mkdir(exist_ok=True)
        # What the script may write besides the default cwd: files in a caller's hook directory
        # when that is a temporary one. The launcher keeps it and the recording's own directory
        # writable.
        writes: list[str] = []
        writable = [str(root)]
        caller_bash_env = env.get("BASH_ENV") or None
        if caller_bash_env:
            hook_dir = os.path.dirname(os.path.abspath(caller_bash_env))
            temp = os.path.realpath(tempfile.gettempdir())
            real = os.path.realpath(hook_dir)
            if real != temp and os.path.commonpath([real, temp]) == temp:
                writes += dict.fromkeys([hook_dir, real])
                writable.append(real)
        inherited_path = env.get("PATH") or os.environ.get("PATH") or _DEFAULT_PATH
        run_env["PATH"], hooks = _sandbox(root, names, log, inherited_path, dict.fromkeys([target, script]),
                                          caller_bash_env, writes, bash)
        run_env["BASH_ENV"] = str(hooks)
        command = [bash, str(target)]
        if _NAMESPACES:
            launcher = root / "launcher.py"
            launcher.write_text(_LAUNCHER)
            command = [sys.executable, "-I", "-S", str(launcher), str(root / "notes"), str(_LEFTOVER_GRACE_S),
                       *writable, "--", *command]
        out_path, err_path = root / "stdout", root / "stderr"
        timed_out = False
        after: list[str] = []
        with out_path.open("wb") as out_f, err_path.open("wb") as err_f:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=run_env,
                stdin=subprocess.DEVNULL,
                stdout=out_f,
                stderr=err_f,
                start_new_session=True,
            )
            try:
                returncode = _wait(proc, timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc.pid)
                returncode = proc.wait()
                after.append(f"timed out after {timeout:g} s; process group killed")
            deadline = time.monotonic() + _LEFTOVER_GRACE_S
            while (left := _group_members(proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.02)
            if left:
                _kill_group(proc.pid)
                if not timed_out:
                    after.append(f"killed {len(left)} process(es) left running by the script")
        if not timed_out and returncode != 0:
            after.append(f"script exited with status {returncode}")
        notes_path = root / "notes"
        if notes_path.exists():
            sandbox_notes = notes_path.read_text(encoding="utf-8", errors="replace").splitlines()
            notes += [n for n in dict.fromkeys(sandbox_notes) if n]
        notes += after

        invocations: list[list[str]] = []
        log_text = log.read_text(encoding="ascii", errors="replace") if log.exists() else ""
        for number, line in enumerate(log_text.splitlines(), 1):
            try:
                argv = json.loads(line)
            except ValueError:
                notes.append(f"argv log line {number} is not JSON: {line[:80]!r}")
                continue
            if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv):
                notes.append(f"argv log line {number} is not a list of strings")
                continue
            invocations.append(argv)
        stdout = out_path.read_text(encoding="utf-8", errors="replace")
        stderr = err_path.read_text(encoding="utf-8", errors="replace")

    return Recording(invocations, returncode, stdout, stderr, timed_out, notes)


def mirror_script(script: Path, text: bytes, up: Path, notes: list[str]) -> Path:
    """Write ``text`` as ``up/<dir name>/<script name>`` amid symlinks to the originals: the
    script's siblings beside it, its parent's entries one level up (so paths relative to the
    script still resolve; the user's tree is not written). Problems go to ``notes``."""
    orig_dir = script.parent
    here = up / (orig_dir.name or "root")
    here.mkdir(parents=True)
    if orig_dir.parent != orig_dir:
        _link_entries(orig_dir.parent, up, orig_dir.name, notes)
    _link_entries(orig_dir, here, script.name, notes)
    copy = here / script.name
    copy.write_bytes(text)
    copy.chmod(script.stat().st_mode & 0o777)
    return copy


def _link_entries(directory: Path, dest: Path, skip: str, notes: list[str]) -> None:
    """Symlink every entry of ``directory`` except ``skip`` into ``dest``."""
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        notes.append(f"could not mirror {directory}: {exc}")
        return
    for entry in entries:
        if entry.name != skip:
            (dest / entry.name).symlink_to(entry)


def _kill_group(pgid: int, wait_s: float = 2.0) -> None:
    """SIGKILL every process of the group and wait (up to ``wait_s``) until none is alive."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + wait_s
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc; killpg(0) elsewhere."""
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(pid))
    return members

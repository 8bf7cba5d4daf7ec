# shellcheck shell=bash
# glm45-launch parity: read through BASH_ENV before the recording's hooks (see
# glm45_launch/sandbox/parity.py). A `ray` function saves the environment the script exports
# at `ray start --head` and at `ray job submit` into $GLM45_PARITY_DIR, then runs the
# recording shim.
ray() {
  case "${1-} ${2-}" in
    "start --head") env -0 > "$GLM45_PARITY_DIR/head-start.env" 2>/dev/null ;;
    "job submit") env -0 > "$GLM45_PARITY_DIR/submit.env" 2>/dev/null ;;
  esac
  command ray "$@"
}

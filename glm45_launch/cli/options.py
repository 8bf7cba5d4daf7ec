"""Every shared option, declared once as data, and the objects they build.

An option is an :class:`Opt`: its Click declaration and where its value goes (``spec.X``:
a :class:`LaunchSpec` field, ``variant.X``, ``overrides.X``, ``hosts.X``, or ``ssh.X``).
A new plan option is one ``Opt`` line in :data:`PLAN` (and its ``LaunchSpec`` field): the
decorator, the kwarg bookkeeping and :func:`spec_from_options` all read this table.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from glm45_launch.core.hostfile import DEFAULT_HOSTFILE, Hostfile, load_hostfile
from glm45_launch.core.plan import DEFAULT_MEGATRON_PATH, FRAMEWORKS, LaunchSpec, NvlinkFact, Variant
from glm45_launch.core.profiles import LAUNCHER_ENV, MODES, OWN_DIRS, PROFILES, TASKS, TRANSFER_MODES
from glm45_launch.core.steps import DEFAULT_PARALLEL
from glm45_launch.errors import LaunchError, undecoded
from glm45_launch.recipes import MODELS
from glm45_launch.recipes.hardware import HARDWARE

if TYPE_CHECKING:
    from glm45_launch.core.operations import WatchSettings
    from glm45_launch.runtime.ssh import SshOptions

F = Callable[..., Any]


@dataclass(frozen=True)
class Opt:
    """One option: ``name`` is the kwarg; ``to`` is ``"group.field"`` it fills; ``convert``
    turns the raw value into the field's value."""

    name: str
    decls: tuple[str, ...]
    to: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] | None = None

    def click(self) -> Callable[[F], F]:
        extra = {"callback": utf8_text} if "envvar" in self.kwargs else {}
        return click.option(*self.decls, self.name, **self.kwargs, **extra)


def utf8_text(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Click callback: a value that goes into a command, a log or JSON must be UTF-8 text (bytes
    that are not reach Python as lone surrogates); names the environment variable it came from."""
    if isinstance(value, str) and undecoded(value) != value:
        envvar = getattr(param, "envvar", None)
        source = f"${envvar} " if isinstance(envvar, str) and os.environ.get(envvar) == value else ""
        raise click.BadParameter(f"{source}is not UTF-8 text: '{undecoded(value)}'", ctx, param)
    return value


class Finite(click.FloatRange):
    """A ``FloatRange`` without nan and inf: a nan timeout never fires, an inf one overflows."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


MAX_SECONDS = 30 * 24 * 3600.0  # a month: a longer timeout is a typo (1e300 overflows every clock)


def seconds(minimum: float) -> Finite:
    """A duration option: finite, at least ``minimum``, at most :data:`MAX_SECONDS` (a usage error
    naming the option and its bounds otherwise)."""
    return Finite(min=minimum, max=MAX_SECONDS)


def _or_none(value: Any) -> Any:
    return value or None


def _workdir(value: str | None) -> str:
    return os.path.abspath(value) if value else os.getcwd()


def _recipe(path: str | None) -> Any:
    from glm45_launch.core.recipe_file import load_recipe
    from glm45_launch.recipes import BASH_RECIPE

    return load_recipe(path) if path else BASH_RECIPE


def _not(value: bool) -> bool:
    return not value


def _nvlink(value: str | None) -> NvlinkFact:
    """``--nvlink yes|no``, else the probe of this machine (the head) when the profile uses it."""
    if value is not None:
        return NvlinkFact(value == "yes", "--nvlink")
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("profile") not in (None, "python"):
        return NvlinkFact(None, "not probed: only --profile python uses it")
    from glm45_launch.runtime.hostfacts import nvlink_links

    links = nvlink_links()
    if links is None:
        return NvlinkFact(None, "no working nvidia-smi here")
    return NvlinkFact(bool(links), "nvidia-smi topo -m here: " + ("/".join(links) if links else "no NV links"))


HOSTS = (
    Opt("hostfile", ("--hostfile",), "hosts.path", dict(default=str(DEFAULT_HOSTFILE), show_default=True,
        help="MPI-style hostfile: one host per line, optional slots=N.")),
    Opt("include", ("--include",), "hosts.include", dict(multiple=True, metavar="HOSTS",
        help="Only these hosts (comma- or @-separated; repeatable).")),
    Opt("exclude", ("--exclude",), "hosts.exclude", dict(multiple=True, metavar="HOSTS",
        help="Drop these hosts (comma- or @-separated; repeatable).")),
    Opt("ssh_user", ("--ssh-user",), "spec.ssh_user", dict(default="root", show_default=True)),
)

def _head(value: str | None) -> str | None:
    """``--head``, else (``--profile python-8node``, as upstream) ``$MASTER_ADDR``, else ``$MLP_WORKER_0_HOST``."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("profile") in OWN_DIRS \
            and ctx.get_parameter_source("head") is not ParameterSource.COMMANDLINE and os.environ.get("MASTER_ADDR"):
        return os.environ["MASTER_ADDR"]
    return value or None


def launcher_env() -> tuple[tuple[str, str], ...]:
    """What the python profiles copy from this shell's environment when it is set (NCCL_SOCKET_IFNAME...)."""
    return tuple((name, os.environ[name]) for name in LAUNCHER_ENV if name in os.environ)


HEAD = Opt("head", ("--head",), "spec.head", dict(envvar="MLP_WORKER_0_HOST", default=None,
           help="Head address [env MLP_WORKER_0_HOST; python-8node: MASTER_ADDR first]."), _head)

PLAN = (
    *HOSTS,
    Opt("gpus_per_node", ("--gpus-per-node",), "spec.gpus_per_node", dict(type=int, default=None,
        help="GPUs per node (default: the hostfile's slots, else 8).")),
    HEAD,
    Opt("base_dir", ("--base-dir",), "spec.base_dir", dict(envvar="BASE_DIR", default=None,
        help="Shared root of checkpoints and data [env BASE_DIR]."), _or_none),
    Opt("socket_ifname", ("--socket-ifname",), "spec.socket_ifname", dict(envvar="MLP_SOCKET_IFNAME", default=None,
        help="Network interface [env MLP_SOCKET_IFNAME]; the runtime env keeps ${MLP_SOCKET_IFNAME} for Ray "
             "unless --resolve-env."), _or_none),
    Opt("resolve_env", ("--resolve-env",), "spec.resolve_env", dict(is_flag=True,
        help="Put values instead of ${VAR}s into the runtime env (deviation).")),
    Opt("export_env", ("--export-env",), "spec.export_env", dict(is_flag=True,
        help="Export the runtime env's ${VAR}s into every `ray start` (deviation).")),
    Opt("workdir", ("--workdir",), "spec.workdir", dict(default=None,
        help="Framework checkout holding train.py; the head starts there [default: cwd]."), _workdir),
    Opt("framework", ("--framework",), "spec.framework", dict(type=click.Choice(FRAMEWORKS), default="miles",
        show_default=True, help="Package of the dynamic-sampling filter.")),
    Opt("model", ("--model",), "spec.model", dict(type=click.Choice(list(MODELS)), default=None,
        help="[default: glm4.5-355B-A32B; glm4.5-106B-A12B with --profile air-p2p]")),
    Opt("actor_num_nodes", ("--actor-num-nodes",), "spec.actor_num_nodes", dict(type=int, default=None,
        help="--actor-num-nodes of train.py (default: the recipe's 8).")),
    Opt("checkpoint_dir", ("--checkpoint-dir",), "spec.checkpoint_dir", dict(default=None,
        help="Adds --load DIR --save DIR --save-interval N (the recipe saves nothing).")),
    Opt("save_interval", ("--save-interval",), "spec.save_interval", dict(type=int, default=20, show_default=True)),
    Opt("entry", ("--entry",), "spec.entry", dict(default="train.py", show_default=True,
        help="Script the job runs instead of train.py (e.g. a smoke entry).")),
    Opt("dashboard_host", ("--dashboard-host",), "spec.dashboard_host", dict(default=None,
        help="Bind the Ray dashboard (it runs submitted jobs, no authentication) here instead of 0.0.0.0: "
             "127.0.0.1 or the head's address (deviation).")),
    Opt("no_cleanup", ("--no-cleanup",), "spec.cleanup", dict(is_flag=True,
        help="Skip the recipe's pkill/ray stop cleanup."), _not),
    # The recipe, its variants (RECIPE.md §3, §5) and overrides (variants.py, overrides.py).
    Opt("recipe_file", ("--recipe",), "spec.recipe", dict(default=None, metavar="FILE",
        help="Recipe file (TOML) instead of the bash recipe (see `recipe_file.py`)."), _recipe),
    Opt("profile", ("--profile",), "variant.profile", dict(type=click.Choice(PROFILES), default="bash",
        show_default=True, help="bash: the bash recipe (GSPO, TP8/PP4/CP2/EP16); python: the job of miles' Python "
                                "launcher (GRPO, parallelism by node count; Blackwell only); python-8node: miles' "
                                "run_glm45_355b_a32b_8node.py, the bash recipe's Python successor; air-p2p: the "
                                "disaggregated GLM-4.5-Air recipe (P2P/broadcast weight transfer).")),
    Opt("hardware", ("--hardware",), "variant.hardware", dict(type=click.Choice(list(HARDWARE)), default=None,
        help="H100 (8 GPUs/node), GB200 or GB300 (4 GPUs/node, Blackwell).")),
    Opt("mtp", ("--mtp/--no-mtp",), "variant.mtp", dict(default=None,
        help="EAGLE/MTP speculative decoding (default: on in bash, off in python).")),
    Opt("mis", ("--mis",), "variant.mis", dict(is_flag=True,
        help="Train-inference mismatch correction: write the TIS/RS YAML and pass it.")),
    Opt("mis_no_rs", ("--mis-no-rs",), "variant.mis_use_rs", dict(is_flag=True, help="With --mis: use_rs false."),
        _not),
    Opt("r3", ("--r3",), "variant.r3", dict(is_flag=True, help="Rollout routing replay (--use-rollout-routing-replay).")),
    Opt("rollout_fp8", ("--rollout-fp8",), "variant.rollout_fp8", dict(is_flag=True,
        help="FP8 rollout: the HF checkpoint's -FP8 copy and the FP8 SGLang flags (Blackwell).")),
    Opt("kv_cache_fp8", ("--kv-cache-fp8",), "variant.kv_cache_fp8", dict(is_flag=True,
        help="--sglang-kv-cache-dtype fp8_e4m3.")),
    Opt("job_files_dir", ("--job-files-dir",), "variant.files_dir", dict(default=None, metavar="DIR",
        help="Where files the job reads (--mis) are written, on the head [default: BASE_DIR/glm45-launch].")),
    Opt("set_args", ("--set",), "overrides.sets", dict(multiple=True, metavar="GROUP.--FLAG=VALUE",
        help="Replace a flag's values in a group (appended when absent; repeatable).")),
    Opt("unset_args", ("--unset",), "overrides.unsets", dict(multiple=True, metavar="GROUP.--FLAG",
        help="Remove a flag from a group (repeatable).")),
    Opt("extra_args", ("--extra-args",), "overrides.extra_args", dict(multiple=True, metavar="ARGS",
        help="Words appended after every group (shell-split; repeatable).")),
    Opt("env_args", ("--env",), "overrides.env", dict(multiple=True, metavar="K=V",
        help="Runtime env var: replaced in place or appended (repeatable).")),
    Opt("extra_env_vars", ("--extra-env-vars",), "overrides.extra_env_vars", dict(multiple=True,
        metavar="'K=V ...'|JSON", help="Runtime env vars as upstream's Python launchers take them: space-separated "
                                        "K=V, or a JSON object (like --env; repeatable).")),
    Opt("external_ray", ("--external-ray",), "spec.external_ray", dict(is_flag=True,
        help="Submit to the Ray cluster already running: no Ray cleanup, no ray start, straight to the join check.")),
    Opt("hold_workers", ("--hold-workers",), "spec.hold_workers", dict(is_flag=True,
        help="Keep an ssh session to every worker open until the job ends (platforms that reap a node whose "
             "entry process returns).")),
    # The Python launcher's options (--profile python), named like upstream's.
    Opt("output_dir", ("--output-dir",), "spec.output_dir", dict(default=None, metavar="DIR",
        help="python: checkpoints in DIR/RUN_ID/checkpoints (load and save), dumps in DIR/RUN_ID/dump_details "
             "[default: BASE_DIR]; python-8node: --save's DIR/checkpoints [default: /root/shared_data].")),
    Opt("run_id", ("--run-id",), "spec.run_id", dict(default=None, metavar="ID",
        help="python: the run's name (its directory under --output-dir, the wandb group) [default: default].")),
    Opt("model_local_dir", ("--model-local-dir",), "spec.model_local_dir", dict(default=None, metavar="DIR",
        help="python: where the job reads the checkpoints (each node's local copy) [default: BASE_DIR].")),
    Opt("model_dir", ("--model-dir",), "spec.model_dir", dict(default=None, metavar="DIR",
        help="python profiles: the HF checkpoint and its converted copies [default: python: BASE_DIR; "
             "python-8node: /root/models].")),
    Opt("data_dir", ("--data-dir",), "spec.data_dir", dict(default=None, metavar="DIR",
        help="python profiles: the datasets [default: python: BASE_DIR; python-8node: /root/datasets].")),
    Opt("megatron_path", ("--megatron-path",), "spec.megatron_path", dict(default=DEFAULT_MEGATRON_PATH,
        show_default=True, help="Megatron-LM checkout: PYTHONPATH of the conversion (python profiles: of the job "
                                "too).")),
    Opt("save", ("--save",), "spec.save", dict(is_flag=True,
        help="python-8node: save checkpoints to --output-dir/checkpoints every 20 rollouts (off, as in the .sh).")),
    Opt("num_rollout", ("--num-rollout",), "spec.num_rollout", dict(type=click.IntRange(min=1), default=None,
        help="python-8node: train.py's --num-rollout [default: 3000].")),
    Opt("mode", ("--mode",), "variant.mode", dict(type=click.Choice(MODES), default="normal", show_default=True,
        help="python: debug-minimal saves every 2 rollouts, 100-token responses, no eval schedule.")),
    Opt("task", ("--task",), "variant.task", dict(type=click.Choice(TASKS), default="dapo-aime", show_default=True,
        help="python: dapo-aime (DAPO-Math-17k, AIME eval) or gsm8k.")),
    Opt("dynamic_sampling", ("--dynamic-sampling",), "variant.dynamic_sampling", dict(is_flag=True,
        help="python: over-sample and filter groups with zero reward variance.")),
    Opt("no_eval", ("--no-eval",), "variant.eval", dict(is_flag=True,
        help="python: drop --eval-interval/--eval-top-p."), _not),
    Opt("benchmark", ("--benchmark",), "variant.benchmark", dict(is_flag=True,
        help="python: random-length generation benchmark settings.")),
    Opt("cuda_core_dump", ("--cuda-core-dump",), "variant.cuda_core_dump", dict(is_flag=True,
        help="python profiles: CUDA core dumps on exception into --output-dir.")),
    Opt("wandb_key", ("--wandb-key",), "spec.wandb_key", dict(envvar="WANDB_API_KEY", default=None, hidden=True,
        help="python profiles: the wandb key (set WANDB_API_KEY rather than passing it here)."), _or_none),
    Opt("nvlink", ("--nvlink",), "spec.nvlink", dict(type=click.Choice(["yes", "no"]), default=None,
        help="python: the head's GPUs have NVLink (NCCL_NVLS_ENABLE) [default: probe `nvidia-smi topo -m` "
             "here, as upstream does on the head]."), _nvlink),
    # The Air recipe's options (--profile air-p2p).
    Opt("transfer_mode", ("--transfer-mode",), "variant.transfer_mode", dict(type=click.Choice(TRANSFER_MODES),
        default=None, help="air-p2p: how weights reach the rollout engines [default: p2p].")),
    Opt("bucket_size_gb", ("--bucket-size-gb",), "variant.bucket_size_gb", dict(type=float, default=None,
        help="air-p2p, p2p: the weight-update bucket in GiB [default: 1.0].")),
    Opt("skip_weight_check", ("--skip-weight-check",), "variant.skip_weight_check", dict(is_flag=True,
        help="air-p2p: dummy weights, no --check-weight-update-equal (the script's SKIP_VALIDATION=1).")),
)

SSH = (
    Opt("identity", ("--identity", "-i"), "ssh.identity", dict(multiple=True, metavar="KEY",
        help="SSH private key (repeatable; default: ssh-agent and ~/.ssh keys)."), tuple),
    Opt("known_hosts", ("--known-hosts",), "ssh.known_hosts", dict(multiple=True, metavar="FILE",
        help="Extra known_hosts file (repeatable); ~/.ssh/known_hosts is always read."), tuple),
    Opt("accept_new_host_keys", ("--accept-new-host-keys",), "ssh.accept_new_host_keys", dict(is_flag=True,
        help="Record unknown host keys (a changed key is still refused).")),
    Opt("ssh_port", ("--ssh-port",), "ssh.port", dict(type=click.IntRange(1, 65535), default=None,
        help="SSH port (default: 22 / ~/.ssh/config).")),
    # At least 1 s: a connect timeout that rounds to 0 means none, and `timeout 0` never fires.
    Opt("connect_timeout", ("--connect-timeout",), "ssh.connect_timeout", dict(type=seconds(1),
        default=10.0, show_default=True, help="Seconds to connect to a host.")),
    Opt("command_timeout", ("--command-timeout",), "ssh.command_timeout", dict(type=seconds(1),
        default=300.0, show_default=True, help="Seconds a remote command may run (enforced on both ends).")),
    Opt("retries", ("--retries",), "ssh.retries", dict(type=click.IntRange(min=1), default=3, show_default=True,
        help="Connection attempts per host (with backoff).")),
)

# How `up` runs the plan's steps: they change the plan (its submit, its step order), so `plan` takes them too.
LAUNCH = (
    Opt("no_wait", ("--no-wait",), "spec.no_wait", dict(is_flag=True,
        help="Submit the job and print its id (ray job submit --no-wait).")),
    Opt("no_overlap", ("--no-overlap",), "spec.overlap", dict(is_flag=True,
        help="Start workers only after `ray start --head` returns (the bash recipe's order)."), _not),
)

_SECONDS = seconds(0.1)

# The health watch, diagnostics and restarts (core/operations.py WatchSettings): `up` runs them,
# `plan` and `up --dry-run` show them.
WATCH = (
    Opt("max_restarts", ("--max-restarts",), "watch.max_restarts", dict(type=click.IntRange(min=0), default=0,
        show_default=True, help="Restart after a node is lost, the job stalls or fails: the cluster again, the "
                                "same job, resumed from --load (needs --checkpoint-dir or a --load in the train args).")),
    Opt("host_wait", ("--host-wait",), "watch.host_wait_s", dict(type=_SECONDS, default=600.0, show_default=True,
        metavar="SECONDS", help="Before a restart, how long a lost node has to answer again.")),
    Opt("health_interval", ("--health-interval",), "watch.interval_s", dict(type=_SECONDS, default=10.0,
        show_default=True, metavar="SECONDS",
        help="While the job runs: Ray's node table and `pgrep -x raylet` on every node this often.")),
    Opt("health_timeout", ("--health-timeout",), "watch.probe_timeout_s", dict(type=_SECONDS, default=10.0,
        show_default=True, metavar="SECONDS",
        help="A node whose check does not answer within this, twice in a row, is lost.")),
    Opt("stall_timeout", ("--stall-timeout",), "watch.stall_timeout_s", dict(type=_SECONDS, default=None,
        metavar="SECONDS", help="No new driver output for this long: the job stalled (default: off).")),
    Opt("stop_grace", ("--stop-grace",), "watch.stop_grace_s", dict(type=_SECONDS, default=30.0, show_default=True,
        metavar="SECONDS",
        help="After `ray job stop`, how long before the forced stop (ray stop --force on every node).")),
    Opt("collect_timeout", ("--collect-timeout",), "watch.collect_timeout_s", dict(type=_SECONDS, default=60.0,
        show_default=True, metavar="SECONDS", help="Diagnostics after a failure: at most this long per node.")),
    Opt("no_watch", ("--no-watch",), "watch.watch", dict(is_flag=True,
        help="Do not watch the cluster while the job runs."), _not),
    Opt("no_collect", ("--no-collect",), "watch.collect", dict(is_flag=True,
        help="Collect no diagnostics after a failure."), _not),
)

# core.steps.DEFAULT_PARALLEL (256): a rack row in one or two rounds; SSH handshakes in flight are
# bounded apart (16), so a wide fan-out costs threads, not CPU (bench/fanout.py measured it).
PARALLEL = Opt("parallel", ("--parallel",), "run.parallel", dict(type=click.IntRange(min=1), default=DEFAULT_PARALLEL,
               show_default=True, help="Commands in flight at once (SSH handshakes: at most 16 at a time)."))

# What preflight checks, for `preflight` and for `up`'s first phase (checks.preflight_report.PreflightOptions).
PREFLIGHT = (
    Opt("min_free_gb", ("--min-free-gb",), "preflight.min_free_gb", dict(type=Finite(min=0), default=5.0,
        show_default=True, help="Preflight: free space needed in /tmp (Ray's temp dir) on every host.")),
    Opt("require_gpus", ("--require-gpus",), "preflight.require_gpus", dict(is_flag=True,
        help="Preflight: no nvidia-smi or no NVLink is a failure (default: a warning, as on CPU-only test hosts).")),
)


def _sizes(value: str | None) -> tuple[int, ...] | None:
    from glm45_launch.core.netcheck import parse_sizes

    return parse_sizes(value) if value else None


# The network check after the join, before the submit (core/netcheck.py): `plan`, `up` and `netcheck`.
NETCHECK = (
    Opt("no_netcheck", ("--no-netcheck",), "netcheck.off", dict(is_flag=True,
        help="No network check before the job (interfaces, all-reduce per node, over the cluster, pairs).")),
    Opt("netcheck_backend", ("--netcheck-backend",), "netcheck.backend", dict(
        type=click.Choice(("auto", "nccl", "gloo")), default="auto", show_default=True,
        help="auto: NCCL, one rank per GPU, where every node has NVIDIA GPUs; else Gloo, one rank per node.")),
    Opt("netcheck_sizes", ("--netcheck-sizes",), "netcheck.sizes", dict(default=None, metavar="SIZES",
        help="All-reduce sizes, e.g. 1M,64M,1G [default: NCCL 8M,128M,1G; Gloo 256K,4M]."), _sizes),
    Opt("netcheck_timeout", ("--netcheck-timeout",), "netcheck.timeout_s", dict(type=seconds(1), default=120.0,
        show_default=True, metavar="SECONDS", help="Each phase of the check (a collective) ends within this: "
                                                   "the nodes that did not finish are named.")),
    Opt("min_busbw_node", ("--min-busbw-node",), "netcheck.min_busbw_node", dict(type=Finite(min=0), default=None,
        metavar="GB/S", help="Per-node all-reduce busbw floor [default: published figures: H100 460, H200 431 "
                             "at 8 GPUs; none on CPU].")),
    Opt("min_busbw_cluster", ("--min-busbw-cluster",), "netcheck.min_busbw_cluster", dict(type=Finite(min=0),
        default=None, metavar="GB/S", help="Cluster all-reduce busbw floor [default: H100 40; none elsewhere].")),
)


def netcheck_from(values: dict[str, Any] | None) -> Any:
    """The ``NetcheckSettings`` the NETCHECK options give (None: the command has none, or --no-netcheck)."""
    from glm45_launch.core.netcheck import NetcheckSettings

    if not values or values.pop("off", False):
        return None
    return NetcheckSettings(**values)


def by_name(name: str, **changes: Any) -> Opt:
    """The shared option ``name`` (``changes``: other Click settings, e.g. its help here)."""
    opt = next(o for o in (*PLAN, *LAUNCH, *WATCH, *SSH, *PREFLIGHT, *NETCHECK, PARALLEL) if o.name == name)
    return Opt(opt.name, opt.decls, opt.to, {**opt.kwargs, **changes}, opt.convert) if changes else opt


def without(group: tuple[Opt, ...], *names: str) -> tuple[Opt, ...]:
    """``group`` less the options ``names`` (a command whose own option has that flag)."""
    return tuple(o for o in group if o.name not in names)


def options(*groups: tuple[Opt, ...] | Opt) -> Callable[[F], F]:
    """Decorate a command with these option groups, in order."""
    opts = [o for g in groups for o in ((g,) if isinstance(g, Opt) else g)]

    def decorate(func: F) -> F:
        for opt in reversed(opts):
            func = opt.click()(func)
        return func
    return decorate


def take(kwargs: dict[str, Any], group: tuple[Opt, ...]) -> dict[str, dict[str, Any]]:
    """Pop ``group``'s options out of a command's kwargs, as ``{target: {field: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for opt in group:
        if opt.name not in kwargs:
            continue
        value = kwargs.pop(opt.name)
        target, name = opt.to.split(".", 1)
        out.setdefault(target, {})[name] = opt.convert(value) if opt.convert else value
    return out


def hostfile_from(values: dict[str, Any]) -> Hostfile:
    """The hostfile the ``hosts`` options name, filtered by --include/--exclude."""
    return load_hostfile(values["path"]).select(values.get("include", ()), values.get("exclude", ()))


def spec_from_options(kwargs: dict[str, Any]) -> LaunchSpec:
    """Pop the plan options out of ``kwargs`` and build the ``LaunchSpec`` (reads the hostfile, a
    recipe file and the environment the python profiles forward: the only I/O here)."""
    from glm45_launch.core.overrides import build_overrides

    got = take(kwargs, PLAN + LAUNCH + NETCHECK)  # LAUNCH, NETCHECK: only where the command takes them
    return LaunchSpec(
        hostfile=hostfile_from(got["hosts"]), **got["spec"], variant=Variant(**got.get("variant", {})),
        overrides=build_overrides(**got.get("overrides", {})), launcher_env=launcher_env(),
        netcheck=netcheck_from(got.get("netcheck")),
    )


# A flag that makes other options moot: both on one command line is a usage error, not a silent no-op.
MOOT = {
    "no_wait": (("health_interval", "health_timeout", "stall_timeout", "host_wait"),
                "up returns once the job is submitted: no health watch, no restart"),
    "no_watch": (("health_interval", "stall_timeout"), "the health watch is off"),
    "no_collect": (("collect_timeout",), "no diagnostics are collected"),
    "no_netcheck": (("netcheck_backend", "netcheck_sizes", "netcheck_timeout", "min_busbw_node", "min_busbw_cluster"),
                    "the network check is off"),
}


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def _refuse_moot(ctx: click.Context) -> None:
    for flag, (moot, why) in MOOT.items():
        if not (ctx.params.get(flag) and _given(ctx, flag)):
            continue
        for name in moot:
            if name in ctx.params and _given(ctx, name):
                raise LaunchError(f"{_decl(name)} with {_decl(flag)}: {why}; drop one of them")


def _decl(name: str) -> str:
    return by_name(name).decls[0]


def watch_from_options(kwargs: dict[str, Any]) -> WatchSettings:
    """Pop the watch options out of ``kwargs`` and build ``WatchSettings``: options that make each
    other moot are refused here (what the plan cannot run, ``build_operations`` refuses)."""
    from glm45_launch.core.operations import WatchSettings

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        _refuse_moot(ctx)
    return WatchSettings(**take(kwargs, WATCH).get("watch", {}))


def ssh_from_options(kwargs: dict[str, Any], user: str) -> SshOptions:
    """Pop the SSH options out of ``kwargs`` and build ``SshOptions``."""
    from glm45_launch.runtime.ssh import SshOptions

    values = take(kwargs, SSH).get("ssh", {})
    for path in values.get("identity", ()):
        if not os.path.isfile(path):
            raise LaunchError(f"--identity: {path}: no such key file")
    ctx = click.get_current_context(silent=True)
    if ctx is not None and user == "root" and "ssh_user" in ctx.params and not _given(ctx, "ssh_user"):
        user = None  # not given: ~/.ssh/config's User for the host, else root (as Fabric reads it)
    return SshOptions(user=user, **values)


def output_format(*choices: str) -> Callable[[F], F]:
    """The one output flag: ``--format text|json`` (``json`` on stdout), with ``--json`` kept as a
    hidden alias of ``--format json``. The command gets ``fmt``."""
    names = ("text", "json", *choices)

    def decorate(fn: F) -> F:
        fn = click.option("--json", "fmt", flag_value="json", hidden=True,
                          help="Alias of --format json.")(fn)
        return click.option("--format", "fmt", type=click.Choice(names), default="text", show_default=True,
                            help="text: tables on stderr; json: the same facts on stdout.")(fn)

    return decorate

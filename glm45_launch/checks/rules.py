"""Config validation: pure checks on a plan's train.py arguments, runtime env and hostfile.

Every check returns ``Problem``s whose message is one line naming the flags involved. The
rules are the trainer's own, restated here so a bad config fails in a second instead of
after the cluster is up (references in the comments; facts carried over, not code):

* Megatron-LM ``megatron/training/arguments.py`` (``validate_args``) and megatron-core
  ``parallel_state.initialize_model_parallel`` / ``TransformerConfig.__post_init__``;
* slime / miles ``utils/arguments.py`` (``slime_validate_args``/``miles_validate_args``)
  and ``backends/sglang_utils/arguments.py`` (``validate_args``).

Pure and light: no I/O, no third-party imports; ``validate_libs`` adds the checks that need
megatron-core and sglang installed. ``check_plan`` is what ``plan`` (as warnings), ``validate``
and ``up`` (refusing unless ``--force``) run; preflight can reuse ``check_args``.
"""

from __future__ import annotations

import ast
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from glm45_launch.checks.cluster_rules import GPUS, NODES, disaggregation_problems, node_gpu_problems, times
from glm45_launch.checks.train_args import SGLANG_DP, SGLANG_EP, Problem, TrainArgs
from glm45_launch.core.plan import Plan
from glm45_launch.core.runtime_env import ENV_NAME
from glm45_launch.errors import LaunchError

_MAX_PATTERN = 100_000  # a --moe-layer-freq list longer than this is refused, not built


def parse_layer_pattern(text: str) -> int | list[int]:
    """``--moe-layer-freq`` as Megatron reads it, without ``eval``.

    Megatron-LM's ``moe_freq_type`` returns ``int(x)``, or ``eval(x)`` when ``x`` starts
    with ``[``: a Python list expression such as ``[0]*3+[1]*89``. Only int/list literals,
    ``+`` and ``*`` are accepted here, and the result is bounded in size.
    Raises ``ValueError`` with a one-line reason.
    """
    text = text.strip()
    if not text.startswith("["):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither a whole number nor a [..] list expression") from None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ValueError(f"{text!r} is not a valid list expression") from None

    def size(node: ast.AST) -> int:
        """Length of the list ``node`` builds, computed before building it."""
        if isinstance(node, ast.List):
            return len(node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return size(node.left) + size(node.right)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if isinstance(node.right, ast.Constant):
                return size(node.left) * _count(node.right)
            return size(node.right) * _count(node.left)
        raise ValueError("only [..] lists, + and * are allowed")

    def _count(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 0:
            return node.value
        raise ValueError("a list can only be repeated a whole number of times")

    def build(node: ast.AST) -> list[int]:
        if isinstance(node, ast.List):
            out = []
            for elt in node.elts:
                if not (isinstance(elt, ast.Constant) and type(elt.value) is int):
                    raise ValueError("list items must be whole numbers")
                out.append(elt.value)
            return out
        assert isinstance(node, ast.BinOp)
        if isinstance(node.op, ast.Add):
            return build(node.left) + build(node.right)
        if isinstance(node.right, ast.Constant):
            return build(node.left) * _count(node.right)
        return build(node.right) * _count(node.left)

    try:
        n = size(tree.body)
        if n > _MAX_PATTERN:
            raise ValueError(f"the list would have {n} entries")
        return build(tree.body)
    except RecursionError:
        raise ValueError(f"{text!r} is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None


def pipeline_split(num_layers: int, pp: int, first: int | None, last: int | None) -> list[int] | str:
    """Layers per pipeline stage, or why they cannot be split.

    Megatron: without ``--decoder-first/last-pipeline-num-layers`` the layers must divide
    evenly; with them, the remaining layers must divide over the remaining stages
    (megatron-core ``get_num_layers_to_build`` / ``TransformerConfig.__post_init__``).
    """
    if first is None and last is None:
        if num_layers % pp:
            return f"{num_layers} layers do not split evenly over {pp} pipeline stages"
        return [num_layers // pp] * pp
    if pp < 2:
        return "uneven pipeline stages need --pipeline-model-parallel-size > 1"
    middle = pp - (first is not None) - (last is not None)
    rest = num_layers - (first or 0) - (last or 0)
    if rest < 0 or (middle == 0 and rest != 0) or (middle and rest % middle):
        given = [f"--decoder-{w}-pipeline-num-layers {v}" for w, v in (("first", first), ("last", last))
                 if v is not None]
        return (f"{num_layers} layers minus {' and '.join(given)} do not split evenly "
                f"over the {middle} other stage(s)")
    per = rest // middle if middle else 0
    stages = [per] * pp
    if first is not None:
        stages[0] = first
    if last is not None:
        stages[-1] = last
    return stages


TP, PP, CP = "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--context-parallel-size"
EP, ETP = "--expert-model-parallel-size", "--expert-tensor-parallel-size"
_Add = Callable[[str, Sequence[str], str], None]


@dataclass(frozen=True)
class _Sizes:
    """Parallel sizes as the trainer reads them (None: unreadable), and what follows."""

    tp: int | None
    pp: int | None
    ep: int | None
    world: int | None
    dp: int | None
    colocated: str  # "the 64 colocated GPUs (...)", for messages


def check_args(args: TrainArgs) -> list[Problem]:
    """Every pure rule on train.py's arguments alone (no hostfile); preflight reuses it."""
    out: list[Problem] = []

    def add(code: str, flags: Sequence[str], message: str) -> None:
        out.append(Problem(code, tuple(flags), message))

    args.check_numbers()
    sizes = _parallel(args, add)
    _model(args, add, sizes)
    _rollout(args, add, sizes)
    _trainer(args, add, sizes)
    return args.problems + out


def _parallel(args: TrainArgs, add: _Add) -> _Sizes:
    """World size vs TP/PP/CP/EP/ETP."""
    # slime/miles --actor-num-nodes default 1, --actor-num-gpus-per-node default 8.
    nodes, gpus = args.int(NODES, 1), args.int(GPUS, 8)
    # Megatron defaults: every parallel size 1; ETP defaults to TP.
    tp, pp, cp, ep = args.int(TP, 1), args.int(PP, 1), args.int(CP, 1), args.int(EP, 1)
    etp = args.int(ETP, tp)
    for flag, value in ((NODES, nodes), (GPUS, gpus), (TP, tp), (PP, pp), (CP, cp), (EP, ep), (ETP, etp)):
        if value is not None and value < 1:
            add("parallel-size", [flag], f"{flag} must be >= 1, got {value}")
    world: int | None = None
    dp: int | None = None
    world_text = colocated = ""

    # World size vs model parallelism: Megatron's initialize_model_parallel requires
    # world % (TP*PP*CP) == 0; DP = world // (TP*PP*CP) must be >= 1.
    if nodes and gpus and tp and pp and cp and ep and etp and min(nodes, gpus, tp, pp, cp, ep, etp) >= 1:
        world = nodes * gpus
        model = tp * pp * cp
        world_text = f"world size {world} ({times([(NODES, nodes), (GPUS, gpus)])})"
        colocated = f"the {world} colocated GPUs ({times([(NODES, nodes), (GPUS, gpus)])})"
        if model > world:
            add("data-parallel", [TP, PP, CP, NODES, GPUS],
                f"{times([(TP, tp), (PP, pp), (CP, cp)])} = {model} GPUs per model replica exceeds the "
                f"{world_text}: data-parallel size would be 0")
        elif world % model:
            add("data-parallel", [TP, PP, CP, NODES, GPUS],
                f"{times([(TP, tp), (PP, pp), (CP, cp)])} = {model} does not divide the {world_text}: "
                f"data-parallel size would be {world / model:.3g}")
        else:
            dp = world // model
        # Expert layout: world = ETP * EP * PP * expert-DP (initialize_model_parallel).
        expert = etp * ep * pp
        if world % expert:
            add("expert-layout", [ETP, EP, PP, NODES, GPUS],
                f"{times([(ETP, etp), (EP, ep), (PP, pp)])} = {expert} does not divide the {world_text} "
                "(Megatron lays experts out as ETP × EP × PP × expert-DP)")

    return _Sizes(tp, pp, ep, world, dp, colocated)


def _model(args: TrainArgs, add: _Add, sizes: _Sizes) -> None:
    """Model shape vs parallelism: experts, heads, query groups, SP, layer splits, recompute."""
    tp, pp, ep = sizes.tp, sizes.pp, sizes.ep
    # Model shape vs parallelism.
    layers = args.int("--num-layers")
    heads = args.int("--num-attention-heads")
    experts = args.int("--num-experts")
    if ep is not None and ep > 1 and not args.has("--num-experts"):
        add("experts", [EP, "--num-experts"], f"{EP} {ep} needs --num-experts (a MoE model)")
    if experts is not None and ep is not None and ep >= 1 and experts % ep:
        add("experts", ["--num-experts", EP],
            f"--num-experts {experts} is not divisible by {EP} {ep}")
    if heads is not None and tp is not None and tp >= 1 and heads % tp:
        add("heads", ["--num-attention-heads", TP],
            f"--num-attention-heads {heads} is not divisible by {TP} {tp}")
    if args.has("--group-query-attention"):
        groups = args.int("--num-query-groups")
        # megatron-core TransformerConfig: groups must be a multiple or a divisor of TP.
        if groups is not None and tp is not None and tp >= 1 and groups >= 1 and groups % tp and tp % groups:
            add("query-groups", ["--num-query-groups", TP],
                f"--num-query-groups {groups} is neither a multiple nor a divisor of {TP} {tp}")
        if groups is not None and heads is not None and groups >= 1 and heads % groups:
            add("query-groups", ["--num-query-groups", "--num-attention-heads"],
                f"--num-attention-heads {heads} is not divisible by --num-query-groups {groups}")
    if args.has("--sequence-parallel") and tp == 1:
        # Megatron-LM silently turns it off; megatron-core's config refuses it outright.
        add("sequence-parallel", ["--sequence-parallel", TP],
            f"--sequence-parallel needs {TP} > 1, got 1")
    if (experts is not None or args.has("--num-experts")) and tp is not None and tp > 1 \
            and not args.has("--sequence-parallel"):
        # Megatron-LM validate_args: "When using MoE and tensor parallelism, sequence
        # parallelism must be used."
        add("sequence-parallel", ["--sequence-parallel", TP, "--num-experts"],
            f"a MoE model (--num-experts {args.text('--num-experts')}) with {TP} {tp} needs --sequence-parallel")

    stages: list[int] | None = None
    if layers is not None and pp is not None and pp >= 1:
        first = args.int("--decoder-first-pipeline-num-layers")
        last = args.int("--decoder-last-pipeline-num-layers")
        split = pipeline_split(layers, pp, first, last)
        if isinstance(split, str):
            flags = ["--num-layers", PP] + [f for f in ("--decoder-first-pipeline-num-layers",
                                                         "--decoder-last-pipeline-num-layers") if args.has(f)]
            hint = "" if first or last else " (give --decoder-first/last-pipeline-num-layers)"
            add("pipeline-split", flags, f"--num-layers {layers} / {PP} {pp}: {split}{hint}")
        else:
            stages = split

    freq = args.text("--moe-layer-freq")
    if freq is not None:
        try:
            pattern = parse_layer_pattern(freq)
        except ValueError as exc:
            add("moe-layer-freq", ["--moe-layer-freq"], f"--moe-layer-freq {exc}")
        else:
            if isinstance(pattern, list):
                if layers is not None and len(pattern) != layers:
                    add("moe-layer-freq", ["--moe-layer-freq", "--num-layers"],
                        f"--moe-layer-freq {freq} has {len(pattern)} entries but --num-layers is {layers}")
                if any(v not in (0, 1) for v in pattern):
                    add("moe-layer-freq", ["--moe-layer-freq"],
                        f"--moe-layer-freq {freq}: entries must be 0 (dense) or 1 (MoE)")
            elif pattern < 1:
                add("moe-layer-freq", ["--moe-layer-freq"], f"--moe-layer-freq {freq} must be >= 1")

    # Activation recomputation: between 1 and the layers of a pipeline stage (TransformerConfig).
    granularity = args.text("--recompute-granularity")
    recompute = args.int("--recompute-num-layers")
    if granularity == "full" and recompute is not None:
        if recompute < 1:
            add("recompute", ["--recompute-num-layers"], f"--recompute-num-layers must be >= 1, got {recompute}")
        elif stages and recompute > min(stages):
            add("recompute", ["--recompute-num-layers", "--num-layers", PP],
                f"--recompute-num-layers {recompute} exceeds the {min(stages)} layers of a pipeline stage "
                f"(--num-layers {layers} / {PP} {pp})")
    elif granularity == "full" and not args.has("--recompute-num-layers"):
        add("recompute", ["--recompute-granularity", "--recompute-num-layers"],
            "--recompute-granularity full needs --recompute-num-layers")


def _rollout(args: TrainArgs, add: _Add, sizes: _Sizes) -> None:
    """Rollout engines and the SGLang parallelism inside one engine."""
    world, colocated = sizes.world, sizes.colocated
    # Rollout engines: colocated, the engines use the actor's GPUs (slime: rollout_num_gpus =
    # actor_num_gpus_per_node * actor_num_nodes unless given).
    engine = args.int("--rollout-num-gpus-per-engine", 1)
    rollout_gpus = args.int("--rollout-num-gpus")
    if rollout_gpus is None and args.has("--colocate") and world is not None:
        rollout_gpus = world
    if engine is not None and engine < 1:
        add("rollout-engine", ["--rollout-num-gpus-per-engine"],
            f"--rollout-num-gpus-per-engine must be >= 1, got {engine}")
    elif engine is not None and rollout_gpus and rollout_gpus % engine:
        where = (f"--rollout-num-gpus {rollout_gpus}" if args.has("--rollout-num-gpus")
                 else colocated)
        add("rollout-engine", ["--rollout-num-gpus-per-engine", "--rollout-num-gpus"
                               if args.has("--rollout-num-gpus") else NODES],
            f"{where} are not divisible by --rollout-num-gpus-per-engine {engine}")

    # SGLang inside one engine (TP = engine size): slime/miles validate_args asserts
    # dp > 1 => --sglang-enable-dp-attention; sglang needs dp | tp and ep <= tp.
    dp_flag = args.first_of(SGLANG_DP)
    sg_dp = args.int(dp_flag, 1) if dp_flag else 1
    if sg_dp is not None and engine is not None and engine >= 1:
        if sg_dp < 1 or engine % sg_dp:
            add("sglang-dp", [dp_flag or SGLANG_DP[0], "--rollout-num-gpus-per-engine"],
                f"{dp_flag} {sg_dp} does not divide the engine size --rollout-num-gpus-per-engine {engine}")
        if sg_dp > 1 and not args.has("--sglang-enable-dp-attention"):
            add("sglang-dp", [dp_flag or SGLANG_DP[0], "--sglang-enable-dp-attention"],
                f"{dp_flag} {sg_dp} needs --sglang-enable-dp-attention")
    if args.text("--update-weight-transfer-mode") == "p2p" and args.has("--colocate"):
        # miles validate_args: "P2P weight transfer mode is not compatible with --colocate".
        add("disaggregation", ["--update-weight-transfer-mode", "--colocate"],
            "--update-weight-transfer-mode p2p needs the rollout on GPUs of its own: drop --colocate "
            "(give --rollout-num-gpus) or use broadcast")
    ep_flag = args.first_of(SGLANG_EP)
    sg_ep = args.int(ep_flag, 1) if ep_flag else 1
    if ep_flag and sg_ep is not None and engine is not None and engine >= 1 and not 1 <= sg_ep <= engine:
        add("sglang-ep", [ep_flag, "--rollout-num-gpus-per-engine"],
            f"{ep_flag} {sg_ep} must be between 1 and the engine size --rollout-num-gpus-per-engine {engine}")


def _trainer(args: TrainArgs, add: _Add, sizes: _Sizes) -> None:
    """The trainer's batch, sampling, KL, checkpoint and eval rules."""
    dp = sizes.dp
    # Trainer batch rules (slime/miles validate_args).
    rbs = args.int("--rollout-batch-size")
    n = args.int("--n-samples-per-prompt", 1)
    steps = args.int("--num-steps-per-rollout")
    for flag, value in (("--rollout-batch-size", rbs), ("--n-samples-per-prompt", n),
                        ("--num-steps-per-rollout", steps)):
        if value is not None and value < 1:
            add("batch", [flag], f"{flag} must be >= 1, got {value}")
    if rbs and n and steps and rbs > 0 and n > 0 and steps > 0:
        samples = rbs * n
        if samples % steps:
            add("batch", ["--rollout-batch-size", "--n-samples-per-prompt", "--num-steps-per-rollout"],
                f"--rollout-batch-size {rbs} × --n-samples-per-prompt {n} = {samples} samples do not split "
                f"into --num-steps-per-rollout {steps} equal global batches")
        else:
            gbs = samples // steps
            given = args.int("--global-batch-size")
            if given is not None and given != gbs:
                add("batch", ["--global-batch-size", "--num-steps-per-rollout"],
                    f"--global-batch-size {given} != {samples} samples / --num-steps-per-rollout {steps} = {gbs}")
            mbs = args.int("--micro-batch-size", 1)
            # Megatron-LM: global batch divisible by micro batch × data-parallel size.
            if dp and mbs and mbs > 0 and gbs % (mbs * dp):
                add("batch", ["--rollout-batch-size", "--n-samples-per-prompt", "--num-steps-per-rollout",
                              "--micro-batch-size"],
                    f"the global batch --rollout-batch-size {rbs} × --n-samples-per-prompt {n} / "
                    f"--num-steps-per-rollout {steps} = {gbs} is not divisible by --micro-batch-size {mbs} × "
                    f"data-parallel size {dp}")
    over = args.int("--over-sampling-batch-size")
    if over is not None and rbs is not None and over < rbs:
        add("batch", ["--over-sampling-batch-size", "--rollout-batch-size"],
            f"--over-sampling-batch-size {over} is smaller than --rollout-batch-size {rbs}")
    if not args.has("--num-rollout") and not args.has("--num-epoch"):
        add("batch", ["--num-rollout", "--num-epoch"], "give --num-rollout or --num-epoch")
    if args.has("--use-dynamic-batch-size") and not args.has("--max-tokens-per-gpu"):
        add("batch", ["--use-dynamic-batch-size", "--max-tokens-per-gpu"],
            "--use-dynamic-batch-size needs --max-tokens-per-gpu")

    temperature = args.float("--rollout-temperature", 1.0)
    if temperature is not None and not temperature > 0:
        add("temperature", ["--rollout-temperature"],
            f"--rollout-temperature must be > 0 (0 is greedy decoding), got {args.text('--rollout-temperature')}")

    # KL: a reference model is loaded from --ref-load when either KL term is on.
    kl_coef = args.float("--kl-coef", 0.0)
    kl_loss_coef = args.float("--kl-loss-coef", 0.0)
    if (args.has("--use-kl-loss") or (kl_coef is not None and kl_coef != 0)) and not args.text("--ref-load"):
        on = "--use-kl-loss" if args.has("--use-kl-loss") else "--kl-coef"
        shown = on if on == "--use-kl-loss" else f"--kl-coef {args.text('--kl-coef')}"
        add("kl", [on, "--ref-load"], f"{shown} needs --ref-load (the reference model)")
    if kl_coef and kl_loss_coef:
        add("kl", ["--kl-coef", "--kl-loss-coef"],
            f"only one of --kl-coef {args.text('--kl-coef')} and --kl-loss-coef {args.text('--kl-loss-coef')} "
            "may be non-zero")

    if args.has("--save-interval") and not args.text("--save"):
        add("save", ["--save-interval", "--save"], "--save-interval needs --save (a checkpoint directory)")
    data = args.values("--eval-prompt-data")
    if args.has("--eval-interval") and not data and not args.has("--eval-config"):
        add("eval", ["--eval-interval", "--eval-prompt-data"],
            "--eval-interval needs --eval-prompt-data NAME PATH [NAME PATH ...] (or --eval-config)")
    elif data is not None and (len(data) < 2 or len(data) % 2):
        # slime/miles read it as NAME PATH pairs: an even number of words, at least two.
        words = f"{len(data)} word{'' if len(data) == 1 else 's'}" + (f": {' '.join(data)}" if data else "")
        add("eval", ["--eval-prompt-data"], f"--eval-prompt-data takes NAME PATH pairs, got {words}")
    if args.has("--moe-enable-deepep") and args.text("--moe-token-dispatcher-type") not in ("flex", None):
        add("dispatcher", ["--moe-enable-deepep", "--moe-token-dispatcher-type"],
            f"--moe-enable-deepep needs --moe-token-dispatcher-type flex (the last one given is "
            f"{args.text('--moe-token-dispatcher-type')})")


def local_only_address(host: str) -> str | None:
    """"a loopback" / "an unspecified" when ``host`` means this machine wherever it is used
    (127.x, ::1, localhost, 0.0.0.0, ::), else None. Pure: names other than localhost are
    not resolved."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return "a loopback"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "an unspecified"
    return "a loopback" if ip.is_loopback else None


def check_plan(plan: Plan) -> list[Problem]:
    """Every pure check on ``plan``: its train.py arguments, runtime env and hostfile."""
    args = TrainArgs(plan.train_argv)
    out = check_args(args)
    nodes = len(plan.cluster_hosts)
    actor_nodes = args.int(NODES, 1)
    # The bash recipe submits the job whatever joined: with fewer nodes than the recipe asks
    # for, the placement group waits forever.
    if actor_nodes is not None and nodes < actor_nodes:
        out.append(Problem("nodes", (NODES,), f"{NODES} {actor_nodes} but the cluster has {nodes} node(s): "
                           "the job would wait for GPUs that never come"))
    out += node_gpu_problems(args, plan)
    out += disaggregation_problems(args, plan)
    kind = local_only_address(plan.head)
    workers = len(plan.worker_steps)
    if kind and workers:
        out.append(Problem("head-address", ("--head",),
                           f"--head {plan.head} is {kind} address but {workers} worker(s) join the cluster: "
                           f"workers would run ray start --address={plan.head}:{plan.cluster.ray_port} and "
                           "join themselves (give the head's address "
                           "on the cluster network: --head or MLP_WORKER_0_HOST)"))
    seen: set[str] = set()
    for name, value in plan.env_vars:
        if not ENV_NAME.match(name):
            out.append(Problem("runtime-env", (name,), f"runtime env: {name!r} is not an environment variable name"))
        elif name in seen:
            out.append(Problem("runtime-env", (name,), f"runtime env: {name} is given twice"))
        elif "\x00" in value:
            out.append(Problem("runtime-env", (name,), f"runtime env: {name} holds a NUL byte"))
        seen.add(name)
    return out


def require_valid(plan: Plan, force: bool = False) -> list[Problem]:
    """Raise ``LaunchError`` naming the first problem (and how many) unless ``force``.

    Returns the problems (empty when the config is valid), so a forced caller can warn.
    """
    problems = check_plan(plan)
    if problems and not force:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LaunchError(
            f"invalid config: {problems[0].message}{more}; `glm45-launch validate` lists them all, "
            "--force runs anyway"
        )
    return problems

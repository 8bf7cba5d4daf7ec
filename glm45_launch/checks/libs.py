"""Validation with the real libraries, where they are installed (``glm45-launch[validate]``).

* megatron-core: build its ``TransformerConfig`` from train.py's arguments and report what
  it rejects; split the layers over the pipeline with its own helpers
  (``get_num_layers_to_build``, ``get_transformer_layer_offset``,
  ``get_gpt_decoder_block_spec(use_transformer_engine=False)``, which also checks the
  ``--moe-layer-freq`` length); lay out the TP/CP/DP/PP and EP/ETP/expert-DP rank groups
  with its ``parallel_state.RankGenerator``, as ``initialize_model_parallel`` does.
* sglang: every ``--sglang-*`` train arg must be an option of the installed sglang's
  ``ServerArgs``. Importing sglang pulls CUDA-only modules, so its source is read with
  ``ast`` instead (``srt/server_args.py`` and, in sglang >= 0.5.2x, the field namespaces
  under ``srt/arg_groups/fields/``).

Nothing here is imported by ``plan``; the libraries are imported lazily, and a library
that is missing or broken is a ``skipped: ...`` note, never a crash.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import importlib.util
import re
import typing
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm45_launch.checks.rules import (
    CP,
    EP,
    ETP,
    GPUS,
    NODES,
    PP,
    TP,
    parse_layer_pattern,
)
from glm45_launch.checks.train_args import Problem, TrainArgs
from glm45_launch.core.flags import flag_names
from glm45_launch.core.plan import Plan

INSTALL_HINT = "pip install 'glm45-launch[validate]'"
# Options the framework (slime / miles) adds to the --sglang-* namespace itself
# (backends/sglang_utils/arguments.py: router options, server concurrency, --sglang-config).
FRAMEWORK_SGLANG_OPTIONS = frozenset({
    "--sglang-router-ip", "--sglang-router-port", "--sglang-router-policy",
    "--sglang-router-request-timeout-secs", "--sglang-server-concurrency", "--sglang-config",
})
# train.py flag -> TransformerConfig field, where Megatron-LM's names differ.
RENAMED = {
    "--num-experts": "num_moe_experts",
    "--decoder-first-pipeline-num-layers": "num_layers_in_first_pipeline_stage",
    "--decoder-last-pipeline-num-layers": "num_layers_in_last_pipeline_stage",
}
# Left out of the validation config: needs Transformer Engine to construct.
LEFT_OUT = frozenset({"--moe-permute-fusion"})
ORDER = "tp-cp-ep-dp-pp"  # megatron-core initialize_model_parallel's default order


@dataclass
class LibReport:
    """What the library checks found: problems, one-line notes (incl. skips), layout lines."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    layout: list[str] = field(default_factory=list)


def _one_line(exc: BaseException, limit: int = 240) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --- megatron-core ----------------------------------------------------------------------------


def _load_megatron() -> tuple[dict[str, Any] | None, str]:
    """The megatron-core pieces used here, or (None, why skipped)."""
    if not _installed("megatron") or not _installed("megatron.core"):
        return None, f"skipped: megatron-core not installed ({INSTALL_HINT})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch
            from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
            from megatron.core.parallel_state import RankGenerator
            from megatron.core.transformer.enums import AttnBackend
            from megatron.core.transformer.transformer_block import get_num_layers_to_build
            from megatron.core.transformer.transformer_config import TransformerConfig
            from megatron.core.transformer.transformer_layer import get_transformer_layer_offset
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return None, f"skipped: megatron-core not importable ({type(exc).__name__}: {_one_line(exc, 120)})"
    return {
        "torch": torch, "TransformerConfig": TransformerConfig, "RankGenerator": RankGenerator,
        "AttnBackend": AttnBackend, "get_num_layers_to_build": get_num_layers_to_build,
        "get_transformer_layer_offset": get_transformer_layer_offset,
        "get_gpt_decoder_block_spec": get_gpt_decoder_block_spec,
        "version": _version("megatron-core"),
    }, ""


def _convert(hint: Any, values: Sequence[str]) -> Any:
    """One train.py value as the TransformerConfig field typed ``hint`` wants it."""
    origin, inner = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        options = [t for t in inner if t is not type(None)]
        lists = [t for t in options if typing.get_origin(t) is list]
        scalars = [t for t in options if typing.get_origin(t) is not list]
        if len(values) > 1 and lists:
            return _convert(lists[0], values)
        if scalars:
            return _convert(scalars[0], values)
        return _convert(options[0], values)
    if origin is typing.Literal:
        kind = type(inner[0]) if inner else str
        return kind(values[0])
    if origin is list:
        kind = inner[0] if inner else str
        return [kind(v) for v in values]
    if hint is bool:
        return True
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint[values[0]]
    if hint in (int, float, str):
        return hint(values[0])
    raise TypeError(f"unsupported field type {hint!r}")


def transformer_config_kwargs(args: TrainArgs, lib: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """TransformerConfig kwargs from train.py's args, as Megatron-LM's
    ``core_transformer_config_from_args`` derives them (every arg naming a field), and
    field -> flag for messages."""
    config_cls = lib["TransformerConfig"]
    torch = lib["torch"]
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    kwargs: dict[str, Any] = {}
    flags: dict[str, str] = {}
    for flag, values in args.last.items():
        if flag in LEFT_OUT:
            continue
        name = RENAMED.get(flag, flag[2:].replace("-", "_"))
        if name not in fields:
            continue
        if name == "moe_layer_freq":
            try:
                kwargs[name] = parse_layer_pattern(values[0] if values else "")
            except ValueError:
                continue  # the pure check reports it
        else:
            try:
                kwargs[name] = _convert(hints[name], values)
            except (TypeError, ValueError, KeyError, IndexError):
                continue  # unreadable values are the pure checks' business
        flags[name] = flag
    if args.has("--disable-bias-linear"):
        kwargs["add_bias_linear"], flags["add_bias_linear"] = False, "--disable-bias-linear"
    if args.has("--swiglu"):
        kwargs["gated_linear_unit"], flags["gated_linear_unit"] = True, "--swiglu"
        kwargs["activation_func"] = torch.nn.functional.silu
    if not args.has("--group-query-attention"):
        kwargs.pop("num_query_groups", None)  # Megatron-LM ignores it without GQA
    dtype = torch.bfloat16 if args.has("--bf16") else torch.float16 if args.has("--fp16") else torch.float32
    kwargs["params_dtype"] = kwargs["pipeline_dtype"] = dtype  # Megatron-LM: pipeline_dtype = params_dtype
    return kwargs, flags


def _flags_in(message: str, flags: dict[str, str]) -> list[str]:
    return [flag for name, flag in flags.items() if re.search(rf"\b{re.escape(name)}\b", message)]


def _ranks(group: Sequence[int]) -> str:
    if len(group) > 1 and list(group) == list(range(group[0], group[0] + len(group))):
        return f"[{group[0]}-{group[-1]}]"
    if len(group) <= 6:
        return "[" + ",".join(map(str, group)) + "]"
    step = group[1] - group[0]
    if all(b - a == step for a, b in zip(group, group[1:], strict=False)):
        return f"[{group[0]},{group[1]},..,{group[-1]}]"
    return "[" + ",".join(map(str, group[:4])) + f",..,{group[-1]}]"


def _groups_line(name: str, groups: list[list[int]], gpus_per_node: int) -> str:
    shown = ", ".join(_ranks(g) for g in groups[:3]) + (f", .., {_ranks(groups[-1])}" if len(groups) > 3 else "")
    nodes = max(len({r // gpus_per_node for r in g}) for g in groups)
    span = "within a node" if nodes == 1 else f"spans {nodes} nodes"
    return f"  {name:<10} {len(groups)} group(s) of {len(groups[0])} ({span}): {shown}"


def check_megatron(args: TrainArgs, report: LibReport, show_layout: bool = False, gpus_per_node: int = 8) -> None:
    """TransformerConfig, the pipeline split and the rank layout per megatron-core."""
    lib, skipped = _load_megatron()
    if lib is None:
        report.notes.append(skipped)
        if show_layout:
            report.layout.append(f"rank layout {skipped}")
        return
    version = lib["version"]
    kwargs, flags = transformer_config_kwargs(args, lib)
    if "num_layers" not in kwargs or "hidden_size" not in kwargs or "num_attention_heads" not in kwargs:
        report.notes.append(f"megatron-core {version}: skipped TransformerConfig (needs --num-layers, "
                            "--hidden-size and --num-attention-heads)")
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = lib["TransformerConfig"](**kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the library raises is the finding
        named = _flags_in(str(exc), flags)
        where = f" ({', '.join(named)})" if named else ""
        report.problems.append(Problem(
            "megatron-config", tuple(named),
            f"megatron-core {version} TransformerConfig rejects the model/parallel args{where}: {_one_line(exc)}"))
        return

    pp = config.pipeline_model_parallel_size
    stages: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for rank in range(pp):
                count = lib["get_num_layers_to_build"](config, pp_rank=rank)
                offset = lib["get_transformer_layer_offset"](config, pp_rank=rank)
                spec = lib["get_gpt_decoder_block_spec"](
                    config, use_transformer_engine=False, normalization=config.normalization, pp_rank=rank)
                moe = sum(1 for s in spec.layer_specs if "MoE" in getattr(s.submodules.mlp.module, "__name__", ""))
                if len(spec.layer_specs) != count:
                    raise AssertionError(f"stage {rank} builds {len(spec.layer_specs)} layer specs, expected {count}")
                stages.append(f"{offset}-{offset + count - 1} ({count - moe} dense + {moe} MoE)" if count
                              else "none")
    except Exception as exc:  # noqa: BLE001 - the helpers' assertion text is the finding
        named = _flags_in(str(exc), flags) or [f for f in ("--num-layers", PP, "--moe-layer-freq") if args.has(f)]
        report.problems.append(Problem(
            "megatron-layers", tuple(named),
            f"megatron-core {version} cannot split the layers ({', '.join(named)}): {_one_line(exc)}"))
        return
    split = "/".join(s.split(" ")[0] for s in stages)
    report.notes.append(f"megatron-core {version}: TransformerConfig accepted; {config.num_layers} layers over "
                        f"{pp} pipeline stage(s): {split}")
    if show_layout:
        report.layout += [f"  PP stage {r}: layers {s}" for r, s in enumerate(stages)]
        _layout(args, config, lib, report, gpus_per_node)


def _layout(args: TrainArgs, config: Any, lib: dict[str, Any], report: LibReport, gpus_per_node: int) -> None:
    """Rank groups as initialize_model_parallel builds them (decoder and expert generators)."""
    nodes, gpus = args.int(NODES, 1), args.int(GPUS, 8)
    if not nodes or not gpus:
        return
    world = nodes * gpus
    tp, pp, cp = config.tensor_model_parallel_size, config.pipeline_model_parallel_size, config.context_parallel_size
    ep, etp = config.expert_model_parallel_size, config.expert_tensor_parallel_size
    if world % (tp * pp * cp) or world % (etp * ep * pp):
        report.layout.append(f"  (no rank layout: world size {world} does not fit {TP}/{PP}/{CP}/{EP}/{ETP})")
        return
    dp, edp = world // (tp * pp * cp), world // (etp * ep * pp)
    rank_generator = lib["RankGenerator"]
    try:
        dense = rank_generator(tp=tp, ep=1, dp=dp, pp=pp, cp=cp, order=ORDER)
        expert = rank_generator(tp=etp, ep=ep, dp=edp, pp=pp, cp=1, order=ORDER)
        if dense.get_ranks("pp") != expert.get_ranks("pp"):
            report.problems.append(Problem("expert-layout", (EP, ETP, PP), (
                "megatron-core: the pipeline groups of the dense and the expert layout differ "
                f"({EP} {ep}, {ETP} {etp}, {PP} {pp})")))
        report.layout.insert(0, f"Rank layout (megatron-core RankGenerator, order {ORDER}): world {world} = "
                                f"TP {tp} × CP {cp} × DP {dp} × PP {pp} = ETP {etp} × EP {ep} × expert-DP {edp} × PP {pp}")
        for name, generator, token in (("TP", dense, "tp"), ("CP", dense, "cp"), ("DP", dense, "dp"),
                                       ("PP", dense, "pp"), ("EP", expert, "ep"), ("ETP", expert, "tp"),
                                       ("expert-DP", expert, "dp")):
            report.layout.append(_groups_line(name, generator.get_ranks(token), gpus_per_node))
    except Exception as exc:  # noqa: BLE001 - RankGenerator's own refusal is the finding
        report.problems.append(Problem("rank-layout", (TP, PP, CP, EP, ETP), (
            f"megatron-core RankGenerator refuses {TP} {tp}, {PP} {pp}, {CP} {cp}, {EP} {ep}, {ETP} {etp}: "
            f"{_one_line(exc)}")))


# --- sglang -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SglangOptions:
    """The command-line options of the installed sglang's ServerArgs, read from its source."""

    version: str
    source: str
    options: frozenset[str]  # "--mem-fraction-static", aliases included
    deprecated: dict[str, str]  # option -> what to use instead


def _str_list(node: ast.AST | None) -> list[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def _with_negatives(names: list[str], action: ast.AST | None) -> list[str]:
    """argparse.BooleanOptionalAction also registers ``--no-NAME`` for each ``--NAME``."""
    if getattr(action, "attr", getattr(action, "id", "")) != "BooleanOptionalAction":
        return names
    return names + ["--no-" + n[2:] for n in names if n.startswith("--")]


def _field_options(node: ast.AnnAssign, annotated_only: bool) -> list[str]:
    """CLI names of one ServerArgs field: ``--field-name`` or ``Arg(cli_name=..)``, plus
    ``Arg(aliases=[..])``; none for ``Arg(no_cli=True)`` (sglang arg_utils rules)."""
    assert isinstance(node.target, ast.Name)
    name = "--" + node.target.id.replace("_", "-")
    ann = node.annotation
    is_annotated = (isinstance(ann, ast.Subscript) and isinstance(ann.slice, ast.Tuple)
                    and getattr(ann.value, "id", getattr(ann.value, "attr", "")) in ("A", "Annotated"))
    if not is_annotated:
        return [] if annotated_only else [name]
    assert isinstance(ann, ast.Subscript) and isinstance(ann.slice, ast.Tuple)
    for meta in ann.slice.elts[1:]:
        if isinstance(meta, ast.Constant) and isinstance(meta.value, str):
            return [name]
        if isinstance(meta, ast.Call) and getattr(meta.func, "id", getattr(meta.func, "attr", "")) == "Arg":
            kw = {k.arg: k.value for k in meta.keywords if k.arg}
            if isinstance(kw.get("no_cli"), ast.Constant) and kw["no_cli"].value is True:
                return []
            cli = kw.get("cli_name")
            first = cli.value if isinstance(cli, ast.Constant) and isinstance(cli.value, str) else name
            return _with_negatives([first, *_str_list(kw.get("aliases"))], kw.get("action"))
    return [] if annotated_only else [name]


def read_sglang_options(root: Path, version: str) -> SglangOptions:
    """Parse ``root/srt/server_args.py`` (and the field modules it imports) with ``ast``."""
    source = root / "srt" / "server_args.py"
    tree = ast.parse(source.read_text(encoding="utf-8"), str(source))
    options: set[str] = set()
    deprecated: dict[str, str] = {}
    modules: list[Path] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     and a.value.startswith("--")]
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            options.update(_with_negatives(names, kw.get("action")))
            action = kw.get("action")
            new = kw.get("new_flag")
            if names and "Deprecated" in getattr(action, "id", "") and isinstance(new, ast.Constant):
                for n in names:
                    deprecated[n] = str(new.value)
        elif isinstance(node, ast.ClassDef) and node.name == "ServerArgs":
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    options.update(_field_options(item, annotated_only=False))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sglang.srt.arg_groups.fields."):
            path = root.joinpath(*node.module.split(".")[1:]).with_suffix(".py")  # type: ignore[union-attr]
            if path.is_file():
                modules.append(path)
    # sglang >= 0.5.2x: ServerArgs collects its fields from namespace classes (with _NS_PATH).
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(isinstance(i, ast.Assign) and any(getattr(t, "id", "") == "_NS_PATH" for t in i.targets)
                       for i in node.body):
                continue
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    options.update(_field_options(item, annotated_only=True))
    return SglangOptions(version, str(source), frozenset(options), deprecated)


def _sglang_root() -> Path | None:
    try:
        spec = importlib.util.find_spec("sglang")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _sglang_version(root: Path) -> str:
    try:
        tree = ast.parse((root / "version.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__version__" for t in node.targets):
                if isinstance(node.value, ast.Constant):
                    return str(node.value.value)
    except (OSError, SyntaxError, ValueError):
        pass
    return _version("sglang")


def load_sglang_options() -> SglangOptions | str:
    """The installed sglang's options, or why they could not be read ("skipped: ...")."""
    root = _sglang_root()
    if root is None:
        return "skipped: sglang not installed (pip install --no-deps sglang: its source is read, not imported)"
    try:
        found = read_sglang_options(root, _sglang_version(root))
    except (OSError, SyntaxError, ValueError, RecursionError) as exc:
        return f"skipped: cannot read sglang's ServerArgs under {root} ({type(exc).__name__}: {_one_line(exc, 120)})"
    if len(found.options) < 20:
        return f"skipped: found only {len(found.options)} ServerArgs options in {found.source} (unknown layout)"
    return found


def check_sglang(args: TrainArgs, report: LibReport, options: SglangOptions | str | None = None) -> None:
    """Every ``--sglang-*`` train arg names an option of the installed sglang (or the framework)."""
    found = load_sglang_options() if options is None else options
    if isinstance(found, str):
        report.notes.append(found)
        return
    accepted = {"--sglang-" + o[2:] for o in found.options} | FRAMEWORK_SGLANG_OPTIONS
    given = [f for f in flag_names(args.argv) if f.startswith("--sglang-")]
    bad = 0
    for flag in dict.fromkeys(given):
        if flag in accepted:
            old = found.deprecated.get("--" + flag[len("--sglang-"):])
            if old:
                report.notes.append(f"sglang {found.version}: {flag} is deprecated (sglang says: use "
                                    f"{old.replace('--', '--sglang-')})")
            continue
        bad += 1
        close = difflib.get_close_matches(flag, sorted(accepted), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        report.problems.append(Problem(
            "sglang-option", (flag,),
            f"{flag} is not an option of sglang {found.version} (no ServerArgs option --{flag[9:]}){hint}"))
    report.notes.append(f"sglang {found.version}: {len(set(given)) - bad} of {len(set(given))} --sglang-* "
                        f"option(s) known ({len(found.options)} ServerArgs options read from {found.source})")


def check_libraries(plan: Plan, show_layout: bool = False) -> LibReport:
    """megatron-core and sglang checks on ``plan``'s train.py arguments."""
    args = TrainArgs(plan.train_argv)
    report = LibReport()
    check_megatron(args, report, show_layout=show_layout, gpus_per_node=plan.gpus_per_node)
    check_sglang(args, report)
    return report


def require_sglang_options(plan: Plan, force: bool = False) -> list[Problem]:
    """``up``'s fast library gate (~0.15 s, source only): a misspelt ``--sglang-*`` option
    raises ``LaunchError`` unless ``force``; the megatron-core build (~8 s) stays in ``validate``."""
    from glm45_launch.errors import LaunchError

    report = LibReport()
    check_sglang(TrainArgs(plan.train_argv), report)
    if report.problems and not force:
        more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise LaunchError(f"invalid config: {report.problems[0].message}{more}; --force runs anyway")
    return report.problems

"""Recipe files (--recipe) and overrides (--set/--unset/--extra-args/--env)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glm45_launch import BASH_RECIPE, LaunchError, LaunchSpec, build_plan, parse_hostfile_text
from glm45_launch.cli.main import main
from glm45_launch.core.overrides import apply_overrides, build_overrides, parse_set, parse_unset
from glm45_launch.core.plan import Edit, Overrides
from glm45_launch.core.recipe_file import dump_recipe, load_recipe, parse_recipe_text

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = json.loads((ROOT / "tests/data/golden/glm45-355b-a32b-8node.json").read_text())
HOSTS = parse_hostfile_text("".join(line + "\n" for line in GOLDEN["hostfile"]), "hosts")
HEAD, BASE = GOLDEN["environment"]["MLP_WORKER_0_HOST"], GOLDEN["environment"]["BASE_DIR"]
GOLDEN_SUBMIT = next(a for a in GOLDEN["invocations"] if a[:3] == ["ray", "job", "submit"])


def plan_with(overrides: Overrides = Overrides(), recipe=BASH_RECIPE):  # noqa: B008 - frozen dataclass
    return build_plan(LaunchSpec(hostfile=HOSTS, head=HEAD, base_dir=BASE, recipe=recipe, overrides=overrides))


def groups(plan) -> dict[str, list[str]]:
    return {g: list(w) for g, w in plan.train_groups}


# -- parsing ---------------------------------------------------------------------------

def test_parse_set_forms() -> None:
    assert parse_set("ROLLOUT.--rollout-temperature=0.8") == Edit(
        "ROLLOUT", "--rollout-temperature", ("0.8",), "--set ROLLOUT.--rollout-temperature=0.8")
    assert parse_set("ROLLOUT.--rollout-stop-token-ids=1 2  3").values == ("1", "2", "3")
    assert parse_set("MISC.--use-fault-tolerance").values == ()
    assert parse_set("MISC.--use-fault-tolerance=").values == ()
    assert parse_set("""SGLANG.--sglang-json-model-override-args='{"num_hidden_layers": 5}'""").values == (
        '{"num_hidden_layers": 5}',)
    assert parse_unset("GRPO.--use-tis") == Edit("GRPO", "--use-tis", None, "--unset GRPO.--use-tis")


@pytest.mark.parametrize(("text", "message"), [
    ("ROLLOUT--x=1", "--set 'ROLLOUT--x=1': want GROUP.--flag=VALUE"),
    ("ROLLOUT.x=1", "--set 'ROLLOUT.x=1': want GROUP.--flag=VALUE"),
    (".--x=1", "--set '.--x=1': want GROUP.--flag=VALUE"),
    ("ROLLOUT.--=1", "--set 'ROLLOUT.--=1': '--' is not a --flag"),
    ("ROLLOUT.--a=1 --b 2", "value '--b' looks like a flag"),
    ("ROLLOUT.--a='1", "cannot split the value"),
])
def test_parse_set_errors(text: str, message: str) -> None:
    with pytest.raises(LaunchError) as err:
        parse_set(text)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"env": ["NOEQUALS"]}, "--env 'NOEQUALS': want KEY=VALUE"),
    ({"env": ["1BAD=x"]}, "'1BAD' is not an environment variable name"),
    ({"unsets": ["GRPO"]}, "--unset 'GRPO': want GROUP.--flag"),
    ({"extra_args": ["--a 'b"]}, "--extra-args \"--a 'b\": cannot split"),
])
def test_build_overrides_errors(kwargs: dict[str, list[str]], message: str) -> None:
    with pytest.raises(LaunchError, match=message.replace("(", r"\(")):
        build_overrides(**kwargs)


# -- applying ----------------------------------------------------------------------------

def test_set_replaces_in_place_and_shows_the_difference() -> None:
    plan = plan_with(build_overrides(sets=["ROLLOUT.--rollout-temperature=0.8"]))
    want = list(GOLDEN_SUBMIT)
    want[want.index("--rollout-temperature") + 1] = "0.8"
    assert plan.submit_argv == want
    assert [str(c) for c in plan.overrides] == ["ROLLOUT --rollout-temperature: 1 -> 0.8"]
    assert plan.to_json()["overrides"] == [{"group": "ROLLOUT", "flag": "--rollout-temperature",
                                            "action": "changed", "old": ["1"], "new": ["0.8"]}]


def test_set_appends_a_missing_flag_to_the_group_and_takes_placeholders() -> None:
    plan = plan_with(build_overrides(sets=["CKPT.--save={base_dir}/ckpt", "rollout_args.--use-kl-loss"]))
    got = groups(plan)
    assert got["CKPT"][-2:] == ["--save", f"{BASE}/ckpt"]
    assert got["ROLLOUT"][-1] == "--use-kl-loss"
    assert [str(c) for c in plan.overrides] == [
        f"CKPT --save: added ({BASE}/ckpt)", "ROLLOUT --use-kl-loss: added"]


def test_set_multi_value_flag() -> None:
    plan = plan_with(build_overrides(sets=["ROLLOUT.--rollout-stop-token-ids=1 2"]))
    assert groups(plan)["ROLLOUT"][-3:] == ["--rollout-stop-token-ids", "1", "2"]
    assert [str(c) for c in plan.overrides] == ["ROLLOUT --rollout-stop-token-ids: 151329 151336 151338 -> 1 2"]


def test_set_collapses_repeats_within_a_group() -> None:
    recipe = BASH_RECIPE.with_groups({**BASH_RECIPE.groups, "WANDB": ("--x", "1", "--y", "--x", "2")})
    applied = apply_overrides(recipe, build_overrides(sets=["WANDB.--x=3"]))
    assert applied.recipe.groups["WANDB"] == ("--x", "3", "--y")


def test_unset_removes_and_refuses_what_is_not_there() -> None:
    plan = plan_with(build_overrides(unsets=["GRPO.--use-tis", "SGLANG.--sglang-dp-size"]))
    assert "--use-tis" not in plan.submit_argv and "--sglang-dp-size" not in plan.submit_argv
    assert len(plan.submit_argv) == len(GOLDEN_SUBMIT) - 3
    assert [str(c) for c in plan.overrides] == ["GRPO --use-tis: removed", "SGLANG --sglang-dp-size: removed (was 4)"]
    with pytest.raises(LaunchError, match=r"--unset GRPO.--eval-interval: group GRPO has no --eval-interval "
                                          r"\(it is in EVAL\)"):
        plan_with(build_overrides(unsets=["GRPO.--eval-interval"]))


def test_unknown_group() -> None:
    with pytest.raises(LaunchError) as err:
        plan_with(build_overrides(sets=["ROLOUT.--x=1"]))
    assert str(err.value) == ("--set ROLOUT.--x=1: unknown group 'ROLOUT' (groups: MODEL, CKPT, ROLLOUT, "
                              "OPTIMIZER, GRPO, WANDB, PERF, EVAL, SGLANG, MISC)")


def test_extra_args_go_last_after_every_group() -> None:
    plan = plan_with(build_overrides(extra_args=["--rollout-temperature 0.5 --debug-rollout-only", "--z 'a b'"]))
    assert plan.submit_argv == GOLDEN_SUBMIT + ["--rollout-temperature", "0.5", "--debug-rollout-only", "--z", "a b"]
    assert plan.train_groups[-1] == ("EXTRA", ("--rollout-temperature", "0.5", "--debug-rollout-only", "--z", "a b"))
    assert [str(c) for c in plan.overrides] == [
        "EXTRA --rollout-temperature: added (0.5)", "EXTRA --debug-rollout-only: added", "EXTRA --z: added ('a b')"]


def test_env_replaced_in_place_or_appended() -> None:
    plan = plan_with(build_overrides(env=["NCCL_IB_TC=106", "NCCL_DEBUG=INFO", "X=${MASTER_ADDR}"]))
    keys = [k for k, _ in plan.env_vars]
    assert keys == [k for k, _ in BASH_RECIPE.env_vars] + ["NCCL_DEBUG", "X"]
    assert dict(plan.env_vars)["NCCL_IB_TC"] == "106"
    assert [str(c) for c in plan.overrides] == [
        "env NCCL_IB_TC: 160 -> 106", "env NCCL_DEBUG: added = INFO", "env X: added = ${MASTER_ADDR}"]
    renv = next(w for w in plan.submit_argv if w.startswith("--runtime-env-json="))
    assert list(json.loads(renv.split("=", 1)[1])["env_vars"].items())[-1] == ("X", "${MASTER_ADDR}")


def test_set_in_an_earlier_group_than_a_later_duplicate_warns() -> None:
    plan = plan_with(build_overrides(sets=["MODEL.--moe-token-dispatcher-type=alltoall_seq"]))
    assert any("MISC also passes --moe-token-dispatcher-type and comes later" in w for w in plan.warnings)


def test_no_overrides_no_section(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert plan_with().overrides == ()
    code, out, _ = cli(capsys, tmp_path)
    assert code == 0 and "Overrides" not in out


def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("".join(line + "\n" for line in GOLDEN["hostfile"]))
    code = main(["plan", "--hostfile", str(hosts), "--head", HEAD, "--base-dir", BASE, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_overrides_section(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = cli(capsys, tmp_path, "--set", "PERF.--max-tokens-per-gpu=8192", "--unset", "EVAL.--eval-top-p",
                       "--extra-args", "--foo bar", "--env", "NCCL_DEBUG=WARN")
    assert code == 0
    section = out.split("Overrides (differences from the recipe)\n", 1)[1].split("\n\n", 1)[0]
    assert section.splitlines() == [
        "  PERF --max-tokens-per-gpu: 16384 -> 8192",
        "  EVAL --eval-top-p: removed (was 1)",
        "  EXTRA --foo: added (bar)",
        "  env NCCL_DEBUG: added = WARN",
    ]


def test_cli_bad_override_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = cli(capsys, tmp_path, "--set", "NOPE.--x=1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("glm45-launch: error: --set NOPE.--x=1: unknown group 'NOPE'")


# -- recipe files ---------------------------------------------------------------------------

def test_dump_load_round_trip_and_golden(tmp_path: Path) -> None:
    path = tmp_path / "bash.toml"
    path.write_text(dump_recipe(BASH_RECIPE))
    loaded = load_recipe(path)
    assert loaded == replace(BASH_RECIPE, defaults=dict(BASH_RECIPE.defaults))
    assert plan_with(recipe=loaded).invocations() == plan_with().invocations()


def test_dumped_file_is_readable(tmp_path: Path) -> None:
    text = dump_recipe(BASH_RECIPE, header=["made by a test"])
    assert text.startswith("# made by a test\n\nname = \"glm45-bash\"\n")
    assert '  "--rollout-stop-token-ids", "151329", "151336", "151338",\n' in text
    assert '"OMPI_MCA_btl" = "^openib"' in text or 'OMPI_MCA_btl = "^openib"' in text


def test_cli_recipe_file_with_set(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "mine"\n[groups]\nMODEL = []\nCKPT = ["--hf-checkpoint", "{base_dir}/HF"]\n'
                      "ROLLOUT = []\nOPTIMIZER = []\nGRPO = []\nWANDB = []\nPERF = []\nEVAL = []\nSGLANG = []\n"
                      "MISC = []\n")
    code, out, _ = cli(capsys, tmp_path, "--recipe", str(recipe), "--set", "CKPT.--ref-load=/x", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["recipe"] == "mine"
    submit = next(a for a in data["invocations"] if a[:3] == ["ray", "job", "submit"])
    assert submit[submit.index("--") + 1:][-4:] == ["--hf-checkpoint", f"{BASE}/HF", "--ref-load", "/x"]
    assert submit[submit.index("--") + 7] == "--colocate"  # prefix from the bash recipe


def test_partial_recipe_file_takes_the_rest_from_the_bash_recipe() -> None:
    recipe = parse_recipe_text('[groups]\nWANDB = ["--use-wandb"]\nNEW = ["--x"]\n[env_vars]\nA = "1"\n', "p.toml")
    assert recipe.group_order == BASH_RECIPE.group_order + ("NEW",)
    assert recipe.groups["WANDB"] == ("--use-wandb",) and recipe.groups["CKPT"] == BASH_RECIPE.groups["CKPT"]
    assert recipe.env_vars == (("A", "1"),) and recipe.head_start == BASH_RECIPE.head_start
    assert plan_with(recipe=recipe).submit_argv[-2:] == ["--moe-enable-deepep", "--x"]


@pytest.mark.parametrize(("text", "message"), [
    ("name = ", "r.toml: not valid TOML: "),
    ("colour = 1", "r.toml: unknown key 'colour'"),
    ("train_prefix = 1", "r.toml: train_prefix: expected a list of strings, got an integer"),
    ('train_prefix = ["a", 2]', "r.toml: train_prefix[1]: expected a string, got an integer 2"),
    ("head_cleanup = [1]", "r.toml: head_cleanup[0]: expected a list of strings, got an integer"),
    ("[groups]\nX = [true]", "r.toml: groups.X[0]: expected a string, got a boolean True"),
    ('group_order = ["A"]\n[groups]\nB = []', "r.toml: groups.B is not in group_order"),
    ('group_order = ["A", "A"]', "r.toml: group_order: 'A' listed twice"),
    ('group_order = ["a b"]', "r.toml: group name 'a b' is not an identifier"),
    ("[env_vars]\nX = 1", "r.toml: env_vars.X: expected a string, got an integer 1"),
    ('submit = ["ray", "job", "submit"]', "r.toml: submit: must end with '--'"),
    ("entry = []", "r.toml: entry: empty"),
    ("defaults = 1", "r.toml: [defaults]: expected a table of strings, got an integer"),
    ('[defaults]\nray_port = "abc"', "r.toml: [defaults] ray_port: expected a port number 1-65535, got 'abc'"),
    ("[defaults]\nray_port = 0", "r.toml: [defaults] ray_port: expected a port number 1-65535, got '0'"),
    ('[defaults]\ndashboard_port = "65536"',
     "r.toml: [defaults] dashboard_port: expected a port number 1-65535, got '65536'"),
    ('[defaults]\ndashboard_port = "6379"', "r.toml: [defaults] dashboard_port: 6379 is also the ray_port"),
    ('[defaults]\ndashboard_host = "not a host"',
     "r.toml: [defaults] dashboard_host: 'not a host' is not an IPv4/IPv6 address or a DNS name"),
    ('[defaults]\nactor_num_nodes = "0"', "r.toml: [defaults] actor_num_nodes: expected a whole number >= 1, got '0'"),
    ("[defaults]\nactor_num_nodes = true", "r.toml: [defaults] actor_num_nodes: expected a string, got a boolean True"),
    ('[defaults]\nentry = ""', 'r.toml: [defaults] entry: empty (want a script path, e.g. "train.py")'),
    ('[defaults]\nentry = " train.py"', "r.toml: [defaults] entry: ' train.py': leading or trailing whitespace"),
    ('[defaults]\nraypot = "1"', "r.toml: [defaults] raypot: unknown key (known: actor_num_nodes, ray_port, "
                                 "dashboard_port, dashboard_host, entry)"),
])
def test_recipe_file_errors(text: str, message: str) -> None:
    with pytest.raises(LaunchError) as err:
        parse_recipe_text(text, "r.toml")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_recipe_file_defaults_merge_over_the_bash_recipe(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """[defaults] changes only the keys it names (it once replaced the table: KeyError, exit 70)."""
    recipe = parse_recipe_text('[defaults]\nray_port = 6380\ndashboard_host = "127.0.0.1"\n', "d.toml")
    assert recipe.defaults == {**BASH_RECIPE.defaults, "ray_port": "6380", "dashboard_host": "127.0.0.1"}
    plan = plan_with(recipe=recipe)
    assert dict(plan.settings)["ray port"] == "6380" and dict(plan.settings)["dashboard"] == "127.0.0.1:8265"
    assert f"--address={HEAD}:6380" in plan.worker_steps[0].commands[-1]
    path = tmp_path / "bad.toml"
    path.write_text('[defaults]\nray_port = "abc"\n')
    code, out, err = cli(capsys, tmp_path, "--recipe", str(path))
    assert code == 2 and out == ""
    assert err == f"glm45-launch: error: {path}: [defaults] ray_port: expected a port number 1-65535, got 'abc'\n"


def test_recipe_file_io_errors(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=f"^{tmp_path}/nope.toml: no such recipe file$"):
        load_recipe(tmp_path / "nope.toml")
    with pytest.raises(LaunchError, match="is a directory"):
        load_recipe(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"name = \"\xff\"")
    with pytest.raises(LaunchError, match="bad.toml: not UTF-8"):
        load_recipe(bad)
    bad.write_text('x = "unterminated\n')
    with pytest.raises(LaunchError, match=r"bad.toml: not valid TOML: .*line 1"):
        load_recipe(bad)


WORD = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(WORD, max_size=6), env=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_ .-]{0,8}",
                                                                           fullmatch=True), WORD, max_size=4))
def test_any_words_round_trip_through_toml(words: list[str], env: dict[str, str]) -> None:
    recipe = replace(BASH_RECIPE, groups={**BASH_RECIPE.groups, "MISC": tuple(words)},
                     env_vars=tuple(env.items()), train_prefix=tuple(words),
                     defaults={**BASH_RECIPE.defaults, "entry": "e" + "".join(words).strip()})
    assert parse_recipe_text(dump_recipe(recipe), "x.toml") == recipe


def test_a_recipes_ray_temp_dir_is_a_cluster_fact() -> None:
    """`ray start --head --temp-dir D` in a recipe: the diagnostics read D's session logs (none given: /tmp/ray)."""
    from glm45_launch.core.operations import WatchSettings, diagnose_config
    from glm45_launch.core.plan import DEFAULT_RAY_TEMP

    moved = replace(BASH_RECIPE, head_start=(*BASH_RECIPE.head_start, "--temp-dir", "{base_dir}/ray"))
    plan = plan_with(recipe=moved)
    assert plan.cluster.ray_temp_dir == f"{BASE}/ray"
    assert diagnose_config(plan, WatchSettings())["ray_logs"] == f"{BASE}/ray/session_latest/logs"
    assert plan_with().cluster.ray_temp_dir == DEFAULT_RAY_TEMP
    assert build_plan(replace(plan.spec, external_ray=True)).cluster.ray_temp_dir == DEFAULT_RAY_TEMP

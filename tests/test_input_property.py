"""Whatever a stack file or a flag holds, the outcome is success or one line on stderr with exit 2.

Properties over generated input: YAML documents (dev's config with values swapped for random ones,
random structures, raw text and bytes) through `read_stack_file` + `parse_stack_config`, and a few
through the CLI (`mlp plan`, `mlp check`, `mlp train plan`), where a config that passes validation
also runs the Pulumi program under mocks. Never a traceback, never exit 3 (mlp's own bug).
"""

from __future__ import annotations

import contextlib
import copy
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from infra.config import StackConfig, parse_stack_config, read_stack_file
from mlp.errors import ConfigError
from tests.conftest import REPO_ROOT

DEV_DOCUMENT = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())
TYPES = "g5.xlarge,g6.xlarge,g4dn.xlarge"

# Strings a tester reaches for: newlines, NULs, bidi marks, emoji, YAML and regex metacharacters.
WEIRD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "abc\n",
        "\nabc",
        "a\x00b",
        "\t",
        "\u202eevil",
        "\uff44\uff45\uff56",  # fullwidth "dev"
        "😀",
        "us-east-1\n",
        "10.40.0.0/16\n",
        "fd00::/48",
        "0.0.0.0/0",
        "1e999",
        "-0",
        "NaN",
        ".inf",
        "~",
        "null",
        "yes",
        "*alias",
        "&anchor x",
        "!!python/object:os.system",
        "{",
        "[",
        "a: b",
        "- x",
        "'",
        '"',
        "#",
        "%",
        "@",
        "`",
        "$(reboot)",
        "../../etc/passwd",
        "x" * 300,
        "1.31",
        "500m",
        "1Gi",
        "a" * 64,
    ]
)
TEXT = st.one_of(WEIRD_STRINGS, st.text(max_size=40))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a document a value sits: map keys and list indexes."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


DEV_PATHS = sorted(_paths(DEV_DOCUMENT["config"]), key=repr)


PROD_CONFIG = yaml.safe_load((REPO_ROOT / "Pulumi.prod.yaml").read_text())["config"]


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _plausible(current: Any, path: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """A value of the same shape as `current`: what a person editing the file might write."""
    try:
        prod = [_at(PROD_CONFIG, path)]
    except (KeyError, IndexError, TypeError):
        prod = []
    if isinstance(current, bool):
        choices: st.SearchStrategy[Any] = st.booleans()
    elif isinstance(current, int):
        choices = st.integers(min_value=-2, max_value=2 * current + 10)
    elif isinstance(current, float):
        choices = st.floats(min_value=-1, max_value=2 * current + 1)
    elif isinstance(current, str):
        choices = st.one_of(st.just(current.upper()), st.just(current + "\n"), WEIRD_STRINGS)
    elif isinstance(current, list):
        choices = st.lists(st.sampled_from(current), max_size=len(current) + 1) if current else st.just([])
    elif isinstance(current, dict) and current:
        choices = st.dictionaries(st.sampled_from(sorted(current)), st.none(), max_size=len(current)).map(
            lambda kept: {key: current[key] for key in kept}
        )
    else:
        choices = st.just(current)
    return st.one_of(st.sampled_from(prod), choices) if prod else choices


@st.composite
def dev_mutations(draw: st.DrawFn, *, plausible_only: bool = False) -> dict[str, Any]:
    """Pulumi.dev.yaml with one to three values changed, dropped, or joined by unknown keys.

    `plausible_only` keeps each change to a value of the same shape (or prod's), so many results
    pass validation and go on to run the Pulumi program.
    """
    document = copy.deepcopy(DEV_DOCUMENT)
    actions = ["plausible"] if plausible_only else ["plausible", "plausible", "random", "drop", "add"]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(DEV_PATHS))
        try:
            parent = _at(document["config"], path[:-1])
            current = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed or replaced this place
        action = draw(st.sampled_from(actions))
        if action == "plausible":
            # A copy: prod's value must not change under a later mutation of this document.
            parent[path[-1]] = copy.deepcopy(draw(_plausible(current, path)))
        elif action == "random":
            parent[path[-1]] = draw(VALUES)
        elif action == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(TEXT)] = draw(VALUES)
    return document


DOCUMENTS = st.one_of(
    dev_mutations(),
    VALUES,
    st.fixed_dictionaries({"config": VALUES}),
    st.fixed_dictionaries({"config": st.dictionaries(TEXT, VALUES, max_size=5)}),
)

# Fragments that make YAML syntax (and its dangerous corners) when strung together.
YAML_TOKENS = st.sampled_from(
    [
        "config:",
        "\n",
        "\n  ",
        "  ",
        "aws:region: us-east-1",
        "ml-platform:tags:",
        "- ",
        ": ",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "? ",
        "!!binary ",
        "!!set ",
        "!!timestamp ",
        "!!python/name:os.system ",
        "!custom ",
        "2024-13-45",
        "2024-01-01",
        "9" * 5000,
        "0x1F",
        "0o17",
        "1_000",
        ".nan",
        "---",
        "...",
        "%YAML 1.1",
        "#",
        "'",
        '"',
        "|",
        ">",
        "\t",
        "\x00",
        "\x07",
        "\ufeff",
        "\x85",
        "é",
    ]
)
RAW_TEXT = st.one_of(st.lists(YAML_TOKENS, max_size=30).map("".join), st.text(max_size=200))
NESTED_TEXT = st.builds(
    lambda brackets, depth: "config:\n  x: " + brackets[0] * depth + "1" + brackets[1] * depth + "\n",
    st.sampled_from([("[", "]"), ("{a: ", "}")]),
    st.integers(min_value=1, max_value=3000),
)


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mlp-input-property-") as directory:
        path = Path(directory)
        shutil.copy(REPO_ROOT / "Pulumi.yaml", path / "Pulumi.yaml")
        yield path


def _write(project: Path, content: str | bytes, stack: str = "dev") -> None:
    stack_file = project / f"Pulumi.{stack}.yaml"
    if isinstance(content, bytes):
        stack_file.write_bytes(content)
    else:
        stack_file.write_text(content, encoding="utf-8")


def _dump(document: Any) -> str:
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def _load_outcome(project: Path) -> StackConfig | ConfigError:
    """Read and validate Pulumi.dev.yaml; any exception but a one-line ConfigError fails the test."""
    try:
        config = parse_stack_config("dev", read_stack_file("dev", project))
    except ConfigError as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert "Traceback" not in message
        event(f"refused: {message.split(':')[0][:40]}")
        return error
    event("valid")
    return config


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_any_yaml_document_loads_or_fails_in_one_line(project: Path, document: Any) -> None:
    _write(project, _dump(document))
    _load_outcome(project)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(RAW_TEXT, NESTED_TEXT))
@example(text="config:\n  x: " + "[" * 3000 + "]" * 3000 + "\n")
@example(text="a: &a [x, x]\nb: &b [*a, *a]\nconfig: {aws:region: *b}\n")
@example(text="config:\n  aws:region: 2024-13-45\n")
@example(text="config: !!set {a, b}\n")
@example(text="%YAML 1." + "9" * 5000 + "\n---\nconfig: {}\n")
def test_any_text_loads_or_fails_in_one_line(project: Path, text: str) -> None:
    _write(project, text)
    _load_outcome(project)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=200))
@example(data=b"config:\n  aws:region: \xff\n")
@example(data=b"\xef\xbb\xbfconfig: {}\n")
def test_any_bytes_load_or_fail_in_one_line(project: Path, data: bytes) -> None:
    _write(project, data)
    _load_outcome(project)


def test_the_unchanged_dev_file_is_valid(project: Path) -> None:
    _write(project, _dump(DEV_DOCUMENT))
    assert isinstance(parse_stack_config("dev", read_stack_file("dev", project)), StackConfig)


def _mlp(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """`mlp ARGS` in-process through the console script's entry point: (exit code, stdout, stderr)."""
    from mlp.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["mlp", *args]
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code or 0
    finally:
        sys.argv = argv
    return int(code), out.getvalue(), err.getvalue()


def _assert_outcome(code: int, err: str, *, verdicts: tuple[int, ...] = (0,)) -> None:
    event(f"exit {code}")
    assert "Traceback" not in err, err
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mlp: error: "), err
    else:
        assert code in verdicts, (code, err)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dev_mutations(plausible_only=True))
@example(document=copy.deepcopy(DEV_DOCUMENT))
def test_mlp_plan_over_mutated_dev_files(project: Path, document: Any) -> None:
    # A mutation that passes validation runs the real program under mocks: it must not break it.
    _write(project, _dump(document))
    code, _, err = _mlp(
        ["plan", "--stack", "dev", "--project-dir", str(project), "--format", "json"], project
    )
    _assert_outcome(code, err)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dev_mutations(plausible_only=True))
def test_mlp_check_over_mutated_dev_files(project: Path, document: Any) -> None:
    _write(project, _dump(document))
    code, _, err = _mlp(["check", "--stack", "dev", "--project-dir", str(project)], project)
    # Exit 1 is check's verdict: a mutated config may plan resources the policies refuse.
    _assert_outcome(code, err, verdicts=(0, 1))


STACK_NAMES = st.one_of(TEXT, st.from_regex(r"[A-Za-z0-9_.-]{1,120}", fullmatch=True))


@settings(max_examples=60, deadline=None)
@given(stack=STACK_NAMES)
@example(stack="train-abc\n")
@example(stack="dev\n")
@example(stack="../dev")
@example(stack="x" * 300)
def test_mlp_plan_and_check_over_any_stack_name(project: Path, stack: str) -> None:
    if stack == "dev":
        return  # the one name that plans for real; covered above
    _write(project, _dump(DEV_DOCUMENT))
    for command in ("plan", "check"):
        code, _, err = _mlp([command, f"--stack={stack}", "--project-dir", str(project)], project)
        assert code == 2, (command, stack, code, err)
        _assert_outcome(code, err)


@settings(max_examples=40, deadline=None)
@given(run_id=TEXT)
@example(run_id="abc\n")
@example(run_id="bert-ft-01")
def test_mlp_train_plan_over_any_run_id(project: Path, run_id: str) -> None:
    _write(project, _dump(DEV_DOCUMENT))
    code, _, err = _mlp(
        [
            *("train", "plan", "--env", "dev", f"--run-id={run_id}", "--instance-types", TYPES),
            *("--count", "1", "--max-hours", "1", "--format", "json"),
        ],
        project,
    )
    _assert_outcome(code, err)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dev_mutations(plausible_only=True))
def test_mlp_train_plan_over_mutated_environments(project: Path, document: Any) -> None:
    # The run plans on top of its environment's plan: an odd but valid environment must not break it.
    _write(project, _dump(document))
    code, _, err = _mlp(
        [
            *("train", "plan", "--env", "dev", "--run-id", "bert-ft-01", "--instance-types", TYPES),
            *("--count", "1", "--max-hours", "1", "--format", "json"),
        ],
        project,
    )
    _assert_outcome(code, err)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instance_types=st.one_of(
        TEXT, st.lists(st.sampled_from([*TYPES.split(","), "p5.48xlarge", " "])).map(",".join)
    ),
    count=st.integers(min_value=-5, max_value=10**6),
    max_hours=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 500)),
    image=st.one_of(st.none(), TEXT),
    command=TEXT,
)
@example(instance_types=TYPES, count=1, max_hours=float("nan"), image=None, command="python train.py")
@example(instance_types=TYPES, count=1, max_hours=1, image="evil\nimage", command="python train.py")
@example(instance_types=TYPES, count=1, max_hours=1, image=None, command="python\x00 train.py")
def test_mlp_train_plan_over_any_run_flags(
    project: Path, instance_types: str, count: int, max_hours: float, image: str | None, command: str
) -> None:
    _write(project, _dump(DEV_DOCUMENT))
    args = ["train", "plan", "--env", "dev", "--run-id", "flags-01", f"--instance-types={instance_types}"]
    args += [f"--count={count}", f"--max-hours={max_hours!r}", f"--command={command}", "--format", "json"]
    if image is not None:
        args.append(f"--image={image}")
    code, _, err = _mlp(args, project)
    _assert_outcome(code, err)

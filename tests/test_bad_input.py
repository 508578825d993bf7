"""Bad input gets one clear line, never a traceback or a silently wrong result.

The corpus in ``tests/bad_inputs/`` (scenarios, traces, length files, model configs, sweep, tune and plan files,
catalogs) lists in ``expected.yaml`` each case's command (``fleetsim run FILE --quiet`` unless it says otherwise) and
the exact line it must print. Every case runs in-process and checks: exit status 2; exactly one line on stderr,
starting ``fleetsim: error: ``; the line names the file and the field (``pools.l4.gpu``) or the line
(``trace.csv:4``), and says what is allowed. After a deliberate change of wording, re-record the lines with
``python -m tests.test_bad_input --regenerate`` and review the printed changes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.scenario import load_scenario

HERE = Path(__file__).resolve().parent
BAD = HERE / "bad_inputs"
ROOT = HERE.parent
QUICKSTART = ROOT / "configs" / "quickstart.yaml"

#: A small valid scenario; each case below breaks one thing in it.
BASE = {
    "name": "bad-input",
    "workload": {
        "type": "open_loop",
        "arrival": {"process": "poisson", "rate_per_s": 5.0},
        "num_requests": 20,
        "prompt_tokens": {"dist": "uniform", "low": 10, "high": 100},
        "output_tokens": {"dist": "fixed", "tokens": 10},
    },
    "pools": {"l4": {"gpu": "l4", "model": "llama-3.1-8b", "replicas": 1, "engine": {"max_model_len": 4096}}},
}

DELETE = "<delete>"

TRACE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW1 = "2023-11-16 18:15:46.6805900,374,44\n"
ROW2 = "2023-11-16 18:15:50.9951690,396,109\n"
ROW3 = "2023-11-16 18:15:51.0000000,120,30\n"

#: A Llama-like Hugging Face config.json (Llama-3.2-1B's shape).
LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}


# --------------------------------------------------------------------------------------------- helpers


def edited(edits: dict) -> dict:
    """:data:`BASE` with ``{"dotted.path": value}`` edits applied; the value :data:`DELETE` removes the key."""
    data = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        if value == DELETE:
            del node[last]
        else:
            node[last] = value
    return data


def write_scenario(tmp_path: Path, data, name: str = "scenario.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``fleetsim ARGV`` in-process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(rc: int, err: str) -> str:
    """The single error line, after checking the exit status and the shape of stderr."""
    assert "Traceback" not in err, err
    assert rc == 2, f"exit status {rc}, stderr: {err!r}"
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert lines[0].startswith("fleetsim: error: "), lines[0]
    return lines[0]


def assert_names(line: str, path: Path | str, field: str, hints: tuple[str, ...]) -> None:
    """``line`` names ``path``, then ``field`` (as ``PATH: FIELD:`` or ``PATH: FIELD.sub``), and every hint."""
    if field:
        assert re.search(rf"{re.escape(str(path))}: {re.escape(field)}[.:]", line), (path, field, line)
    else:
        assert f"{path}: " in line, (path, line)
    for hint in hints:
        assert hint in line, (hint, line)


def run_bad(capsys, path: Path, *extra) -> str:
    rc, _, err = cli(capsys, "run", path, "--quiet", *extra)
    return error_line(rc, err)


def test_base_scenario_is_valid(tmp_path):
    """The cases below fail for the reason they name, not because the base is broken."""
    load_scenario(write_scenario(tmp_path, BASE))


# --------------------------------------------------------------------------------------------- the corpus

EXPECTED = BAD / "expected.yaml"
DEFAULT_ARGV = ("run", "{file}", "--quiet")


def load_corpus() -> dict[str, dict]:
    """``expected.yaml``: case id -> ``file`` (relative to the corpus), optional ``argv`` and the exact ``message``."""
    return yaml.safe_load(EXPECTED.read_text(encoding="utf-8"))


def expand(text: str, case: dict) -> str:
    return (text.replace("{file}", str(BAD / case["file"])).replace("{corpus}", str(BAD))
            .replace("{root}", str(ROOT)))


def case_argv(case: dict) -> list[str]:
    return [expand(a, case) for a in case.get("argv", DEFAULT_ARGV)]


def run_case(case: dict) -> tuple[int, str]:
    """Run one case in-process: (exit status, stderr)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(case_argv(case))
    return rc, err.getvalue()


CORPUS = load_corpus()
#: ``PATH: FIELD`` or ``PATH:LINE:`` right after the prefix, PATH a file in the repository (absolute); or the
#: command-line option and its value (``--set KEY=VALUE: FIELD``, ``--years 0.0: ...``).
WHERE = re.compile(rf"^fleetsim: error: (--set .+?: |--[a-z][a-z-]*( \S+)?: |{re.escape(str(ROOT))}/\S+?(:\d+)?: )")


def test_the_corpus_has_at_least_200_cases_and_no_orphan_files():
    assert len(CORPUS) >= 200, len(CORPUS)
    used = {(BAD / c["file"]).resolve() for c in CORPUS.values()}
    for scenario in (BAD / "scenarios").glob("*.yaml"):
        assert scenario.resolve() in used, f"{scenario.name} is in no case of expected.yaml"


@pytest.mark.parametrize("case_id", list(CORPUS))
def test_bad_input_corpus(case_id):
    """Exit status 2, exactly one line on stderr, no traceback, naming the file and the field or line: the line
    recorded in expected.yaml."""
    case = CORPUS[case_id]
    rc, err = run_case(case)
    line = error_line(rc, err)
    assert line == expand(case["message"], case)
    assert WHERE.match(line), f"the line names no file and field or line: {line}"


def regenerate() -> None:
    """Record each case's line anew (after a deliberate change of wording); review the printed changes."""
    text = EXPECTED.read_text(encoding="utf-8")
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    cases = load_corpus()
    for case_id, case in cases.items():
        rc, err = run_case(case)
        line = err.strip().replace(str(BAD), "{corpus}").replace(str(ROOT), "{root}")
        if rc != 2 or len(err.splitlines()) != 1:
            print(f"{case_id}: exit status {rc}: {err!r}")  # noqa: T201
        if line != case.get("message"):
            print(f"{case_id}:\n  - {case.get('message')}\n  + {line}")  # noqa: T201
            case["message"] = line
    EXPECTED.write_text(header + yaml.safe_dump(cases, sort_keys=False, width=1000, allow_unicode=True),
                        encoding="utf-8")


# ------------------------------------------------------------------------------ command-line arguments


@pytest.mark.parametrize("argv", [
    pytest.param(["frobnicate"], id="unknown-subcommand"),
    pytest.param([], id="no-subcommand"),
    pytest.param(["run"], id="run-without-scenario"),
    pytest.param(["run", str(QUICKSTART), "--seed", "-1"], id="seed-negative"),
    pytest.param(["run", str(QUICKSTART), "--seed", "abc"], id="seed-abc"),
    pytest.param(["run", str(QUICKSTART), "--seed", "1.5"], id="seed-fractional"),
    pytest.param(["run", str(QUICKSTART), "--bogus"], id="unknown-option"),
    pytest.param(["catalog", "tpus"], id="catalog-unknown-table"),
])
def test_bad_cli_arguments(capsys, argv):
    """argparse's own errors: exit status 2, usage and one error line, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    assert err.startswith("usage: fleetsim")
    assert re.search(r"^fleetsim( \w+)?: error: ", err, re.MULTILINE), err


def test_catalog_extra_file_missing(tmp_path, capsys):
    rc, _, err = cli(capsys, "catalog", "gpus", "--file", tmp_path / "extra.yaml")
    assert str(tmp_path / "extra.yaml") in error_line(rc, err)


def test_catalog_extra_file_invalid(tmp_path, capsys):
    extra = tmp_path / "extra.yaml"
    extra.write_text("models:\n  tiny:\n    name: Tiny\n    n_layers: 0\n", encoding="utf-8")
    rc, _, err = cli(capsys, "catalog", "models", "--file", extra)
    line = error_line(rc, err)
    assert f"{extra}: models.tiny.n_layers: " in line and "greater than 0" in line, line


def test_out_is_an_existing_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("x", encoding="utf-8")
    rc, _, err = cli(capsys, "run", QUICKSTART, "--quiet", "--set", "workload.num_requests=10", "--out", target)
    line = error_line(rc, err)
    assert "--out" in line and str(target) in line, line


# ------------------------------------------------------------------------ known gaps in the messages


def test_unknown_name_without_close_match_reads_well(tmp_path, capsys):
    path = write_scenario(tmp_path, edited({"pools.l4.gpu": "tpu_v5"}))
    assert "unknown GPU 'tpu_v5'; allowed: " in run_bad(capsys, path)


def test_unknown_tag_names_the_tag_field_and_suggests(tmp_path, capsys):
    path = write_scenario(tmp_path, edited({"workload.arrival": {"process": "poison", "rate_per_s": 2}}))
    line = run_bad(capsys, path)
    assert f"{path}: workload.arrival.process: " in line, line
    assert "did you mean 'poisson'" in line, line


def test_duplicate_key_is_an_error(tmp_path, capsys):
    text = yaml.safe_dump(edited({}), sort_keys=False)
    pool = "  l4:\n    gpu: l4\n    model: llama-3.1-8b\n    replicas: 3\n    engine: {max_model_len: 4096}\n"
    path = write_scenario(tmp_path, text.replace("pools:\n", "pools:\n" + pool))
    line = run_bad(capsys, path)
    assert "duplicate" in line and "l4" in line, line


def test_boolean_is_not_an_integer(tmp_path, capsys):
    path = write_scenario(tmp_path, yaml.safe_dump(edited({}), sort_keys=False).replace("replicas: 1", "replicas: yes"))
    assert_names(run_bad(capsys, path), path, "pools.l4.replicas", ("integer",))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--regenerate"]:
        raise SystemExit("usage: python -m tests.test_bad_input --regenerate")
    regenerate()

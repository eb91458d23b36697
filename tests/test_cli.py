"""The command line in subprocesses, without ../shared: light commands import neither torch nor
ray, and every user mistake is one `error:` line with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
HEAVY = ("torch", "ray", "transformers", "optuna", "mlflow", "datasets")

# Runs the CLI's main() and reports, on the last stderr line, which heavy packages it loaded.
RUNNER = """
import json, sys
from rayprune.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exit:
    rc = exit.code
sys.stdout.flush()
print("HEAVY=" + json.dumps(sorted(m for m in %r if m in sys.modules)), file=sys.stderr)
sys.exit(rc)
""" % (HEAVY,)


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr without the report line, heavy modules loaded)."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    lines = proc.stderr.rstrip("\n").split("\n")
    assert lines[-1].startswith("HEAVY="), proc.stderr
    return proc.returncode, proc.stdout, "\n".join(lines[:-1]), json.loads(lines[-1][len("HEAVY="):])


def assert_one_error_line(code: int, stderr: str, *needles: str) -> None:
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def test_help_imports_neither_torch_nor_ray():
    code, out, _, heavy = run_cli("--help")
    assert code == 0 and heavy == []
    for command in ("search", "methods", "schema", "pareto", "export", "train", "ui"):
        assert command in out


def test_schema_prints_the_shipped_schema_without_torch():
    code, out, _, heavy = run_cli("schema")
    assert code == 0 and heavy == []
    schema = json.loads(out)
    assert schema == json.loads((REPO / "rayprune" / "config" / "schema.json").read_text())
    assert "mgpp.sigma0" in schema["properties"]["space"]["properties"]


def test_pareto_of_a_search_directory_imports_neither_torch_nor_ray(tmp_path):
    from rayprune.search.results import write_pareto

    rows = [
        {"trial_id": "a", "method": "magnitude", "target_sparsity": 0.5, "accuracy": 0.9, "sparsity": 0.5,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
        {"trial_id": "b", "method": "movement", "target_sparsity": 0.9, "accuracy": 0.8, "sparsity": 0.9,
         "budget_fraction": 1.0, "status": "complete", "config": "{}"},
    ]
    write_pareto(tmp_path, rows, metric="accuracy")
    (tmp_path / "search.json").write_text(json.dumps({"settings": {"metric": "accuracy"}}))
    code, out, err, heavy = run_cli("pareto", str(tmp_path))
    assert code == 0, err
    assert heavy == []
    assert "magnitude" in out and "movement" in out


def test_pareto_of_a_directory_that_is_no_search_is_one_error(tmp_path):
    code, _, err, heavy = run_cli("pareto", str(tmp_path))
    assert_one_error_line(code, err, str(tmp_path), "search.json")
    assert heavy == []


@pytest.mark.parametrize("content, needle", [
    ("space: [unclosed\n", "not valid YAML"),
    ("training:\n  steps: 10\n  steps: 20\n", "duplicate key"),
    (b"name: caf\xe9\n", "not UTF-8"),
    ("space: " + "[" * 500 + "]" * 500 + "\n", "nested deeper"),
    ("", "empty"),
    ('"": 1\n~: 2\n', "unknown key"),
    ("training: {steps: " + "9" * 400 + "}\n", "training.steps"),
    ("data: {task: demo}\ntraining: {steps: 10, seed: abc}\nspace: {method: magnitude, target_sparsity: 0.5}\n",
     "training.seed"),
    ("data: {task: demo, max_seq_length: 100000}\n", "data.max_seq_length"),
    ('name: "a\\u202eb"\n', "'a\\u202eb' is not a plain directory name"),
    ("a: !!bool x\n", "'x' is not a valid !!bool"),
    ("a: !!timestamp x\n", "'x' is not a valid !!timestamp"),
])
def test_a_malformed_space_file_is_one_error_line_before_torch_or_ray(tmp_path, content, needle):
    space = tmp_path / "bad.yaml"
    space.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err, heavy = run_cli("search", "--space", str(space), "--dry-run", "--output", str(tmp_path / "runs"))
    assert_one_error_line(code, err, str(space), needle)
    assert heavy == []


def test_a_directory_as_the_space_file_says_it_is_a_directory(tmp_path):
    code, _, err, heavy = run_cli("search", "--space", str(tmp_path), "--dry-run")
    assert_one_error_line(code, err, "is a directory")
    assert heavy == []


def test_a_cross_field_mistake_is_one_error_line(tmp_path):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["space"] = {"method": "mgpp", "target_sparsity": 0.5, "mgpp.sigma0": 0.04, "mgpp.sigma1": 0.02}
    raw.pop("points_to_evaluate", None)
    space = tmp_path / "mgpp.yaml"
    space.write_text(yaml.safe_dump(raw))
    code, _, err, _ = run_cli("search", "--space", str(space), "--dry-run")
    assert_one_error_line(code, err, "space.mgpp.sigma0", "space.mgpp.sigma1", "sigma0 < sigma1")


def test_dry_run_prints_the_resolved_reference_budget(tmp_path):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["data"].update(max_train_samples=40, max_eval_samples=20)
    raw["reference"] = {"steps": 30}
    raw["training"]["learning_rate"] = 1e-4
    space = tmp_path / "quick.yaml"
    space.write_text(yaml.safe_dump(raw))
    code, out, err, _ = run_cli("search", "--space", str(space), "--dry-run", "--output", str(tmp_path / "runs"))
    assert code == 0, err
    reference = [line for line in out.splitlines() if line.startswith("reference")]
    assert reference == ["reference  dense fine-tune of bundled:minilm-l6: 30 steps at learning rate 0.0001"], out
    assert "max_seq_length 48" in out
    assert "trust_remote_code" not in out  # off, and only shown when on
    assert not (tmp_path / "runs").exists()  # a dry run starts nothing and writes nothing


def test_dry_run_shows_trust_remote_code_when_the_file_turns_it_on(tmp_path):
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["data"].update(max_train_samples=40, max_eval_samples=20)
    raw["trust_remote_code"] = True
    space = tmp_path / "remote.yaml"
    space.write_text(yaml.safe_dump(raw))
    code, out, err, _ = run_cli("search", "--space", str(space), "--dry-run", "--output", str(tmp_path / "runs"))
    assert code == 0, err
    [model] = [line for line in out.splitlines() if line.startswith("model")]
    assert model.startswith("model      bundled:minilm-l6  (trust_remote_code: true"), out


def test_methods_lists_every_method_with_its_options():
    from rayprune.methods import available_methods

    code, out, err, _ = run_cli("methods")
    assert code == 0, err
    for name in available_methods():
        assert name in out
    assert "mgpp.sigma0" in out and "magnitude.selection" in out


@pytest.mark.parametrize("content, needle", [
    ("model: m\n", "data: required"),
    ("model: m\nmodel: n\n", "duplicate key"),
    ("model: m\ndata: {task: demo}\nmetric: accuracy\ntraining: {steps: 2, colour: 1}\ntrial: {}\n",
     "training.colour"),
    ("model: m\ndata: {task: demo}\nmetric: accuracy\ntraining: {steps: 2}\ntrial: {method: nope}\n", "trial"),
    ("model: m\ndata: {task: demo}\nmetric: accuracy\ntraining: {steps: 2}\ntrial: {}\nextra: 1\n", "extra"),
])
def test_train_with_a_bad_config_is_one_error_line(tmp_path, content, needle):
    config = tmp_path / "config.yaml"
    config.write_text(content)
    code, _, err, _ = run_cli("train", "--config", str(config))
    assert_one_error_line(code, err, str(config), needle)


def test_unknown_command_and_missing_argument_exit_2():
    code, _, err, heavy = run_cli("frobnicate")
    assert code == 2 and "invalid choice" in err and heavy == []
    code, _, err, _ = run_cli("search")
    assert code == 2 and "--space" in err

"""The README's YAML examples are valid as written: a reader who copies one gets a working file, not an error.

Whole scenarios, experiment, tuning and planning files are loaded as they are (with their relative paths pointed at
this checkout); fragments (a few blocks of a scenario) are merged into the quick-start scenario and validated.
"""

from __future__ import annotations

import re

import pytest
import yaml

from sim.plan import load_plan
from sim.scenario import load_scenario
from sim.sweep import load_experiment
from sim.tune import load_study
from tests.conftest import ROOT, merge

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = [(README[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```yaml\n(.*?)```", README, re.S)]


def _localised(text: str) -> str:
    """The block with its paths relative to configs/ or a folder two levels down made absolute."""
    return (text.replace("../../configs/", f"{ROOT / 'configs'}/")
            .replace("../data/", f"{ROOT / 'data'}/"))


def test_the_readme_has_yaml_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_yaml_example_is_valid(line, text, tmp_path):
    doc = yaml.safe_load(_localised(text))
    path = tmp_path / "example.yaml"
    if "candidates" in doc:
        path.write_text(_localised(text), encoding="utf-8")
        load_plan(path)
    elif "search" in doc:
        path.write_text(_localised(text), encoding="utf-8")
        load_study(path)
    elif "parameters" in doc:
        path.write_text(_localised(text), encoding="utf-8")
        load_experiment(path)
    else:
        doc.pop("catalog_files", None)  # names a file of the reader's own
        if "name" not in doc:  # a fragment: into the quick-start scenario
            base = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
            if set(doc) <= {"prompt_tokens", "output_tokens"}:
                doc = {"workload": doc}
            if "pools" in doc:
                base["pools"] = {}  # the example's pools alone
            if set(doc) == {"router"}:  # the hybrid-fleet rules: an L40S pool and a batch class too
                base["pools"]["l40s"] = {**base["pools"]["l4"], "gpu": "l40s"}
                base["classes"] = [{"name": "batch", "workload": base["workload"]}]
            doc = merge(base, doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        load_scenario(path)

"""dvc.yaml, written from restorebench.pipeline: one block per stage family, a DVC `matrix` over the params
lists wherever the family's jobs differ only in their matrix values (docs/ARCHITECTURE.md, "The pipeline").

    restorebench pipeline dvc -o dvc.yaml     # dvc_yaml(): a test checks the committed file is fresh
    restorebench pipeline code -o DIR         # write_fingerprints(): dvc.yaml's `code` stage runs it

A matrix block reads its axes from params.yaml at `dvc repro` time (`${models}`, `${strategies}`, ...), so
`dvc exp run -S 'models=[nafnet]'` runs that grid without regenerating. A family is written expanded, one
stage per job, where its jobs differ in more than their matrix values (a model with its own params keys,
prepare's per-dataset keys) or it has one job (evaluate_identity per task, a released checkpoint).

Code dependencies: Snakemake lists each job's source files (pipeline.stage_sources); DVC would write each
of them, with its hash, into dvc.lock for every stage (a 27,000-line lock rewritten after every stage).
Here each job depends instead on one fingerprint of the same files, `.restorebench/code/{code_id}.txt`
(their sha256 each), which the `code` stage rewrites whenever src/ changes; a fingerprint whose files did
not change keeps its bytes, so only the jobs whose sources changed re-run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from restorebench import io
from restorebench.config import MODEL_NAMES
from restorebench.pipeline import (
    ITEM,
    MODEL_RULES,
    RULE_COMMAND,
    THREADS,
    Block,
    Out,
    Pipeline,
    Stage,
    code_key,
    stage_sources,
)
from restorebench.views import dvc_metrics, dvc_plots

SEGMENTATION_ROOT = "runs/segmentation"  # every segmentation_dir()
CODE_DIR = ".restorebench/code"  # the fingerprints (git ignores .restorebench/)
SOURCES = "src/restorebench"

GENERATED_MARK = "# GENERATED from src/restorebench/pipeline.py"  # how this file's first line starts
DVC_HEADER = """\
# GENERATED from src/restorebench/pipeline.py and params.yaml by `restorebench pipeline dvc -o dvc.yaml`;
# do not edit (a test fails when this file differs from a fresh generation). Matrix stages follow the
# params lists, so `dvc exp run -S 'models=[nafnet]'` needs no regeneration; regenerate after adding a task,
# changing `official` or `data.root`, or setting `seeds` (docs/ARCHITECTURE.md, "The pipeline").
#   dvc repro                                  # the profile and grid params.yaml sets (the demo)
#   restorebench profile paper && dvc repro    # the paper study (rewrites params.yaml and this file)
# Commands read params.yaml themselves; `params` lists, per stage, the keys it reads, and each stage's
# sources are one fingerprint file written by the `code` stage, so a change re-runs exactly the stages
# that read it.
"""


# ---------------------------------------------------------------------------------------------- fingerprints


def fingerprint(rule: str, model: str | None = None) -> str:
    """The text of a job's code fingerprint: the sha256 of each source file it runs, one per line."""
    # the project's own files, as Snakemake watches them (src/ under the working directory), else the package's
    root = Path.cwd() if (Path.cwd() / SOURCES).is_dir() else Path(__file__).resolve().parents[2]
    lines = [f"# the sources `restorebench {RULE_COMMAND[rule]}` runs for {code_key(rule, model)}"]
    lines += [f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}" for f in stage_sources(rule, model)]
    return "\n".join(lines) + "\n"


def fingerprints() -> dict[str, str]:
    """code_id -> fingerprint text, for every rule and, for the rules that run a model's code, every model
    of the registry (so a `-S models=[...]` sweep finds its models' files)."""
    out = {}
    for rule in RULE_COMMAND:
        for model in MODEL_NAMES if rule in MODEL_RULES else [None]:
            out[code_key(rule, model)] = fingerprint(rule, model)
    return out


def write_fingerprints(folder: str | Path) -> int:
    """Write every fingerprint under `folder` (atomically, each file); returns how many."""
    texts = fingerprints()
    for name, text in texts.items():
        io.write_text(Path(folder) / f"{name}.txt", text)
    return len(texts)


def code_dep(code_id: str) -> str:
    return f"{CODE_DIR}/{code_id}.txt"


# ---------------------------------------------------------------------------------------------- dvc.yaml


def _dvc_out(out: Out) -> Any:
    return {out.path: {"cache": False}} if not out.cache else out.path


def _entry(s: Stage, segmentation: bool = False) -> dict[str, Any]:
    """One stage's dvc.yaml entry (a job, or a template with ${item.*} in its strings). `segmentation`: the
    grid has segpretrain jobs; a job that loads `pretrained` then depends on their whole folder (a template
    over every model cannot name one model's checkpoint; Snakemake's job names its own)."""
    entry: dict[str, Any] = {"cmd": f"restorebench --threads {THREADS} {s.args}"}
    if s.comment:
        entry["desc"] = s.comment
    deps = [d for d in s.deps if not d.startswith(f"{SEGMENTATION_ROOT}/")]
    if segmentation and s.init in ("none", "dcpt"):
        deps.append(SEGMENTATION_ROOT)
    entry["deps"] = deps + [code_dep(s.code_id)]
    if s.params:
        entry["params"] = list(s.params)
    if s.outs:  # metrics files too: dvc.yaml's top-level `metrics` names them (restorebench.views)
        entry["outs"] = [_dvc_out(o) for _, o in s.outs]
    return entry


def _instantiate(value: Any, values: dict[str, str]) -> Any:
    """`value` (an entry, nested) with each ${item.AXIS} replaced by the axis value."""
    if isinstance(value, str):
        for axis, v in values.items():
            value = value.replace(ITEM.format(axis), v)
        return value
    if isinstance(value, list):
        return [_instantiate(v, values) for v in value]
    if isinstance(value, dict):
        return {_instantiate(k, values): _instantiate(v, values) for k, v in value.items()}
    return value


def foldable(pipe: Pipeline, block: Block) -> bool:
    """Whether `block` can be one matrix stage: its template expands to exactly its jobs, and its jobs are
    exactly the product of its axes' params lists (what DVC will expand them to)."""
    if block.template is None or not block.axes:
        return False
    seg = bool(pipe.segmentation_runs())
    if any(_instantiate(_entry(block.template, seg), v) != _entry(s, seg) for v, s in block.items):
        return False
    lists = [[str(x) for x in (pipe.value(key) or [])] for key in block.axes.values()]
    expected = [[]]  # the product of the lists, in DVC's order (first axis outermost)
    for values in lists:
        expected = [e + [x] for e in expected for x in values]
    return [list(v.values()) for v, _ in block.items] == expected


def dvc_names(pipe: Pipeline) -> dict[str, str]:
    """Stage.name -> the name `dvc repro` knows the job by: BLOCK@VALUES (finetune_denoise@nafnet-full) for
    a matrix block, the Stage.name (prepare.sidd) for a stage written expanded."""
    names = {}
    for block in pipe.blocks():
        folded = foldable(pipe, block)
        for values, stage in block.items:
            names[stage.name] = f"{block.name}@{'-'.join(values.values())}" if folded else stage.name
    return names


def dvc_yaml(pipe: Pipeline) -> str:
    """dvc.yaml for `pipe`: the `code` stage, then each block as a matrix stage or expanded."""
    import yaml

    stages: dict[str, dict] = {
        "code": {"desc": "each stage family's sources, fingerprinted (restorebench.dvcyaml)",
                 "cmd": f"restorebench pipeline code -o {CODE_DIR}", "deps": [SOURCES],
                 "outs": [{CODE_DIR: {"cache": False}}]},
    }  # fmt: skip
    seg = bool(pipe.segmentation_runs())
    for block in pipe.blocks():
        if foldable(pipe, block):
            assert block.template is not None
            matrix = {axis: f"${{{key}}}" for axis, key in block.axes.items()}
            stages[block.name] = {"matrix": matrix, **_entry(block.template, seg)}
        else:
            stages.update({s.name: _entry(s, seg) for _, s in block.items})
    # `dvc metrics show`: one row per cell; `dvc plots show`: a chart per family (restorebench.views)
    body = {"stages": stages, "metrics": dvc_metrics(pipe), "plots": dvc_plots(pipe)}
    return DVC_HEADER + yaml.safe_dump(body, sort_keys=False, width=120, default_flow_style=False)

# Helpers: every rule is a view of restorebench.pipeline's stages of the same name.

import re


def job(rule, wildcards):
    """The pipeline stage of this job (KeyError: not a job of the current grid)."""
    return PIPE.stage(rule, **dict(wildcards.items()))


def inputs(rule):
    """The job's artifacts (`deps`) and the source files it runs (`code`)."""
    return lambda w: {"deps": PIPE.job_inputs(job(rule, w)), "code": list(job(rule, w).code)}


def param_values(rule):
    """The params keys the job reads, with their values: a change re-runs it."""
    return lambda w: PIPE.values(job(rule, w))


def command(rule):
    """The job's restorebench subcommand and options."""
    return lambda w: job(rule, w).args


def outputs(rule, *names):
    """The rule's named outputs, its wildcards as patterns."""
    outs = pipeline.outputs(rule, ROOT, **{n: f"{{{n}}}" for n in names})
    return {k: directory(o.path) if o.directory else o.path for k, o in outs.items()}


def log(rule, *names):
    return pipeline.log_path(rule, *(f"{{{n}}}" for n in names))


def constraints(rule, *names):
    """Each wildcard matches exactly the values the rule's jobs take (nothing, if it has none)."""
    return {n: "|".join(re.escape(v) for v in PIPE.wildcard_values(rule, n)) or "(?!)" for n in names}


SHELL = f"{RESTOREBENCH} --threads {{threads}} {{params.command}} > {{log}} 2>&1"

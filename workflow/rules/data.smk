# Data stages: fetch (sample, official archives, or a path) and validate, one job per dataset.


rule fetch:
    output:
        **outputs("fetch", "dataset"),
    params:
        command=command("fetch"),
        values=param_values("fetch"),
    input:
        unpack(inputs("fetch")),
    log:
        log("fetch", "dataset"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("fetch", "dataset"),
    shell:
        SHELL


rule validate:
    input:
        unpack(inputs("validate")),
    output:
        **outputs("validate", "dataset"),
    params:
        command=command("validate"),
        values=param_values("validate"),
    log:
        log("validate", "dataset"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("validate", "dataset"),
    shell:
        SHELL

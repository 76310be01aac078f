# Evaluation by the published protocols (trained cells and released checkpoints), and the table.


rule evaluate_identity:
    input:
        unpack(inputs("evaluate_identity")),
    output:
        **outputs("evaluate_identity", "task"),
    params:
        command=command("evaluate_identity"),
        values=param_values("evaluate_identity"),
    log:
        log("evaluate_identity", "task"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("evaluate_identity", "task"),
    shell:
        SHELL


rule evaluate:
    input:
        unpack(inputs("evaluate")),
    output:
        **outputs("evaluate", "task", "model", "cell"),
    params:
        command=command("evaluate"),
        values=param_values("evaluate"),
    log:
        log("evaluate", "task", "model", "cell"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("evaluate", "task", "model", "cell"),
    shell:
        SHELL


rule evaluate_official:
    input:
        unpack(inputs("evaluate_official")),
    output:
        **outputs("evaluate_official", "task", "model"),
    params:
        command=command("evaluate_official"),
        values=param_values("evaluate_official"),
    log:
        log("evaluate_official", "task", "model"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("evaluate_official", "task", "model"),
    shell:
        SHELL


rule aggregate:
    input:
        unpack(inputs("aggregate")),
    output:
        **outputs("aggregate"),
    params:
        command=command("aggregate"),
        values=param_values("aggregate"),
    log:
        log("aggregate"),
    conda:
        ENV
    shell:
        SHELL


rule report:
    input:
        unpack(inputs("report")),
    output:
        **outputs("report"),
    params:
        command=command("report"),
        values=param_values("report"),
    log:
        log("report"),
    conda:
        ENV
    shell:
        SHELL

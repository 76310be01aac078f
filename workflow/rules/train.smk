# Training data (packed stores), restoration pretraining and the finetune grid.


rule prepare:
    input:
        unpack(inputs("prepare")),
    output:
        **outputs("prepare", "dataset"),
    params:
        command=command("prepare"),
        values=param_values("prepare"),
    log:
        log("prepare", "dataset"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("prepare", "dataset"),
    shell:
        SHELL


rule degrade:
    input:
        unpack(inputs("degrade")),
    output:
        **outputs("degrade"),
    params:
        command=command("degrade"),
        values=param_values("degrade"),
    log:
        log("degrade"),
    conda:
        ENV
    shell:
        SHELL


rule segpretrain:
    input:
        unpack(inputs("segpretrain")),
    output:
        **outputs("segpretrain", "model"),
    params:
        command=command("segpretrain"),
        values=param_values("segpretrain"),
    log:
        log("segpretrain", "model"),
    conda:
        ENV
    wildcard_constraints:
        **constraints("segpretrain", "model"),
    shell:
        SHELL


rule pretrain_ipt:
    input:
        unpack(inputs("pretrain_ipt")),
    output:
        **outputs("pretrain_ipt"),
    params:
        command=command("pretrain_ipt"),
        values=param_values("pretrain_ipt"),
    log:
        log("pretrain_ipt"),
    conda:
        ENV
    resources:
        gpu=GPUS,
    shell:
        SHELL


rule pretrain_dcpt:
    input:
        unpack(inputs("pretrain_dcpt")),
    output:
        **outputs("pretrain_dcpt", "task", "model"),
    params:
        command=command("pretrain_dcpt"),
        values=param_values("pretrain_dcpt"),
    log:
        log("pretrain_dcpt", "task", "model"),
    conda:
        ENV
    resources:
        gpu=GPUS,
    wildcard_constraints:
        **constraints("pretrain_dcpt", "task", "model"),
    shell:
        SHELL


# One grid cell. Checkpoints go to runs/finetune/.../checkpoints/, which is not declared: Snakemake would
# delete a declared output of an interrupted job, and the restarted job resumes from them instead.
rule finetune:
    input:
        unpack(inputs("finetune")),
    output:
        **outputs("finetune", "task", "model", "cell"),
    params:
        command=command("finetune"),
        values=param_values("finetune"),
    log:
        log("finetune", "task", "model", "cell"),
    conda:
        ENV
    resources:
        gpu=GPUS,
    wildcard_constraints:
        **constraints("finetune", "task", "model", "cell"),
    shell:
        SHELL

# Evaluation by the published protocols, and the table every run ends in.


rule evaluate_identity:
    input:
        validation=task_validation,
    output:
        metrics="metrics/finetune/{task}/identity/none.json",
        per_image="results/eval/{task}/identity/none/per_image.csv",
        provenance="results/eval/{task}/identity/none/provenance.json",
        crops=directory("results/eval/{task}/identity/none/crops"),
    params:
        profile=PROFILE,
        evaluate=P.get("evaluate", {}),
    log:
        "logs/evaluate/{task}/identity/none.log",
    conda:
        ENV
    wildcard_constraints:
        task="denoise|deblur",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} evaluate --task {wildcards.task} --model identity --strategy none > {log} 2>&1"


rule aggregate:
    input:
        floor=expand("metrics/finetune/{task}/identity/none.json", task=TASKS),
        grid=GRID,
        validation=expand("data/validation/{dataset}.json", dataset=DATASETS),
    output:
        table="results/table.csv",
        summary="metrics/summary.json",
    params:
        profile=PROFILE,
    log:
        "logs/aggregate.log",
    conda:
        ENV
    shell:
        "restorebench -S profile={params.profile} --threads {threads} aggregate > {log} 2>&1"


rule report:
    input:
        table="results/table.csv",
    output:
        html="results/report.html",
    params:
        profile=PROFILE,
    log:
        "logs/report.log",
    conda:
        ENV
    shell:
        "restorebench -S profile={params.profile} --threads {threads} report > {log} 2>&1"

# Training data (packed stores) and the finetune grid: task x model x strategy.


rule prepare:
    input:
        validation="data/validation/{dataset}.json",
        manifest="data/manifests/{dataset}.parquet",
    output:
        store=directory("data/store/{dataset}/train"),
    params:
        profile=PROFILE,
        prepare=P.get("prepare", {}),
    log:
        "logs/prepare/{dataset}.log",
    conda:
        ENV
    wildcard_constraints:
        dataset="sidd|gopro",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} prepare --dataset {wildcards.dataset} > {log} 2>&1"


rule degrade:
    input:
        validation="data/validation/imagenet.json",
        manifest="data/manifests/imagenet.parquet",
    output:
        store=directory("data/store/imagenet/train"),
    params:
        profile=PROFILE,
        degrade=P.get("degrade", {}),
    log:
        "logs/degrade/imagenet.log",
    conda:
        ENV
    shell:
        "restorebench -S profile={params.profile} --threads {threads} degrade > {log} 2>&1"


rule finetune:
    input:
        store=task_store,
    output:
        weights="runs/finetune/{task}/{model}/{strategy}/model.safetensors",
        summary="runs/finetune/{task}/{model}/{strategy}/train.json",
    params:
        profile=PROFILE,
        train=P.get("train", {}),
        variant=model_variant,
    log:
        "logs/finetune/{task}/{model}/{strategy}.log",
    conda:
        ENV
    resources:
        gpu=1,
    wildcard_constraints:
        task="denoise|deblur",
        model="(?!identity)\\w+",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} finetune --task {wildcards.task} --model {wildcards.model} "
        "--strategy {wildcards.strategy} > {log} 2>&1"


rule evaluate:
    input:
        weights="runs/finetune/{task}/{model}/{strategy}/model.safetensors",
        validation=task_validation,
    output:
        metrics="metrics/finetune/{task}/{model}/{strategy}.json",
        per_image="results/eval/{task}/{model}/{strategy}/per_image.csv",
    params:
        profile=PROFILE,
        evaluate=P.get("evaluate", {}),
    log:
        "logs/evaluate/{task}/{model}/{strategy}.log",
    conda:
        ENV
    wildcard_constraints:
        task="denoise|deblur",
        model="(?!identity)\\w+",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} evaluate --task {wildcards.task} --model {wildcards.model} "
        "--strategy {wildcards.strategy} > {log} 2>&1"

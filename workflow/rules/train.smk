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
        seed=config["seed"],
        degrade=P.get("degrade", {}),
    log:
        "logs/degrade/imagenet.log",
    conda:
        ENV
    shell:
        "restorebench -S profile={params.profile} --threads {threads} degrade > {log} 2>&1"


rule pretrain_ipt:
    input:
        store="data/store/imagenet/train",
    output:
        weights="runs/pretrain/ipt/ipt/model.safetensors",
        summary="runs/pretrain/ipt/ipt/pretrain.json",
        metrics="metrics/pretrain/ipt/ipt.json",
    params:
        profile=PROFILE,
        pretrain=P.get("pretrain", {}).get("ipt", {}),
        shared=pretrain_params("ipt"),
    log:
        "logs/pretrain/ipt/ipt.log",
    conda:
        ENV
    resources:
        gpu=GPUS,
    shell:
        "restorebench -S profile={params.profile} --threads {threads} pretrain --method ipt > {log} 2>&1"


rule pretrain_dcpt:
    input:
        store="data/store/imagenet/train",
    output:
        weights="runs/pretrain/dcpt/{task}/{model}/model.safetensors",
        summary="runs/pretrain/dcpt/{task}/{model}/pretrain.json",
        metrics="metrics/pretrain/dcpt/{task}/{model}.json",
    params:
        profile=PROFILE,
        pretrain=P.get("pretrain", {}).get("dcpt", {}),
        shared=pretrain_params("dcpt"),
        variant=model_variant,
        checkpoint=model_checkpoint,
    log:
        "logs/pretrain/dcpt/{task}/{model}.log",
    conda:
        ENV
    resources:
        gpu=GPUS,
    wildcard_constraints:
        task="denoise|deblur",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} pretrain --method dcpt --task {wildcards.task} "
        "--model {wildcards.model} > {log} 2>&1"


# One grid cell. Checkpoints go to runs/finetune/.../checkpoints/, which is not declared: Snakemake would
# delete a declared output of an interrupted job, and the restarted job resumes from them instead.
rule finetune:
    input:
        store=task_store,
        pretrained=pretrained_weights,
    output:
        weights="runs/finetune/{task}/{model}/{cell}/model.safetensors",
        summary="runs/finetune/{task}/{model}/{cell}/train.json",
        config="runs/finetune/{task}/{model}/{cell}/config.json",
    params:
        profile=PROFILE,
        seed=config["seed"],
        train=P.get("train", {}),
        variant=model_variant,
        checkpoint=model_checkpoint,
        strategy=cell_strategy,
        pretrain=cell_pretrain,
    log:
        "logs/finetune/{task}/{model}/{cell}.log",
    conda:
        ENV
    resources:
        gpu=GPUS,
    wildcard_constraints:
        task="denoise|deblur",
        model="(?!identity)\\w+",
        cell=CELL_PATTERN,
    shell:
        "restorebench -S profile={params.profile} --threads {threads} finetune --task {wildcards.task} --model {wildcards.model} "
        "--strategy {params.strategy} --pretrain {params.pretrain} > {log} 2>&1"


rule evaluate:
    input:
        weights="runs/finetune/{task}/{model}/{cell}/model.safetensors",
        validation=task_validation,
    output:
        metrics="metrics/finetune/{task}/{model}/{cell}.json",
        per_image="results/eval/{task}/{model}/{cell}/per_image.csv",
        provenance="results/eval/{task}/{model}/{cell}/provenance.json",
        crops=directory("results/eval/{task}/{model}/{cell}/crops"),
        card="runs/finetune/{task}/{model}/{cell}/README.md",
    params:
        profile=PROFILE,
        evaluate=P.get("evaluate", {}),
        strategy=cell_strategy,
        pretrain=cell_pretrain,
    log:
        "logs/evaluate/{task}/{model}/{cell}.log",
    conda:
        ENV
    wildcard_constraints:
        task="denoise|deblur",
        model="(?!identity)\\w+",
        cell=CELL_PATTERN,
    shell:
        "restorebench -S profile={params.profile} --threads {threads} evaluate --task {wildcards.task} --model {wildcards.model} "
        "--strategy {params.strategy} --pretrain {params.pretrain} > {log} 2>&1"

# Data stages: fetch (sample, official archives, or a path) and validate, one job per dataset.


rule fetch:
    output:
        raw=directory("data/raw/{dataset}"),
        manifest="data/manifests/{dataset}.parquet",
    params:
        profile=PROFILE,
        dataset=dataset_params,
        sample=P["data"].get("sample", {}),
    log:
        "logs/fetch/{dataset}.log",
    conda:
        ENV
    wildcard_constraints:
        dataset="sidd|gopro|imagenet",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} fetch --dataset {wildcards.dataset} > {log} 2>&1"


rule validate:
    input:
        raw="data/raw/{dataset}",
        manifest="data/manifests/{dataset}.parquet",
    output:
        report="data/validation/{dataset}.json",
    params:
        profile=PROFILE,
        dataset=dataset_params,
    log:
        "logs/validate/{dataset}.log",
    conda:
        ENV
    wildcard_constraints:
        dataset="sidd|gopro|imagenet",
    shell:
        "restorebench -S profile={params.profile} --threads {threads} validate --dataset {wildcards.dataset} > {log} 2>&1"

# Results: the table every run ends in. Its inputs grow as the pipeline's stages land.


rule aggregate:
    input:
        validation=expand("data/validation/{dataset}.json", dataset=DATASETS),
    output:
        table="results/table.csv",
    params:
        profile=PROFILE,
    log:
        "logs/aggregate.log",
    conda:
        ENV
    shell:
        "restorebench -S profile={params.profile} aggregate > {log} 2>&1"

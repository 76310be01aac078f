# Shared helpers for the rules: the active profile's sections of params.yaml.


def dataset_params(wildcards):
    return P["data"][wildcards.dataset]

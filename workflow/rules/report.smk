# The study report: one HTML page over every stage's results.
import json

LAYERS = [f"{m}/{layer}" for m, layer in layer_targets()]
REPORT_ITEMS = [
    f"layers={hydra_value(LAYERS)}",
    f"probe={DATASET}",
    f"cue_conflict={hydra_value(CC_MODELS)}",
    f"stimuli={hydra_value(STIMSET)}",
    f"references={hydra_value(reference_dirs())}",
    f"attribution={hydra_value(ATTR_MODELS)}",
    f"study={hydra_value(json.dumps(config))}",
]


rule report:
    input:
        dissect=expand(
            "results/dissect/{dataset}/{entry}", dataset=DATASET, entry=LAYERS
        ),
        extract=expand(
            "results/extract/{dataset}/{entry}", dataset=DATASET, entry=LAYERS
        ),
        train=[f"results/train/{m}" for m, spec in MODELS.items() if spec.get("train")],
        cueconflict=expand(
            "results/cueconflict/{stimset}/{model}", stimset=STIMSET, model=CC_MODELS
        ),
        stimuli=[f"results/stimuli/{STIMSET}"] if reference_dirs() else [],
        attribution=expand(
            "results/attribution/{dataset}/{model}", dataset=DATASET, model=ATTR_MODELS
        ),
        featurevis=(
            expand(
                "results/featurevis/{dataset}/{entry}", dataset=DATASET, entry=LAYERS
            )
            if FEATUREVIS
            else []
        ),
        packed=PACKED,
        code=code("report"),
    output:
        report(
            directory("results/report"),
            patterns=["figures/{name}.png"],
            category="cnnscope study report",
            caption="../report/figure.rst",
        ),
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    conda:
        ENV
    params:
        **step_params("report", [*REPORT_ITEMS, *study_overrides("report")]),
    shell:
        "python -m cnnscope.steps.report {params.args} packed={input.packed}"
        " out={output} > {log} 2>&1"

# EffOCR workflow: raw COCO lines -> datasets -> renders/crops -> recognizer (two passes)
# -> reference index -> localizer -> ONNX bundle -> evaluation report.
# Run `snakemake --cores N`; see README.md and config/README.md.

from snakemake.utils import min_version

min_version("9.27")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/import.smk"
include: "rules/synth.smk"
include: "rules/align.smk"
include: "rules/data.smk"
include: "rules/recognizer.smk"
include: "rules/localizer.smk"
include: "rules/lm.smk"
include: "rules/pages.smk"
include: "rules/export.smk"
include: "rules/evaluate.smk"
include: "rules/ocr.smk"


rule all:
    default_target: True
    input:
        get_final_output(),

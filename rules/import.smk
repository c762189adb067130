# The import stage (see docs/architecture.md): when `dataset.format` names ground truth (PAGE-XML,
# ALTO, line folders), `import_dataset` converts it to the raw COCO format first, and every later
# rule reads the imported lines.json and images/ as if they were the user's COCO dataset. With
# `format: coco` the rule exists but nothing asks for its outputs.


include: "helpers/import.smk"


rule import_dataset:
    input:
        files=import_input_files(),
    output:
        coco_json=IMPORTED["coco"],
        images=directory(IMPORTED["images"]),
        report=IMPORTED["report"],
    log:
        log_path("import_dataset"),
    benchmark:
        benchmark_path("import_dataset")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **SECTIONS.params(dataset=("format", "path", "import")),
        code=code_version("effocr.importer"),
        out_dir=lambda wildcards, output: os.path.dirname(output.coco_json),
    script:
        "../workflow_scripts/import_dataset.py"

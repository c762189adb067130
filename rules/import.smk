# The import stage (see docs/architecture.md): when `dataset.format` names ground truth (PAGE-XML,
# ALTO, line folders), `import_dataset` converts it to the raw COCO format first, and every later
# rule reads the imported lines.json and images/ as if they were the user's COCO dataset. With
# `format: coco` the rule exists but nothing asks for its outputs.

IMPORTED = f"{RES}/data/imported"
IMPORT_PATHS = (
    [config["dataset"]["path"]]
    if isinstance(config["dataset"]["path"], str)
    else list(config["dataset"]["path"] or [])
)

if config["dataset"]["format"] != "coco":
    if not IMPORT_PATHS:
        raise WorkflowError(
            f"dataset.format is {config['dataset']['format']}: dataset.path must name the "
            "files or folders to import"
        )
    # The rules below read the dataset from these keys; here they are the import's outputs.
    config["dataset"]["coco_json"] = f"{IMPORTED}/lines.json"
    config["dataset"]["image_dir"] = f"{IMPORTED}/images"


def import_input_files():
    """Every file of the inputs (a mets.xml: its workspace): editing one reruns the import."""
    files = []
    for given in IMPORT_PATHS:
        p = Path(given)
        base = p.parent if p.name == "mets.xml" else p
        if base.is_dir():
            files += sorted(str(f) for f in base.rglob("*") if f.is_file())
        else:
            files.append(given)
    return files


rule import_dataset:
    input:
        files=import_input_files(),
    output:
        coco_json=f"{IMPORTED}/lines.json",
        images=directory(f"{IMPORTED}/images"),
        report=f"{IMPORTED}/import_report.json",
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
        code=code_version("effocr.importer"),
        format=config["dataset"]["format"],
        paths=IMPORT_PATHS,
        out_dir=IMPORTED,
        options=config["dataset"]["import"],
    script:
        "../workflow_scripts/import_dataset.py"

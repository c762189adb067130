# Helpers of rules/import.smk (kept apart from the rules: Snakemake's linter wants
# functions and rules in separate files). Included by rules/import.smk itself, so the stage
# file works whatever the order of the includes in the Snakefile.

IMPORTED = PATHS["imported"]
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
    # rules/common.smk has pointed dataset.coco_json and image_dir at the import's outputs.


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

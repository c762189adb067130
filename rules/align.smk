# Rules of the align stage (effocr.align): character boxes for the dataset's lines that have
# only a transcription; with `align.bundle` set, the data stage reads the aligned lines
# (TRAINING_COCO in common.smk). Round 1 aligns with `align.bundle`; each later round with the
# bundle trained on the round before it, whose whole workflow is this one again, run as a
# module under PATHS["rounds"] (its rules prefixed `previous_`, `previous_previous_`, ...).

from effocr.bundle import STANDARD_FILES


include: "helpers/synth.smk"  # SYNTH_JSON, SYNTH_IMAGES: the synthetic lines (synthetic base)


ROUNDS = config["align"]["rounds"]
# `align.bundle: synthetic`: round 1 aligns with a bundle this workflow trains on its own
# synthetic lines (module `synthetic_base`, rules/synth.smk).
SYNTHETIC_BASE = config["align"]["bundle"] == "synthetic" and ROUNDS == 1
ALIGN_BUNDLE = (
    config["align"]["bundle"]
    if ROUNDS == 1
    else f"{PATHS['rounds']}/{ROUNDS - 1}/bundle"
)
if SYNTHETIC_BASE:
    ALIGN_BUNDLE = f"{PATHS['synthetic_base']}/bundle"
if not config["align"]["bundle"]:
    ALIGN_BUNDLE_INPUT = []
elif ROUNDS == 1 and not SYNTHETIC_BASE:
    # The given bundle's files: a changed model or index reruns the alignment.
    ALIGN_BUNDLE_INPUT = multiext(f"{ALIGN_BUNDLE}/", *STANDARD_FILES)
else:
    # The previous round's bundle directory, or the synthetic base's (an export_bundle output).
    ALIGN_BUNDLE_INPUT = [ALIGN_BUNDLE]


# A given bundle (round 1) first gets the dataset's characters it lacks; the bundles this
# workflow trains (later rounds, the synthetic base) index this run's charset already.
if (
    config["align"]["extend_index"]
    and ROUNDS == 1
    and config["align"]["bundle"]
    and not SYNTHETIC_BASE
):

    rule extend_align_bundle:
        input:
            coco_json=config["dataset"]["coco_json"],
            bundle=ALIGN_BUNDLE_INPUT,
        output:
            bundle=directory(PATHS["align_bundle"]),
        log:
            log_path("extend_align_bundle"),
        benchmark:
            benchmark_path("extend_align_bundle")
        conda:
            ENVS["report"]
        container:
            CONTAINER
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            **SECTIONS.params(
                "run",
                fonts=("dirs", "include", "exclude"),
                render=("size", "padding", "mode"),
            ),
            code=code_version("effocr.recognizer.extend"),
            bundle=ALIGN_BUNDLE,
            font_files=font_files_hash(),
        script:
            "../workflow_scripts/extend_align_bundle.py"

    ALIGN_BUNDLE = PATHS["align_bundle"]
    ALIGN_BUNDLE_INPUT = [ALIGN_BUNDLE]


rule align_lines:
    input:
        coco_json=config["dataset"]["coco_json"],
        bundle=ALIGN_BUNDLE_INPUT,
    output:
        coco_json=PATHS["aligned"]["coco"],
        report_csv=PATHS["aligned"]["csv"],
        report_json=PATHS["aligned"]["json"],
    log:
        log_path("align_lines"),
    benchmark:
        benchmark_path("align_lines")
    conda:
        ENVS["report"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        # The alignment settings alone: the bundle is the input above, and the number of
        # rounds does not change one round's work.
        **SECTIONS.params(
            align=[
                k
                for k in config["align"]
                if k not in ("bundle", "rounds", "extend_index")
            ],
            dataset=("image_dir",),
        ),
        code=code_version("effocr.align"),
        bundle=ALIGN_BUNDLE,
    script:
        "../workflow_scripts/align_lines.py"


if config["align"]["bundle"] and ROUNDS > 1:

    module previous_round:
        snakefile:
            "../Snakefile"
        config:
            {
                **config,
                "results_dir": f"{PATHS['rounds']}/{ROUNDS - 1}",
                "align": {**config["align"], "rounds": ROUNDS - 1},
            }

    # Its `all` (evaluation and report) is not needed to re-align; synth_lines is this run's.
    use rule * from previous_round exclude all, synth_lines as previous_*

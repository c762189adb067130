# Rule of the language model stage (see docs/architecture.md): the character n-gram model
# (effocr.lm) that re-ranks the k nearest glyphs, trained on the text the workflow trains on.

from effocr.synth.text import shipped_text_path


def lm_text_files():
    """Running text trained on: `lm.text`, and the synthetic text source when the dataset is
    the synthetic one (its lines are drawn from it; a user's dataset has only its lines)."""
    files = list(config["lm"]["text"])
    if os.path.normpath(config["dataset"]["coco_json"]) == os.path.normpath(SYNTH_JSON):
        files.append(
            config["synth"]["text_source"] or str(shipped_text_path(config["language"]))
        )
    return files


rule train_lm:
    """Count the character n-grams of the training split's line texts (and the running text
    of lm_text_files) into lm.json."""
    input:
        train=PATHS["split"]["train"],
        text=lm_text_files(),
    output:
        PATHS["lm"],
    log:
        log_path("train_lm"),
    benchmark:
        benchmark_path("train_lm")
    conda:
        ENVS["data"]
    container:
        CONTAINER
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        code=code_version("effocr.lm"),
        order=config["lm"]["order"],
    script:
        "../workflow_scripts/train_lm.py"

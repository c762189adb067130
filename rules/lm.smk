# Rule of the language model stage (see docs/architecture.md): the character n-gram model
# (effocr.lm) that re-ranks the k nearest glyphs, trained on the text the workflow trains on.


include: "helpers/lm.smk"


rule train_lm:
    """Count the character n-grams of the training split's line texts (and the running text
    of lm_text_files) into the language model file, with the lexicon: their words and those
    of the word lists lm.lexicon."""
    input:
        train=PATHS["split"]["train"],
        text=lm_text_files(),
        lexicon=config["lm"]["lexicon"],
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
        # `lm.text` and `lm.lexicon` are inputs; the other keys go into the bundle (rule
        # export_bundle).
        **SECTIONS.params(lm=("order",)),
        code=code_version("effocr.lm"),
    script:
        "../workflow_scripts/train_lm.py"

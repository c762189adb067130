# Rules of the recognizer stage (see docs/architecture.md): first pass, hard-negative mining,
# second pass with hard negatives, reference index. The training rules resume from
# checkpoint.pt (deliberately not an output: Snakemake would delete it before a rerun).


rule train_recognizer:
    """First pass: SupCon training on renders and real training crops."""
    input:
        manifest=PATHS["recognizer_dataset"],
        init_from=init_from_input("recognizer"),
    output:
        **recognizer_outputs(PATHS["recognizer_pass1"]),
    log:
        log_path("train_recognizer"),
    benchmark:
        benchmark_path("train_recognizer")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        code=code_version("effocr.recognizer.train"),
        init_from=init_from_checksum("recognizer"),
        recognizer=config["recognizer"],
        reference_fonts=config["fonts"]["reference"],
        seed=config["seed"],
        language=config["language"],
    script:
        "../workflow_scripts/train_recognizer.py"


rule mine_hard_negatives:
    """Query real training crops against the first-pass index; write hns.txt."""
    input:
        model=f"{PATHS['recognizer_pass1']}/model.pt",
        manifest=PATHS["recognizer_dataset"],
    output:
        hns=PATHS["hns"],
    log:
        log_path("mine_hard_negatives"),
    benchmark:
        benchmark_path("mine_hard_negatives")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        code=code_version("effocr.recognizer.hardneg"),
        hardneg_k=config["recognizer"]["hardneg_k"],
        reference_fonts=config["fonts"]["reference"],
        language=config["language"],
    script:
        "../workflow_scripts/mine_hard_negatives.py"


rule train_recognizer_hn:
    """Second pass: hard-negative sets inserted into the batches (fresh model by default)."""
    input:
        manifest=PATHS["recognizer_dataset"],
        hns=PATHS["hns"],
        # Only read with recognizer.hn_fine_tune; always listed so the DAG is the same.
        pass1=f"{PATHS['recognizer_pass1']}/model.pt",
        # Without hn_fine_tune, pass 2 starts from the base too.
        init_from=init_from_input("recognizer"),
    output:
        **recognizer_outputs(PATHS["recognizer_pass2"]),
    log:
        log_path("train_recognizer_hn"),
    benchmark:
        benchmark_path("train_recognizer_hn")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        code=code_version("effocr.recognizer.train"),
        init_from=init_from_checksum("recognizer"),
        recognizer=config["recognizer"],
        reference_fonts=config["fonts"]["reference"],
        seed=config["seed"],
        language=config["language"],
    script:
        "../workflow_scripts/train_recognizer.py"


rule build_reference_index:
    """Embed the reference font renders with the second-pass model into a FAISS index."""
    input:
        model=f"{PATHS['recognizer_pass2']}/model.pt",
        renders=PATHS["renders_manifest"],
    output:
        index=f"{PATHS['reference_index']}/ref.index",
        labels=f"{PATHS['reference_index']}/ref_labels.txt",
        meta=f"{PATHS['reference_index']}/index.json",
    log:
        log_path("build_reference_index"),
    benchmark:
        benchmark_path("build_reference_index")
    conda:
        ENVS["train"]
    container:
        CONTAINER_GPU
    threads: RECOGNIZER_THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        code=code_version("effocr.recognizer.index"),
        reference_fonts=config["fonts"]["reference"],
        language=config["language"],
        device=config["recognizer"]["device"],
    script:
        "../workflow_scripts/build_reference_index.py"
